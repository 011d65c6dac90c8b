// Package up runs the whole platform on one machine: a platform control
// plane with the controller, a Git state store, and two workload control
// planes (dev and prod) that pull their folders from it. It is what
// `promised up` (and `make run`) starts.
package up

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"promised.dev/promised/cmd/builtin"
	"promised.dev/promised/controller"
	"promised.dev/promised/promises/database/pgtest"
	"promised.dev/promised/statestore/gitserver"
	"promised.dev/promised/test/controlplane"
)

// Options configure a local platform.
type Options struct {
	// StateDir holds everything: etcd data, the Git repository, clones,
	// kubeconfigs, keys. A second `up` reuses it.
	StateDir string
	// Root is the repository checkout holding promises/ and examples/.
	Root string
	// WithExamples applies the example requests.
	WithExamples bool
	// ExitWhenReady prints a summary and returns once every example
	// request is Ready and applied on its workload cluster.
	ExitWhenReady bool
	// ReadyTimeout bounds ExitWhenReady.
	ReadyTimeout time.Duration
	// Out receives progress and the summary.
	Out io.Writer
	// Verbose sends the controller's logs to stderr.
	Verbose bool
}

// Workload clusters of the local platform and their labels.
var workloads = []struct{ name, env string }{{"dev", "dev"}, {"prod", "prod"}}

// Platform is a running local platform.
type Platform struct {
	opts     Options
	planes   map[string]*controlplane.ControlPlane
	git      *gitserver.Server
	gitCreds [2]string
	client   client.Client
	stop     []func()
	keys     map[string]sealingKey
	postgres *pgtest.Server
	natsURL  string
}

// Run starts the platform, applies the examples if asked, and runs until
// ctx ends (or, with ExitWhenReady, until the examples converged).
func Run(ctx context.Context, opts Options) (err error) {
	if opts.Out == nil {
		opts.Out = os.Stdout
	}
	if opts.ReadyTimeout == 0 {
		opts.ReadyTimeout = 5 * time.Minute
	}
	p := &Platform{opts: opts, planes: map[string]*controlplane.ControlPlane{}, keys: map[string]sealingKey{}}
	defer func() {
		p.say("stopping")
		p.shutdown()
	}()
	for _, step := range []func(context.Context) error{
		p.prepare, p.startControlPlanes, p.startGit, p.startController, p.register,
		p.installWorkloadCRDs, p.startUnsealers, p.startPostgres, p.startNATS, p.installPromises, p.startSync,
	} {
		if err := step(ctx); err != nil {
			return err
		}
	}
	p.printWhere()
	if opts.WithExamples {
		if err := p.applyExamples(ctx); err != nil {
			return err
		}
	}
	if opts.ExitWhenReady {
		ctx, cancel := context.WithTimeout(ctx, opts.ReadyTimeout)
		defer cancel()
		return p.waitAndSummarise(ctx)
	}
	p.say("running; Ctrl-C stops everything")
	return p.watchProgress(ctx)
}

func (p *Platform) say(format string, args ...any) {
	fmt.Fprintf(p.opts.Out, ">> "+format+"\n", args...)
}

func (p *Platform) path(parts ...string) string {
	return filepath.Join(append([]string{p.opts.StateDir}, parts...)...)
}

// prepare checks what `up` needs before starting anything, so a missing
// piece is one clear line instead of a half-started platform.
func (p *Platform) prepare(context.Context) error {
	if _, err := gitserver.GitPath(); err != nil {
		return err
	}
	if _, err := controlplane.BinDir(); err != nil {
		return fmt.Errorf("%w (or run `make run`, which builds them first)", err)
	}
	if _, err := os.Stat(filepath.Join(p.opts.Root, "examples", "team", "promise.yaml")); err != nil {
		return fmt.Errorf("examples/team/promise.yaml not found under %s: run promised up from the repository's root or pass --root", p.opts.Root)
	}
	if err := os.MkdirAll(p.opts.StateDir, 0o700); err != nil {
		return fmt.Errorf("creating the state folder: %w", err)
	}
	// Searchable, not listable: PostgreSQL runs as its own user and must
	// reach its folder inside; every secret in here is a 0600 file.
	if err := os.Chmod(p.opts.StateDir, 0o711); err != nil {
		return fmt.Errorf("opening the state folder to the postgres user: %w", err)
	}
	return p.lock()
}

// lock makes sure one `up` uses the state folder at a time. The lock dies
// with its process, so a crashed run leaves nothing stale behind.
func (p *Platform) lock() error {
	f, err := os.OpenFile(p.path("up.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return fmt.Errorf("opening the state folder's lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		_ = f.Close()
		return fmt.Errorf("another `promised up` is using %s: stop it first, or pass another --state-dir", p.opts.StateDir)
	}
	p.stop = append(p.stop, func() { _ = f.Close() })
	return nil
}

func (p *Platform) startControlPlanes(context.Context) error {
	crds, err := promisedCRDs()
	if err != nil {
		return err
	}
	for _, name := range []string{"platform", "dev", "prod"} {
		p.say("starting the %s control plane (kube-apiserver + etcd)", name)
		opts := controlplane.Options{EtcdDataDir: p.path(name, "etcd")}
		if name == "platform" {
			opts.CRDs = crds
		}
		if err := os.MkdirAll(opts.EtcdDataDir, 0o700); err != nil {
			return fmt.Errorf("creating %s: %w", opts.EtcdDataDir, err)
		}
		cp, err := controlplane.Start(opts)
		if err != nil {
			return fmt.Errorf("starting the %s control plane: %w", name, err)
		}
		p.planes[name] = cp
		p.stop = append(p.stop, func() { _ = cp.Stop() })
		if err := cp.WriteKubeconfig(p.path(name + ".kubeconfig")); err != nil {
			return err
		}
	}
	return nil
}

func (p *Platform) startGit(context.Context) error {
	gitPath, err := gitserver.GitPath()
	if err != nil {
		return err
	}
	root := p.path("git")
	if err := os.MkdirAll(root, 0o700); err != nil {
		return fmt.Errorf("creating %s: %w", root, err)
	}
	password, err := p.secretFile("git-password")
	if err != nil {
		return err
	}
	if _, err := gitserver.InitBare(gitPath, root, "state.git"); err != nil {
		return err
	}
	p.gitCreds = [2]string{"promised", password}
	srv, err := gitserver.Start(gitserver.Config{Git: gitPath, Root: root, Username: "promised", Password: password}, "127.0.0.1:0")
	if err != nil {
		return err
	}
	p.git = srv
	p.stop = append(p.stop, func() { _ = srv.Close() })
	p.say("Git state store at %s", srv.URL("state.git"))
	return nil
}

// secretFile returns the content of a 0600 file of the state folder,
// creating it with random content the first time.
func (p *Platform) secretFile(name string) (string, error) {
	path := p.path(name)
	if b, err := os.ReadFile(path); err == nil && len(b) > 0 {
		return strings.TrimSpace(string(b)), nil
	}
	buf := make([]byte, 16)
	if _, err := rand.Read(buf); err != nil {
		return "", fmt.Errorf("generating %s: %w", name, err)
	}
	v := hex.EncodeToString(buf)
	if err := os.WriteFile(path, []byte(v+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("writing %s: %w", path, err)
	}
	return v, nil
}

func (p *Platform) startController(ctx context.Context) error {
	if p.opts.Verbose {
		ctrl.SetLogger(zap.New(zap.UseDevMode(true)))
	} else {
		ctrl.SetLogger(zap.New(zap.WriteTo(io.Discard)))
	}
	cfg := rest.CopyConfig(p.planes["platform"].Config)
	cfg.QPS, cfg.Burst = 200, 400
	scheme, err := controller.Scheme()
	if err != nil {
		return err
	}
	if p.client, err = client.New(cfg, client.Options{Scheme: scheme}); err != nil {
		return fmt.Errorf("connecting to the platform control plane: %w", err)
	}
	if err := ensureNamespace(ctx, p.client, platformNamespace); err != nil {
		return err
	}
	key, err := controller.PlatformKeyFromSecret(ctx, p.client, platformNamespace)
	if err != nil {
		return err
	}
	reg, err := builtin.Registry()
	if err != nil {
		return err
	}
	mgr, err := controller.NewManager(cfg, controller.Options{
		Registry: reg, StateDir: p.path("stores"), PlatformKey: key, PlatformNamespace: platformNamespace, MetricsAddr: "0",
		CommitInterval: controller.DefaultCommitInterval,
	})
	if err != nil {
		return err
	}
	mctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(mctx) }()
	p.stop = append(p.stop, func() { cancel(); <-done })
	p.say("controller running with %d built-in stages", len(reg.Names()))
	return nil
}

// shutdown stops everything in the reverse order of starting.
func (p *Platform) shutdown() {
	for i := len(p.stop) - 1; i >= 0; i-- {
		p.stop[i]()
	}
}

var errNotReady = errors.New("not ready")
