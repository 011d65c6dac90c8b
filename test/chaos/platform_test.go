package chaos

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"promised.dev/promised/pipelines/stage"
	"promised.dev/promised/promises/database"
	"promised.dev/promised/promises/database/pgtest"
	"promised.dev/promised/statestore/gitserver"
	"promised.dev/promised/test/controlplane"
	"promised.dev/promised/test/liveplatform"
)

// promiseDirs are installed in order, relative to the repository root.
var promiseDirs = []string{"examples/team", "promises/database", "promises/apiaggregator/aggregator", "promises/apiaggregator/target"}

// platform is everything one crash test started: the live platform, a
// shared PostgreSQL server, and the promises.
type platform struct {
	*liveplatform.Platform
	t        testing.TB
	pg       *pgtest.Server
	restarts int
}

// requireBinaries fails (never skips) when something the test runs is
// missing, saying how to get it.
func requireBinaries(t testing.TB) {
	var missing []string
	if _, err := controlplane.BinDir(); err != nil {
		missing = append(missing, "kube-apiserver/etcd: "+err.Error())
	}
	if _, err := pgtest.BinDir(); err != nil {
		missing = append(missing, "PostgreSQL (apt-get install postgresql): "+err.Error())
	}
	if _, err := gitserver.GitPath(); err != nil {
		missing = append(missing, "git (apt-get install git): "+err.Error())
	}
	if _, err := exec.LookPath("go"); err != nil {
		missing = append(missing, "go (to build ./cmd/promised): "+err.Error())
	}
	if len(missing) > 0 {
		t.Fatalf("the crash test needs binaries that are missing:\n  %s", strings.Join(missing, "\n  "))
	}
}

// startPlatform starts the live platform (the controller without a Job
// runner) and PostgreSQL; registers the shared server's Secret; installs
// the promises. Everything stops at test end.
func startPlatform(ctx context.Context, t testing.TB) *platform {
	requireBinaries(t)
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	p := &platform{t: t}
	// PostgreSQL starts while the control plane does; its folder is made
	// here because the platform's work folder does not exist yet.
	pgDir, err := os.MkdirTemp("", "promised-chaos-pg-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(pgDir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(pgDir) })
	lp, err := liveplatform.Start(ctx, liveplatform.Options{
		Root: root, WorkPrefix: "promised-chaos-", ControllerArgs: []string{"--no-job-runner"},
		Alongside: func() error {
			pg, err := pgtest.Start(filepath.Join(pgDir, "postgres"))
			if err != nil {
				return fmt.Errorf("starting PostgreSQL: %w", err)
			}
			p.pg = pg
			t.Cleanup(func() { _ = pg.Stop() })
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	p.Platform = lp
	t.Cleanup(func() {
		if t.Failed() || os.Getenv("CHAOS_KEEP") != "" {
			t.Logf("kept %s (controller logs: %s)", lp.Work, strings.Join(lp.Logs, ", "))
			lp.CloseKeeping()
			return
		}
		lp.Close()
	})
	for _, step := range []func(context.Context) error{p.registerPostgres, p.installPromises} {
		if err := step(ctx); err != nil {
			t.Fatal(err)
		}
	}
	return p
}

// registerPostgres gives the Database promise's shared plan its server.
func (p *platform) registerPostgres(ctx context.Context) error {
	srv := database.Server{Host: p.pg.Host, Port: p.pg.Port, Username: p.pg.User, Password: p.pg.Password, Database: "postgres", SSLMode: "disable"}
	sec := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "postgres-shared", Namespace: liveplatform.PlatformNamespace, Labels: map[string]string{stage.LabelPlatformConfig: "true"}},
		Data:       srv.Data(),
	}
	return p.Client.Create(ctx, sec)
}

func (p *platform) installPromises(ctx context.Context) error {
	for _, d := range promiseDirs {
		if err := p.InstallPromise(ctx, d); err != nil {
			return err
		}
	}
	return nil
}

func readyNow(u *unstructured.Unstructured) bool { return liveplatform.RequestReady(u) }

func readyMessage(u *unstructured.Unstructured) string {
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	og, _, _ := unstructured.NestedInt64(u.Object, "status", "observedGeneration")
	for _, c := range conds {
		if m, ok := c.(map[string]any); ok && m["type"] == "Ready" {
			return fmt.Sprintf("Ready=%v (generation %d, observed %d): %v", m["status"], u.GetGeneration(), og, m["message"])
		}
	}
	return "no Ready condition"
}

// poll calls f every 200 ms until it reports done, fails, the controller
// dies, or the timeout passes.
func (p *platform) poll(ctx context.Context, timeout time.Duration, what string, f func() (bool, error)) error {
	return p.Poll(ctx, timeout, 200*time.Millisecond, what, f)
}

// kill sends SIGKILL to the controller and waits for it.
func (p *platform) kill() error { return p.Controller.Kill() }

// gitOut runs the git CLI in the state repository on the server.
func (p *platform) gitOut(args ...string) ([]byte, error) {
	out, err := p.Git(liveplatform.StateRepo, args...)
	return []byte(out), err
}
