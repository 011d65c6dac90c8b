// Command etcd is etcd v3.7.3 built from go.etcd.io/etcd/server/v3, for
// envtest. It exists because only Go modules, not release binaries, can be
// fetched where promised is developed and tested; it adds nothing to etcd.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	// Main parses flags, runs the server and exits the process itself.
	etcdmain.Main(os.Args)
}
