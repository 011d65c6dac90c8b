// Package e2e runs the NatsUser promise through the real controller on a
// real kube-apiserver (test/harness), with a real nats-server, a real Git
// server and the sealed-secrets controller's own unseal code: the path a
// request takes on the platform.
package e2e

import (
	"context"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"

	"promised.dev/promised/pipelines/seal"
	"promised.dev/promised/pipelines/stage"
	"promised.dev/promised/promises/natsuser"
	"promised.dev/promised/test/harness"
)

var k8s client.Client

// clock is the stages' clock: the wall clock moved by an offset, so a test
// reaches a rotation window while the real nats-server keeps judging the
// JWTs by the real time.
var clock struct {
	mu     sync.Mutex
	offset time.Duration
}

func now() time.Time {
	clock.mu.Lock()
	defer clock.mu.Unlock()
	return time.Now().Add(clock.offset)
}

func advance(d time.Duration) {
	clock.mu.Lock()
	defer clock.mu.Unlock()
	clock.offset += d
}

// configureRuns counts the credentials stage's runs per request name, to
// know that a forced reconcile has run the pipeline.
var configureRuns sync.Map // name → *atomic.Int64

func runs(name string) *atomic.Int64 {
	n, _ := configureRuns.LoadOrStore(name, new(atomic.Int64))
	return n.(*atomic.Int64)
}

func TestMain(m *testing.M) {
	reg := stage.NewRegistry()
	for name, f := range natsuser.StagesAt(now) {
		if name == natsuser.CredentialsStageName {
			f = counted(f)
		}
		if err := reg.Register(name, f); err != nil {
			panic(err)
		}
	}
	if err := reg.Register(seal.StageName, seal.Stage); err != nil {
		panic(err)
	}
	os.Exit(harness.TestMain(m, "../../../config/crd", reg, func(p *harness.Platform) { k8s = p.Client }))
}

func counted(f stage.Func) stage.Func {
	return func(ctx context.Context, c *stage.Context) error {
		defer runs(c.Env.ObjectName).Add(1)
		return f(ctx, c)
	}
}
