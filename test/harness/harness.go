// Package harness runs the controller in-process against a local control
// plane, for the controller's integration tests and the benchmarks.
package harness

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"

	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"promised.dev/promised/controller"
	"promised.dev/promised/pipelines/stage"
	"promised.dev/promised/test/controlplane"
)

// Platform is a running controller and a client of its control plane.
type Platform struct {
	Client client.Client
	cancel context.CancelFunc
	done   chan struct{}
	state  string
}

// Start runs the controller with reg's stages against cp. Logs go to
// stderr when PROMISED_TEST_LOG is set and nowhere otherwise.
func Start(cp *controlplane.ControlPlane, reg *stage.Registry) (*Platform, error) {
	return StartOn(cp.Config, reg)
}

// StartOn runs the controller against the apiserver cfg reaches (through
// a proxy that a test cuts, say); the test client uses cfg too.
func StartOn(apiserver *rest.Config, reg *stage.Registry) (*Platform, error) {
	if os.Getenv("PROMISED_TEST_LOG") != "" {
		ctrl.SetLogger(zap.New(zap.UseDevMode(true)))
	} else {
		ctrl.SetLogger(zap.New(zap.WriteTo(discard{})))
	}
	stateDir, err := os.MkdirTemp("", "promised-harness-")
	if err != nil {
		return nil, fmt.Errorf("creating the state folder: %w", err)
	}
	// client-go's default of 5 queries a second would measure the client's
	// throttle, not the controller; these match `promised controller`'s flags.
	cfg := rest.CopyConfig(apiserver)
	cfg.QPS, cfg.Burst = 200, 400
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("generating the platform key: %w", err)
	}
	mgr, err := controller.NewManager(cfg, controller.Options{Registry: reg, StateDir: stateDir, MetricsAddr: "0", PlatformKey: key, PlatformNamespace: "default"})
	if err != nil {
		return nil, err
	}
	scheme, err := controller.Scheme()
	if err != nil {
		return nil, err
	}
	clientCfg := rest.CopyConfig(apiserver)
	clientCfg.QPS, clientCfg.Burst = 1000, 2000
	c, err := client.New(clientCfg, client.Options{Scheme: scheme})
	if err != nil {
		return nil, fmt.Errorf("creating the test client: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &Platform{Client: c, cancel: cancel, done: make(chan struct{}), state: stateDir}
	go func() {
		defer close(p.done)
		if err := mgr.Start(ctx); err != nil {
			fmt.Fprintln(os.Stderr, "controller stopped:", err)
		}
	}()
	return p, nil
}

// Stop stops the controller and waits for it; call it before stopping the
// control plane, or the controller's watches hold the apiserver's shutdown.
func (p *Platform) Stop() {
	p.cancel()
	<-p.done
	_ = os.RemoveAll(p.state)
}

// TestMain runs m against a fresh control plane (with the promised CRDs
// from crdDir) and a controller holding reg's stages, and returns the exit
// code. setup receives the running platform.
func TestMain(m controlplane.TestRunner, crdDir string, reg *stage.Registry, setup func(*Platform)) int {
	var p *Platform
	run := runner(func() int {
		defer p.Stop()
		return m.Run()
	})
	return controlplane.RunTests(run, controlplane.Options{CRDDirectoryPaths: []string{crdDir}, ErrorIfCRDPathMissing: true}, func(cp *controlplane.ControlPlane) error {
		var err error
		if p, err = Start(cp, reg); err != nil {
			return err
		}
		setup(p)
		return nil
	})
}

type runner func() int

func (r runner) Run() int { return r() }

type discard struct{}

func (discard) Write(b []byte) (int, error) { return len(b), nil }
