package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	sscrypto "github.com/bitnami/sealed-secrets/pkg/crypto"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"promised.dev/promised/api/v1alpha1"
	"promised.dev/promised/controller"
	"promised.dev/promised/statestore/gitserver"
	"promised.dev/promised/test/controlplane"
)

// The platform's fixed names.
const (
	platformNamespace = "promised-system"
	storeName         = "bench"
	stateRepo         = "state.git"
	gitUser           = "promised"
)

// destinations are the workload clusters the output goes to, as
// `promised up` registers them.
var destinations = []struct{ name, env string }{{"dev", "dev"}, {"prod", "prod"}}

// platform is everything the benchmark started.
type platform struct {
	root, work string
	cp         *controlplane.ControlPlane
	kubeconfig string
	// cfg is the benchmark's own client configuration: no client-side rate
	// limit, so that the clients measure the apiserver and the controller,
	// not a token bucket.
	cfg *rest.Config
	c   client.Client
	dyn dynamic.Interface

	gitBin, gitRoot, gitPass string
	git                      *gitserver.Server

	promisedBin    string
	controllerArgs []string
	ctrl           *controllerProc
	certs          map[string][]byte

	mu    sync.Mutex
	stops []func()
}

func (p *platform) onStop(f func()) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stops = append(p.stops, f)
}

// close stops everything in the reverse order of starting.
func (p *platform) close() {
	p.mu.Lock()
	stops := p.stops
	p.stops = nil
	p.mu.Unlock()
	for i := len(stops) - 1; i >= 0; i-- {
		stops[i]()
	}
}

// startPlatform starts the control plane, the Git server and the
// controller, and registers the state store and the destinations. The slow
// independent parts (the control plane, building promised, the sealing
// keys) run at once.
func startPlatform(ctx context.Context, o options) (*platform, error) {
	work, err := os.MkdirTemp("", "promised-bench-")
	if err != nil {
		return nil, err
	}
	// PostgreSQL runs as the postgres user when we are root: it must be
	// able to reach its folder under this one.
	if err := os.Chmod(work, 0o755); err != nil {
		return nil, err
	}
	p := &platform{root: o.root, work: work, certs: map[string][]byte{}, controllerArgs: o.controllerArgs}
	if !o.keep {
		p.onStop(func() { _ = os.RemoveAll(work) })
	} else {
		p.onStop(func() { progress("kept %s", work) })
	}
	if p.gitBin, err = gitserver.GitPath(); err != nil {
		p.close()
		return nil, err
	}

	var wg sync.WaitGroup
	errs := make([]error, 3)
	wg.Go(func() {
		p.cp, errs[0] = controlplane.Start(controlplane.Options{
			CRDDirectoryPaths: []string{filepath.Join(o.root, "config", "crd")}, ErrorIfCRDPathMissing: true,
		})
	})
	wg.Go(func() {
		if o.promisedBin != "" {
			p.promisedBin = o.promisedBin
			return
		}
		p.promisedBin, errs[1] = buildPromised(ctx, o.root, work)
	})
	wg.Go(func() {
		var mu sync.Mutex
		var kg sync.WaitGroup
		for _, d := range destinations {
			kg.Go(func() {
				_, cert, err := sscrypto.GeneratePrivateKeyAndCert(2048, 24*time.Hour, "sealed-secrets-"+d.name)
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					errs[2] = fmt.Errorf("generating the %s sealing key: %w", d.name, err)
					return
				}
				p.certs[d.name] = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})
			})
		}
		kg.Wait()
	})
	wg.Wait()
	if p.cp != nil {
		cp := p.cp
		p.onStop(func() { _ = cp.Stop() })
	}
	if err := errors.Join(errs...); err != nil {
		p.close()
		return nil, err
	}
	for _, step := range []func(context.Context) error{p.connect, p.startGit, p.startController, p.register} {
		if err := step(ctx); err != nil {
			p.close()
			return nil, err
		}
	}
	return p, nil
}

func (p *platform) connect(ctx context.Context) error {
	p.kubeconfig = filepath.Join(p.work, "platform.kubeconfig")
	if err := p.cp.WriteKubeconfig(p.kubeconfig); err != nil {
		return err
	}
	p.cfg = rest.CopyConfig(p.cp.Config)
	p.cfg.QPS, p.cfg.Burst = -1, 0
	scheme, err := controller.Scheme()
	if err != nil {
		return err
	}
	if p.c, err = client.New(p.cfg, client.Options{Scheme: scheme}); err != nil {
		return err
	}
	if p.dyn, err = dynamic.NewForConfig(p.cfg); err != nil {
		return err
	}
	return p.ensureNamespace(ctx, platformNamespace)
}

func (p *platform) ensureNamespace(ctx context.Context, name string) error {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if err := p.c.Create(ctx, ns); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating namespace %s: %w", name, err)
	}
	return nil
}

func (p *platform) startGit(context.Context) error {
	p.gitRoot = filepath.Join(p.work, "git")
	if err := os.MkdirAll(p.gitRoot, 0o700); err != nil {
		return err
	}
	buf := make([]byte, 16)
	if _, err := rand.Read(buf); err != nil {
		return err
	}
	p.gitPass = hex.EncodeToString(buf)
	if _, err := gitserver.InitBare(p.gitBin, p.gitRoot, stateRepo); err != nil {
		return err
	}
	srv, err := gitserver.Start(gitserver.Config{Git: p.gitBin, Root: p.gitRoot, Username: gitUser, Password: p.gitPass}, "127.0.0.1:0")
	if err != nil {
		return err
	}
	p.git = srv
	p.onStop(func() { _ = srv.Close() })
	return nil
}

func (p *platform) startController(context.Context) error {
	ctrl, err := startController(p.promisedBin, p.kubeconfig, filepath.Join(p.work, "stores"), filepath.Join(p.work, "controller.log"), true, p.controllerArgs)
	if err != nil {
		return err
	}
	p.ctrl = ctrl
	p.onStop(ctrl.stop)
	return nil
}

// register creates the GitStateStore and the two destinations, each with
// its own sealing certificate, as cmd/up does, and waits until the
// controller reports them Ready.
func (p *platform) register(ctx context.Context) error {
	sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "git-credentials", Namespace: platformNamespace},
		Data: map[string][]byte{"username": []byte(gitUser), "password": []byte(p.gitPass)}}
	if err := p.c.Create(ctx, sec); err != nil {
		return err
	}
	store := &v1alpha1.GitStateStore{ObjectMeta: metav1.ObjectMeta{Name: storeName}, Spec: v1alpha1.GitStateStoreSpec{
		URL: p.git.URL(stateRepo), Branch: "main", AuthMethod: v1alpha1.AuthBasic,
		SecretRef: &v1alpha1.SecretReference{Name: sec.Name, Namespace: sec.Namespace},
	}}
	if err := p.c.Create(ctx, store); err != nil {
		return err
	}
	for _, w := range destinations {
		d := &v1alpha1.Destination{
			ObjectMeta: metav1.ObjectMeta{Name: w.name, Labels: map[string]string{"environment": w.env}},
			Spec: v1alpha1.DestinationSpec{
				StateStoreRef: v1alpha1.StateStoreRef{Kind: "GitStateStore", Name: storeName},
				Path:          w.name,
				Sealing:       &v1alpha1.Sealing{CertificatePEM: string(p.certs[w.name])},
			},
		}
		if err := p.c.Create(ctx, d); err != nil {
			return err
		}
	}
	return poll(ctx, time.Minute, 100*time.Millisecond, "destinations Ready", func() (bool, error) {
		if err := p.ctrl.alive(); err != nil {
			return false, err
		}
		for _, w := range destinations {
			d := &v1alpha1.Destination{}
			if err := p.c.Get(ctx, client.ObjectKey{Name: w.name}, d); err != nil || !isReady(d.Status.Conditions) {
				return false, nil
			}
		}
		return true, nil
	})
}

func isReady(conds []metav1.Condition) bool {
	for _, c := range conds {
		if c.Type == "Ready" {
			return c.Status == metav1.ConditionTrue
		}
	}
	return false
}

// poll calls f every interval until it reports done, fails, or timeout.
func poll(ctx context.Context, timeout, interval time.Duration, what string, f func() (bool, error)) error {
	deadline := time.Now().Add(timeout)
	for {
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

// commitCount is `git rev-list --count main` of a repository on the
// server; 0 when the branch does not exist yet.
func (p *platform) commitCount(repo string) (int, error) {
	out, err := p.gitCmd(repo, "rev-list", "--count", "main")
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

func (p *platform) gitCmd(repo string, args ...string) (string, error) {
	cmd := exec.Command(p.gitBin, append([]string{"-C", filepath.Join(p.gitRoot, repo)}, args...)...)
	cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "HOME="+p.gitRoot)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("git %s: %w: %s", strings.Join(args, " "), err, stderr.String())
	}
	return string(out), nil
}
