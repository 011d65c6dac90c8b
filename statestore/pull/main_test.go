package pull_test

import (
	"os"
	"testing"

	"k8s.io/client-go/rest"

	"promised.dev/promised/test/controlplane"
)

// One control plane (a real kube-apiserver and etcd) serves every test of
// the package; tests keep apart by using namespaces and destinations of
// their own. When the binaries are missing the suite fails, saying to run
// `make controlplane`.
var cfg *rest.Config

func TestMain(m *testing.M) {
	os.Exit(controlplane.RunTests(m, controlplane.Options{}, func(cp *controlplane.ControlPlane) error {
		cfg = cp.Config
		return nil
	}))
}
