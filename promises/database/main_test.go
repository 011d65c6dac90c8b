package database

import (
	"fmt"
	"os"
	"sync"
	"testing"

	"promised.dev/promised/promises/database/pgtest"
	"promised.dev/promised/test/controlplane"
)

// One PostgreSQL server serves the package's tests, started here because
// an initdb costs a second; tests keep apart by using database names of
// their own. It logs every statement, so tests can check that no password
// ever reaches it in plaintext. A test that needs a server in a special
// state (an event trigger, say) starts one of its own with pgtest.New.
var testServer *pgtest.Server

// The local control plane is started on first use only (by the tests that
// check rendered objects against CloudNativePG's CRDs): it costs seconds
// that the other tests should not wait for.
var (
	cpOnce sync.Once
	cp     *controlplane.ControlPlane
	cpErr  error
)

// shutdown runs, last first, before the control plane stops: a controller
// started on it must stop first, or its watches hold the apiserver's
// shutdown.
var shutdown []func()

func controlPlane(t testing.TB) *controlplane.ControlPlane {
	t.Helper()
	cpOnce.Do(func() {
		cp, cpErr = controlplane.Start(controlplane.Options{CRDDirectoryPaths: []string{"../../config/crd"}, ErrorIfCRDPathMissing: true})
	})
	if cpErr != nil {
		t.Fatalf("starting the local control plane: %v", cpErr)
	}
	return cp
}

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	dir, err := os.MkdirTemp("", "database-test-pg-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "FAIL:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	testServer, err = pgtest.StartWith(dir, pgtest.Options{Settings: map[string]string{"log_statement": "all"}})
	if err != nil {
		fmt.Fprintln(os.Stderr, "FAIL: the database promise's tests need a real PostgreSQL server:", err)
		return 1
	}
	code := m.Run()
	for i := len(shutdown) - 1; i >= 0; i-- {
		shutdown[i]()
	}
	if err := testServer.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, "FAIL:", err)
		code = 1
	}
	if cp != nil {
		if err := cp.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "FAIL:", err)
			code = 1
		}
	}
	return code
}
