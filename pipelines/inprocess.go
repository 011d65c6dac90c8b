package pipelines

import (
	"context"
	"fmt"

	"promised.dev/promised/api/v1alpha1"
	"promised.dev/promised/pipelines/contract"
	"promised.dev/promised/pipelines/ledger"
	"promised.dev/promised/pipelines/stage"
)

// InProcess runs built-in Go stages as function calls: no process, no
// image, microseconds of overhead instead of a Job's seconds.
type InProcess struct {
	Registry *stage.Registry
	// Ledger is the credential ledger stages reach through
	// stage.Context.Ledger; nil gives them stage.ErrNoLedger.
	Ledger ledger.Ledger
	// Objects is the read access to platform objects stages reach through
	// stage.Context.Objects; nil gives them stage.ErrNoObjects.
	Objects stage.Objects
	// Secrets is the read access to platform configuration Secrets;
	// nil gives stages stage.ErrNoSecrets.
	Secrets stage.Secrets
}

// RunContainer implements ContainerRunner.
func (r InProcess) RunContainer(ctx context.Context, c v1alpha1.Container, ws contract.Workspace, env map[string]string) error {
	f, ok := r.Registry.Lookup(c.Image)
	if !ok {
		return fmt.Errorf("image %s is not a stage built into this binary (built-in stages: %v at %s)", c.Image, r.Registry.Names(), stage.Version)
	}
	sc, err := stage.NewContext(ws, func(k string) string { return env[k] }, stage.WithLedger(r.Ledger), stage.WithObjects(r.Objects), stage.WithSecrets(r.Secrets))
	if err != nil {
		return err
	}
	// The stage runs on its own goroutine so that a stage ignoring its
	// context still lets the pipeline's timeout fire; the goroutine is left
	// to finish on its own, its workspace is discarded.
	done := make(chan error, 1)
	go func() { done <- stage.Run(ctx, f, sc) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}
