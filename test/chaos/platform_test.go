package chaos

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
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
	"promised.dev/promised/pipelines/stage"
	"promised.dev/promised/promises/database"
	"promised.dev/promised/promises/database/pgtest"
	"promised.dev/promised/statestore/gitserver"
	"promised.dev/promised/test/controlplane"
)

// The platform's fixed names.
const (
	platformNamespace = "promised-system"
	storeName         = "chaos"
	stateRepo         = "state.git"
	gitUser           = "promised"
	// labelDestination is the label the ApiAggregatorTarget stage selects
	// its aggregator's destination by (promises/apiaggregator README).
	labelDestination = "platform.promised.dev/destination"
)

// destinations are the workload clusters, as `promised up` registers them.
var destinations = []struct{ name, env string }{{"dev", "dev"}, {"prod", "prod"}}

// promiseDirs are installed in order, relative to the repository root.
var promiseDirs = []string{"examples/team", "promises/database", "promises/apiaggregator/aggregator", "promises/apiaggregator/target"}

// platform is everything one crash test started.
type platform struct {
	t          testing.TB
	root, work string
	cp         *controlplane.ControlPlane
	kubeconfig string
	cfg        *rest.Config
	c          client.Client
	dyn        dynamic.Interface

	gitBin, gitRoot, gitPass string
	git                      *gitserver.Server

	pg   *pgtest.Server
	keys map[string]sealtest.Key

	bin      string
	ctrl     *controllerProc
	restarts int
	logs     []string
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

// startPlatform starts the control plane, PostgreSQL, the Git server and
// the controller process; registers the store, destinations and the shared
// server's Secret; installs the promises. Everything stops at test end.
func startPlatform(ctx context.Context, t testing.TB) *platform {
	requireBinaries(t)
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	work, err := os.MkdirTemp("", "promised-chaos-")
	if err != nil {
		t.Fatal(err)
	}
	// PostgreSQL runs as the postgres user when we are root: it must
	// reach its folder under this one.
	if err := os.Chmod(work, 0o755); err != nil {
		t.Fatal(err)
	}
	p := &platform{t: t, root: root, work: work, keys: map[string]sealtest.Key{}}
	t.Cleanup(func() {
		if t.Failed() || os.Getenv("CHAOS_KEEP") != "" {
			t.Logf("kept %s (controller logs: %s)", work, strings.Join(p.logs, ", "))
			return
		}
		_ = os.RemoveAll(work)
	})
	p.gitBin, _ = gitserver.GitPath()

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
			CRDDirectoryPaths: []string{filepath.Join(root, "config", "crd")}, ErrorIfCRDPathMissing: true,
		})
		if err != nil {
			fail(fmt.Errorf("starting the control plane: %w", err))
			return
		}
		p.cp = cp
	})
	wg.Go(func() {
		out := filepath.Join(work, "promised")
		cmd := exec.CommandContext(ctx, "go", "build", "-o", out, "./cmd/promised")
		cmd.Dir = root
		if b, err := cmd.CombinedOutput(); err != nil {
			fail(fmt.Errorf("go build ./cmd/promised: %w\n%s", err, b))
			return
		}
		p.bin = out
	})
	wg.Go(func() {
		pg, err := pgtest.Start(filepath.Join(work, "postgres"))
		if err != nil {
			fail(fmt.Errorf("starting PostgreSQL: %w", err))
			return
		}
		p.pg = pg
	})
	for _, d := range destinations {
		wg.Go(func() {
			k, err := sealtest.NewKey(2048)
			if err != nil {
				fail(err)
				return
			}
			mu.Lock()
			p.keys[d.name] = k
			mu.Unlock()
		})
	}
	wg.Wait()
	if p.cp != nil {
		t.Cleanup(func() { _ = p.cp.Stop() })
	}
	if p.pg != nil {
		t.Cleanup(func() { _ = p.pg.Stop() })
	}
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	for _, step := range []func(context.Context) error{p.connect, p.startGit, p.startController, p.register, p.installPromises} {
		if err := step(ctx); err != nil {
			t.Fatal(err)
		}
	}
	return p
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
	p.t.Cleanup(func() { _ = srv.Close() })
	return nil
}

// register creates the GitStateStore (with its Secret), the destinations
// with their sealing certificates, and the shared PostgreSQL server's
// platform Secret, and waits for the destinations to be Ready.
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
			ObjectMeta: metav1.ObjectMeta{Name: w.name, Labels: map[string]string{"environment": w.env, labelDestination: w.name}},
			Spec: v1alpha1.DestinationSpec{
				StateStoreRef: v1alpha1.StateStoreRef{Kind: "GitStateStore", Name: storeName},
				Path:          w.name,
				Sealing:       &v1alpha1.Sealing{CertificatePEM: string(p.keys[w.name].CertPEM)},
			},
		}
		if err := p.c.Create(ctx, d); err != nil {
			return err
		}
	}
	srv := database.Server{Host: p.pg.Host, Port: p.pg.Port, Username: p.pg.User, Password: p.pg.Password, Database: "postgres", SSLMode: "disable"}
	pgSec := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "postgres-shared", Namespace: platformNamespace, Labels: map[string]string{stage.LabelPlatformConfig: "true"}},
		Data:       srv.Data(),
	}
	if err := p.c.Create(ctx, pgSec); err != nil {
		return err
	}
	return p.poll(ctx, time.Minute, "destinations Ready", func() (bool, error) {
		for _, w := range destinations {
			d := &v1alpha1.Destination{}
			if err := p.c.Get(ctx, client.ObjectKey{Name: w.name}, d); err != nil || !condTrue(d.Status.Conditions) {
				return false, nil
			}
		}
		return true, nil
	})
}

func (p *platform) installPromises(ctx context.Context) error {
	for _, d := range promiseDirs {
		pr, err := local.LoadPromise(filepath.Join(p.root, d))
		if err != nil {
			return err
		}
		if err := p.c.Create(ctx, pr); err != nil {
			return fmt.Errorf("creating promise %s: %w", pr.Name, err)
		}
		err = p.poll(ctx, 2*time.Minute, "promise "+pr.Name+" Ready", func() (bool, error) {
			got := &v1alpha1.Promise{}
			if err := p.c.Get(ctx, client.ObjectKey{Name: pr.Name}, got); err != nil {
				return false, client.IgnoreNotFound(err)
			}
			return condTrue(got.Status.Conditions), nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}

func condTrue(conds []metav1.Condition) bool {
	for _, c := range conds {
		if c.Type == "Ready" {
			return c.Status == metav1.ConditionTrue
		}
	}
	return false
}

// readyNow says whether a request is Ready for its current generation.
func readyNow(u *unstructured.Unstructured) bool {
	og, _, _ := unstructured.NestedInt64(u.Object, "status", "observedGeneration")
	if og != u.GetGeneration() {
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

// poll calls f until it reports done, fails, the controller dies, or the
// timeout passes.
func (p *platform) poll(ctx context.Context, timeout time.Duration, what string, f func() (bool, error)) error {
	deadline := time.Now().Add(timeout)
	for {
		if p.ctrl != nil {
			if err := p.ctrl.alive(); err != nil {
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
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// controllerProc is `promised controller` running as its own process.
type controllerProc struct {
	cmd        *exec.Cmd
	done       chan error
	metricsURL string
	logPath    string
	killed     bool
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// startController starts the controller (a new log per start) on the same
// state folder as every start before it, as a restarted pod with a
// persistent volume would, and waits until it serves /metrics.
func (p *platform) startController(context.Context) error {
	metricsAddr, err := freeAddr()
	if err != nil {
		return err
	}
	probeAddr, err := freeAddr()
	if err != nil {
		return err
	}
	logPath := filepath.Join(p.work, fmt.Sprintf("controller-%02d.log", len(p.logs)))
	p.logs = append(p.logs, logPath)
	logf, err := os.Create(logPath)
	if err != nil {
		return err
	}
	c := &controllerProc{metricsURL: "http://" + metricsAddr + "/metrics", logPath: logPath, done: make(chan error, 1)}
	c.cmd = exec.Command(p.bin, "controller", "--kubeconfig", p.kubeconfig, "--state-dir", filepath.Join(p.work, "stores"),
		"--platform-namespace", platformNamespace, "--metrics-bind-address", metricsAddr,
		"--health-probe-bind-address", probeAddr, "--no-job-runner")
	c.cmd.Stdout, c.cmd.Stderr = logf, logf
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := c.cmd.Start(); err != nil {
		_ = logf.Close()
		return fmt.Errorf("starting the controller: %w", err)
	}
	go func() {
		c.done <- c.cmd.Wait()
		_ = logf.Close()
	}()
	p.ctrl = c
	if len(p.logs) == 1 {
		p.t.Cleanup(func() { p.ctrl.stop() })
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		if err := c.alive(); err != nil {
			return err
		}
		req, _ := http.NewRequest(http.MethodGet, c.metricsURL, nil)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the controller did not serve /metrics within 2 minutes; its log: %s", logPath)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// kill sends SIGKILL to the controller's process group and waits for it.
func (p *platform) kill() error {
	c := p.ctrl
	if err := c.alive(); err != nil {
		return err
	}
	c.killed = true
	if err := syscall.Kill(-c.cmd.Process.Pid, syscall.SIGKILL); err != nil {
		return fmt.Errorf("kill -9 %d: %w", c.cmd.Process.Pid, err)
	}
	err := <-c.done
	c.done <- err
	return nil
}

func (c *controllerProc) alive() error {
	select {
	case err := <-c.done:
		c.done <- err
		if c.killed {
			return nil
		}
		return fmt.Errorf("the controller exited by itself (%v); its log: %s\n%s", err, c.logPath, tail(c.logPath, 3000))
	default:
		return nil
	}
}

// stop sends SIGTERM and waits (SIGKILL after 20 s).
func (c *controllerProc) stop() {
	if c == nil || c.cmd.Process == nil || c.killed {
		return
	}
	select {
	case err := <-c.done:
		c.done <- err
		return
	default:
	}
	_ = syscall.Kill(-c.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case err := <-c.done:
		c.done <- err
	case <-time.After(20 * time.Second):
		_ = syscall.Kill(-c.cmd.Process.Pid, syscall.SIGKILL)
		<-c.done
	}
}

func tail(path string, n int64) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.Size() > n {
		_, _ = f.Seek(-n, io.SeekEnd)
	}
	b, _ := io.ReadAll(f)
	return string(b)
}

// git runs the git CLI in the bare repository on the server.
func (p *platform) gitOut(args ...string) ([]byte, error) {
	cmd := exec.Command(p.gitBin, append([]string{"-C", filepath.Join(p.gitRoot, stateRepo)}, args...)...)
	cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "HOME="+p.gitRoot)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("git %s: %w: %s", strings.Join(args, " "), err, stderr.String())
	}
	return out, nil
}
