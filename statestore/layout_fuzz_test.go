package statestore_test

import (
	"path"
	"strings"
	"testing"

	"promised.dev/promised/statestore"
)

// FuzzResourceDir: whatever names a request, a namespace or a promise
// carry, the folder built from them stays under its destination's
// resources/ folder, one level per name, or the builder refuses.
func FuzzResourceDir(f *testing.F) {
	f.Add("store", "dev", "default", "team", "payments")
	f.Add("", "dev", "..", "team", "x")
	f.Add("a/b", "dev/../../etc", "ns", "p", "r")
	f.Add("", "dev", "ns", "p.q", "r.s")
	f.Fuzz(func(t *testing.T, store, dest, ns, promise, name string) {
		dir, err := statestore.ResourceDir(store, dest, ns, promise, name)
		if err != nil {
			return
		}
		prefix := path.Join(store, dest, "resources") + "/"
		if !strings.HasPrefix(dir, prefix) {
			t.Fatalf("%q escapes %q", dir, prefix)
		}
		rest := strings.Split(strings.TrimPrefix(dir, prefix), "/")
		if len(rest) != 3 || rest[0] != ns || rest[1] != promise || rest[2] != name {
			t.Fatalf("%q is not resources/%s/%s/%s", dir, ns, promise, name)
		}
		if path.Clean(dir) != dir {
			t.Fatalf("%q is not clean", dir)
		}
		for _, el := range strings.Split(dir, "/") {
			if el == "" || el == "." || el == ".." {
				t.Fatalf("%q has element %q", dir, el)
			}
		}
	})
}
