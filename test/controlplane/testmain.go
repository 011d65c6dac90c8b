package controlplane

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

// TestRunner runs a package's tests and returns the exit code. *testing.M
// satisfies it; taking an interface keeps the testing package (and its
// flags) out of the promised binary, which links this package for
// `promised up`.
type TestRunner interface {
	Run() int
}

// RunTests is a test package's TestMain body: it starts one control plane
// for the whole package (starting one per test would cost seconds each),
// calls setup with it (to build clients, start managers), runs the tests and
// stops the control plane. It returns the exit code for os.Exit:
//
//	var cp *controlplane.ControlPlane
//
//	func TestMain(m *testing.M) {
//		os.Exit(controlplane.RunTests(m, controlplane.Options{
//			CRDDirectoryPaths:     []string{"../config/crd"},
//			ErrorIfCRDPathMissing: true,
//		}, func(c *controlplane.ControlPlane) error { cp = c; return nil }))
//	}
//
// When the binaries are missing, or the control plane or setup fails, it
// prints why and returns 1 without running any test: the suite fails rather
// than skips, so CI cannot go green on a machine that never ran it.
//
// An interrupt (Ctrl-C) or SIGTERM stops the control plane before the
// process exits, because kube-apiserver and etcd would otherwise keep
// running, holding ports and CPU, after the test binary is gone.
func RunTests(m TestRunner, opts Options, setup func(*ControlPlane) error) int {
	cp, err := Start(opts)
	if err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: cannot start the local control plane (kube-apiserver %s + etcd): %v\n", Version, err)
		return 1
	}

	signals := make(chan os.Signal, 1)
	signal.Notify(signals, os.Interrupt, syscall.SIGTERM)
	done := make(chan struct{})
	defer close(done)
	defer signal.Stop(signals)
	go func() {
		select {
		case sig := <-signals:
			fmt.Fprintf(os.Stderr, "%v: stopping the local control plane\n", sig)
			if err := cp.Stop(); err != nil {
				fmt.Fprintln(os.Stderr, err)
			}
			os.Exit(1)
		case <-done:
		}
	}()

	code := 1
	if setup == nil {
		code = m.Run()
	} else if err := setup(cp); err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: setting up the tests on the local control plane: %v\n", err)
	} else {
		code = m.Run()
	}

	if err := cp.Stop(); err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: %v\n", err)
		code = 1
	}
	return code
}
