// Package liveplatform starts a whole platform for the tests and
// benchmarks that treat the controller as a black box: a control plane
// (kube-apiserver and etcd), a Git server over smart HTTP holding the state
// repository, `promised controller` built from this tree and run as its own
// process (so that it can be killed, and its memory and CPU are its own),
// and, registered with it, a GitStateStore and two destinations with their
// own sealing certificates, as `promised up` registers them.
package liveplatform

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"promised.dev/promised/api/v1alpha1"
	"promised.dev/promised/controller"
	"promised.dev/promised/pipelines/local"
	"promised.dev/promised/pipelines/seal/sealtest"
	"promised.dev/promised/statestore/gitserver"
	"promised.dev/promised/test/controlplane"
)

// The platform's fixed names.
const (
	// PlatformNamespace holds the controller's own objects and the
	// platform Secrets.
	PlatformNamespace = "promised-system"
	// StoreName is the GitStateStore every destination uses.
	StoreName = "state"
	// StateRepo is the state repository on the Git server.
	StateRepo = "state.git"
	// GitUser is the Git server's user.
	GitUser = "promised"
	// LabelDestination is the label a stage selects one destination by.
	LabelDestination = "platform.promised.dev/destination"
)

// Destination is a workload cluster of the platform.
type Destination struct{ Name, Env string }

// Destinations are the workload clusters every platform registers.
var Destinations = []Destination{{Name: "dev", Env: "dev"}, {Name: "prod", Env: "prod"}}

// Options configure Start.
type Options struct {
	// Root is the repository's root.
	Root string
	// WorkPrefix names the work folder (os.MkdirTemp's pattern).
	WorkPrefix string
	// Promised is a promised binary to run; empty builds ./cmd/promised.
	Promised string
	// ControllerArgs are flags added to `promised controller`'s, which are
	// otherwise its defaults but for addresses and folders.
	ControllerArgs []string
	// Pprof serves the controller's /debug/pprof/ (Controller.Fetch).
	Pprof bool
	// Alongside, when set, runs while the control plane starts and
	// promised builds (for example, starting PostgreSQL).
	Alongside func() error
}

// Platform is everything Start started; Close stops it.
type Platform struct {
	Root, Work string
	CP         *controlplane.ControlPlane
	Kubeconfig string
	// Config has no client-side rate limit, so that a client measures the
	// apiserver and the controller, not a token bucket.
	Config  *rest.Config
	Client  client.Client
	Dynamic dynamic.Interface

	GitBin, GitRoot, GitPassword string
	GitServer                    *gitserver.Server

	// Promised is the binary the controller runs from.
	Promised string
	// Keys are the destinations' sealing keys, by destination name.
	Keys map[string]sealtest.Key
	// Controller is the running controller; Logs every log it has had,
	// one per start.
	Controller *Controller
	Logs       []string

	controllerArgs []string
	pprof          bool

	mu    sync.Mutex
	stops []func()
}

// Start starts the platform; on error, what was started is stopped. The
// slow independent parts (the control plane, building promised, the
// sealing keys, opts.Alongside) run at once.
func Start(ctx context.Context, opts Options) (*Platform, error) {
	work, err := os.MkdirTemp("", opts.WorkPrefix)
	if err != nil {
		return nil, err
	}
	// PostgreSQL runs as the postgres user when we are root: it must be
	// able to reach a folder under this one.
	if err := os.Chmod(work, 0o755); err != nil {
		return nil, err
	}
	p := &Platform{Root: opts.Root, Work: work, Promised: opts.Promised, Keys: map[string]sealtest.Key{},
		controllerArgs: opts.ControllerArgs, pprof: opts.Pprof}
	if p.GitBin, err = gitserver.GitPath(); err != nil {
		return nil, err
	}
	if err := p.startParallel(ctx, opts.Alongside); err != nil {
		p.Close()
		return nil, err
	}
	for _, step := range []func(context.Context) error{p.connect, p.startGit, p.StartController, p.register} {
		if err := step(ctx); err != nil {
			p.Close()
			return nil, err
		}
	}
	return p, nil
}

func (p *Platform) startParallel(ctx context.Context, alongside func() error) error {
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	fail := func(err error) {
		mu.Lock()
		defer mu.Unlock()
		errs = append(errs, err)
	}
	wg.Go(func() {
		cp, err := controlplane.Start(controlplane.Options{
			CRDDirectoryPaths: []string{filepath.Join(p.Root, "config", "crd")}, ErrorIfCRDPathMissing: true,
		})
		if err != nil {
			fail(fmt.Errorf("starting the control plane: %w", err))
			return
		}
		p.CP = cp
		p.OnClose(func() { _ = cp.Stop() })
	})
	if p.Promised == "" {
		wg.Go(func() {
			out := filepath.Join(p.Work, "promised")
			cmd := exec.CommandContext(ctx, "go", "build", "-o", out, "./cmd/promised")
			cmd.Dir = p.Root
			if b, err := cmd.CombinedOutput(); err != nil {
				fail(fmt.Errorf("go build ./cmd/promised: %w\n%s", err, b))
				return
			}
			p.Promised = out
		})
	}
	for _, d := range Destinations {
		wg.Go(func() {
			k, err := sealtest.NewKey(2048)
			if err != nil {
				fail(fmt.Errorf("generating the %s sealing key: %w", d.Name, err))
				return
			}
			mu.Lock()
			defer mu.Unlock()
			p.Keys[d.Name] = k
		})
	}
	if alongside != nil {
		wg.Go(func() {
			if err := alongside(); err != nil {
				fail(err)
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// OnClose registers f to run at Close, before what was registered earlier.
func (p *Platform) OnClose(f func()) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stops = append(p.stops, f)
}

// Close stops everything in the reverse order of starting and removes the
// work folder.
func (p *Platform) Close() { p.close(false) }

// CloseKeeping is Close without removing the work folder (logs,
// repositories, kubeconfig).
func (p *Platform) CloseKeeping() { p.close(true) }

func (p *Platform) close(keep bool) {
	p.mu.Lock()
	stops := p.stops
	p.stops = nil
	p.mu.Unlock()
	for i := len(stops) - 1; i >= 0; i-- {
		stops[i]()
	}
	if !keep {
		_ = os.RemoveAll(p.Work)
	}
}

func (p *Platform) connect(ctx context.Context) error {
	p.Kubeconfig = filepath.Join(p.Work, "platform.kubeconfig")
	if err := p.CP.WriteKubeconfig(p.Kubeconfig); err != nil {
		return err
	}
	p.Config = rest.CopyConfig(p.CP.Config)
	p.Config.QPS, p.Config.Burst = -1, 0
	scheme, err := controller.Scheme()
	if err != nil {
		return err
	}
	if p.Client, err = client.New(p.Config, client.Options{Scheme: scheme}); err != nil {
		return err
	}
	if p.Dynamic, err = dynamic.NewForConfig(p.Config); err != nil {
		return err
	}
	return p.EnsureNamespace(ctx, PlatformNamespace)
}

// EnsureNamespace creates a namespace unless it exists.
func (p *Platform) EnsureNamespace(ctx context.Context, name string) error {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if err := p.Client.Create(ctx, ns); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating namespace %s: %w", name, err)
	}
	return nil
}

func (p *Platform) startGit(context.Context) error {
	p.GitRoot = filepath.Join(p.Work, "git")
	if err := os.MkdirAll(p.GitRoot, 0o700); err != nil {
		return err
	}
	buf := make([]byte, 16)
	if _, err := rand.Read(buf); err != nil {
		return err
	}
	p.GitPassword = hex.EncodeToString(buf)
	if _, err := gitserver.InitBare(p.GitBin, p.GitRoot, StateRepo); err != nil {
		return err
	}
	srv, err := gitserver.Start(gitserver.Config{Git: p.GitBin, Root: p.GitRoot, Username: GitUser, Password: p.GitPassword}, "127.0.0.1:0")
	if err != nil {
		return err
	}
	p.GitServer = srv
	p.OnClose(func() { _ = srv.Close() })
	return nil
}

// StartController starts the controller (a new log per start) on the same
// state folder as every start before it, as a restarted pod with a
// persistent volume would, and waits until it serves /metrics.
func (p *Platform) StartController(context.Context) error {
	logPath := filepath.Join(p.Work, fmt.Sprintf("controller-%02d.log", len(p.Logs)))
	args := []string{"--kubeconfig", p.Kubeconfig, "--state-dir", filepath.Join(p.Work, "stores"), "--platform-namespace", PlatformNamespace}
	c, err := startController(p.Promised, logPath, p.pprof, append(args, p.controllerArgs...))
	if err != nil {
		return err
	}
	p.Logs = append(p.Logs, logPath)
	if p.Controller == nil {
		// The controller of the moment, not the first one.
		p.OnClose(func() { p.Controller.Stop() })
	}
	p.Controller = c
	return nil
}

// register creates the GitStateStore and the destinations, each with its
// own sealing certificate, and waits until the controller reports them
// Ready.
func (p *Platform) register(ctx context.Context) error {
	sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "git-credentials", Namespace: PlatformNamespace},
		Data: map[string][]byte{"username": []byte(GitUser), "password": []byte(p.GitPassword)}}
	if err := p.Client.Create(ctx, sec); err != nil {
		return err
	}
	store := &v1alpha1.GitStateStore{ObjectMeta: metav1.ObjectMeta{Name: StoreName}, Spec: v1alpha1.GitStateStoreSpec{
		URL: p.GitServer.URL(StateRepo), Branch: "main", AuthMethod: v1alpha1.AuthBasic,
		SecretRef: &v1alpha1.SecretReference{Name: sec.Name, Namespace: sec.Namespace},
	}}
	if err := p.Client.Create(ctx, store); err != nil {
		return err
	}
	for _, w := range Destinations {
		d := &v1alpha1.Destination{
			ObjectMeta: metav1.ObjectMeta{Name: w.Name, Labels: map[string]string{"environment": w.Env, LabelDestination: w.Name}},
			Spec: v1alpha1.DestinationSpec{
				StateStoreRef: v1alpha1.StateStoreRef{Kind: "GitStateStore", Name: StoreName},
				Path:          w.Name,
				Sealing:       &v1alpha1.Sealing{CertificatePEM: string(p.Keys[w.Name].CertPEM)},
			},
		}
		if err := p.Client.Create(ctx, d); err != nil {
			return err
		}
	}
	return p.Poll(ctx, time.Minute, 100*time.Millisecond, "destinations Ready", func() (bool, error) {
		for _, w := range Destinations {
			d := &v1alpha1.Destination{}
			if err := p.Client.Get(ctx, client.ObjectKey{Name: w.Name}, d); err != nil || !ReadyCondition(d.Status.Conditions) {
				return false, nil
			}
		}
		return true, nil
	})
}

// InstallPromise creates the promise in dir (relative to Root) unless it
// exists, and waits up to two minutes until it is Ready.
func (p *Platform) InstallPromise(ctx context.Context, dir string) error {
	pr, err := local.LoadPromise(filepath.Join(p.Root, dir))
	if err != nil {
		return err
	}
	if err := p.Client.Create(ctx, pr); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating promise %s: %w", pr.Name, err)
	}
	return p.Poll(ctx, 2*time.Minute, 100*time.Millisecond, "promise "+pr.Name+" Ready", func() (bool, error) {
		got := &v1alpha1.Promise{}
		if err := p.Client.Get(ctx, client.ObjectKey{Name: pr.Name}, got); err != nil {
			return false, client.IgnoreNotFound(err)
		}
		return ReadyCondition(got.Status.Conditions), nil
	})
}

// ReadyCondition says whether conds hold Ready=True.
func ReadyCondition(conds []metav1.Condition) bool {
	for _, c := range conds {
		if c.Type == "Ready" {
			return c.Status == metav1.ConditionTrue
		}
	}
	return false
}

// RequestReady says whether a request is Ready for its current
// generation.
func RequestReady(u *unstructured.Unstructured) bool {
	observed, _, _ := unstructured.NestedInt64(u.Object, "status", "observedGeneration")
	if observed != u.GetGeneration() {
		return false
	}
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	for _, c := range conds {
		if m, ok := c.(map[string]any); ok && m["type"] == "Ready" {
			return m["status"] == "True"
		}
	}
	return false
}

// Poll calls f every interval until it reports done, fails, the controller
// dies, or timeout passes.
func (p *Platform) Poll(ctx context.Context, timeout, interval time.Duration, what string, f func() (bool, error)) error {
	deadline := time.Now().Add(timeout)
	for {
		if p.Controller != nil {
			if err := p.Controller.Alive(); err != nil {
				return err
			}
		}
		done, err := f()
		if err != nil {
			return err
		}
		if done {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %s waiting for %s", timeout, what)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(interval):
		}
	}
}

// Git runs the git CLI in a bare repository on the server.
func (p *Platform) Git(repo string, args ...string) (string, error) {
	cmd := exec.Command(p.GitBin, append([]string{"-C", filepath.Join(p.GitRoot, repo)}, args...)...)
	cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "HOME="+p.GitRoot)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("git %s: %w: %s", strings.Join(args, " "), err, stderr.String())
	}
	return string(out), nil
}

// CommitCount is `git rev-list --count main` of a repository on the
// server; 0 when the branch does not exist yet.
func (p *Platform) CommitCount(repo string) (int, error) {
	out, err := p.Git(repo, "rev-list", "--count", "main")
	if err != nil {
		if strings.Contains(err.Error(), "unknown revision") || strings.Contains(err.Error(), "ambiguous argument") {
			return 0, nil
		}
		return 0, err
	}
	var n int
	_, err = fmt.Sscan(out, &n)
	return n, err
}
