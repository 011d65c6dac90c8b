package install_test

import (
	"bytes"
	"context"
	"fmt"
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

	"github.com/go-logr/logr"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	authorizationv1 "k8s.io/api/authorization/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"promised.dev/promised/api/v1alpha1"
	"promised.dev/promised/controller"
	"promised.dev/promised/pipelines/local"
	"promised.dev/promised/statestore/gittest"
	"promised.dev/promised/test/controlplane"
)

// The controller's identity, as the ServiceAccount token of the
// Deployment's pod authenticates it.
const (
	systemNamespace = "promised-system"
	serviceAccount  = "promised-controller"
	saUser          = "system:serviceaccount:" + systemNamespace + ":" + serviceAccount
)

var cp *controlplane.ControlPlane

// One control plane for the package, with nothing installed: installing the
// CRDs is part of what is tested.
func TestMain(m *testing.M) {
	ctrllog.SetLogger(logr.Discard())
	os.Exit(controlplane.RunTests(m, controlplane.Options{}, func(c *controlplane.ControlPlane) error {
		cp = c
		return nil
	}))
}

func adminClient(t *testing.T) client.Client {
	t.Helper()
	c, _ := adminClientWithWarnings(t)
	return c
}

// adminClientWithWarnings also returns what the API server warned about
// in answer to its calls: a deprecated API, an unknown field, a pod
// template the namespace's pod security level would refuse.
func adminClientWithWarnings(t *testing.T) (client.Client, *warnings) {
	t.Helper()
	scheme, err := controller.Scheme()
	require.NoError(t, err)
	w := &warnings{}
	cfg := rest.CopyConfig(cp.Config)
	cfg.WarningHandlerWithContext = w
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	require.NoError(t, err)
	return c, w
}

// warnings collects the API server's warnings.
type warnings struct {
	mu   sync.Mutex
	list []string
}

// HandleWarningHeaderWithContext implements rest.WarningHandlerWithContext.
func (w *warnings) HandleWarningHeaderWithContext(_ context.Context, code int, _ string, text string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.list = append(w.list, fmt.Sprintf("%d %s", code, text))
}

func (w *warnings) all() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.list...)
}

// install applies config/ as `kubectl apply --server-side -k config` does,
// after a strict dry run of each object so that an unknown or misspelt
// field fails instead of being dropped.
func install(t *testing.T, c client.Client) {
	t.Helper()
	ctx := context.Background()
	objs, err := build(configDir)
	require.NoError(t, err)
	// Namespaces and CRDs first, as kubectl orders them, so that the
	// namespaced objects have somewhere to go.
	first := func(u *unstructured.Unstructured) bool {
		return u.GetKind() == "Namespace" || u.GetKind() == "CustomResourceDefinition"
	}
	for _, phase := range []func(*unstructured.Unstructured) bool{first, func(u *unstructured.Unstructured) bool { return !first(u) }} {
		for _, o := range objs {
			if !phase(o) {
				continue
			}
			// A strict dry run catches a misspelt field, which apply
			// would drop with a warning. Creating is the only strict
			// check there is, so it runs for objects not there yet.
			existing := &unstructured.Unstructured{}
			existing.SetGroupVersionKind(o.GroupVersionKind())
			if err := c.Get(ctx, client.ObjectKeyFromObject(o), existing); apierrors.IsNotFound(err) {
				require.NoError(t, c.Create(ctx, o.DeepCopy(), client.DryRunAll, client.FieldValidation("Strict")), "strict dry run of %s", id(o))
			} else {
				require.NoError(t, err)
			}
			require.NoError(t, c.Apply(ctx, client.ApplyConfigurationFromUnstructured(o.DeepCopy()), client.FieldOwner("promised-install-test"), client.ForceOwnership), "applying %s", id(o))
		}
	}
	for _, o := range objs {
		if o.GetKind() != "CustomResourceDefinition" {
			continue
		}
		require.Eventually(t, func() bool {
			crd := &apiextensionsv1.CustomResourceDefinition{}
			if err := c.Get(ctx, client.ObjectKey{Name: o.GetName()}, crd); err != nil {
				return false
			}
			for _, cond := range crd.Status.Conditions {
				if cond.Type == apiextensionsv1.Established && cond.Status == apiextensionsv1.ConditionTrue {
					return true
				}
			}
			return false
		}, 30*time.Second, 100*time.Millisecond, "CRD %s is never Established", o.GetName())
	}
}

var (
	installOnce     sync.Once
	installWarnings *warnings
)

// installed installs config/ once for the package and returns an
// administrator's client.
func installed(t *testing.T) client.Client {
	t.Helper()
	installOnce.Do(func() {
		var c client.Client
		c, installWarnings = adminClientWithWarnings(t)
		install(t, c)
	})
	return adminClient(t)
}

func TestInstallIsIdempotent(t *testing.T) {
	installed(t)
	// A second apply (an upgrade with no change) must be accepted as is,
	// and without a warning: the namespace warns about pod templates
	// below the restricted pod security level.
	require.Empty(t, installWarnings.all(), "the API server warned while config/ was installed")
	c, w := adminClientWithWarnings(t)
	install(t, c)
	require.Empty(t, w.all(), "the API server warned while config/ was applied again")
	sa := &corev1.ServiceAccount{}
	require.NoError(t, c.Get(context.Background(), client.ObjectKey{Namespace: systemNamespace, Name: serviceAccount}, sa))
}

// TestControllerRunsUnderItsRBAC runs the real binary with the Deployment's
// arguments, authenticated as the Deployment's ServiceAccount (so that only
// config/rbac's rules apply), and takes a promise through its life: install
// its API, reconcile a request into the Git state store, delete both. Every
// API call the controller makes on that path is made under the manifests'
// RBAC; a Forbidden anywhere in its log fails the test.
func TestControllerRunsUnderItsRBAC(t *testing.T) {
	c := installed(t)
	ctx := context.Background()
	proc := startController(t)

	t.Run("probes", func(t *testing.T) {
		// The probe server starts with the manager; once it answers at
		// all, its answer is what the kubelet would get.
		eventually(t, 60*time.Second, func() bool { return httpStatus("http://"+proc.probeAddr+"/") != 0 },
			func() string { return "the probe port never answered\n" + proc.output() })
		for _, path := range []string{"/healthz", "/readyz"} {
			code := 0
			ok := assert.Eventually(t, func() bool {
				code = httpStatus("http://" + proc.probeAddr + path)
				return code == http.StatusOK
			}, 10*time.Second, 200*time.Millisecond)
			if !ok {
				t.Errorf("GET %s on the probe port answers %d, not 200: the Deployment's %s probe would fail. "+
					"`promised controller` must register checks (mgr.AddHealthzCheck and mgr.AddReadyzCheck, e.g. healthz.Ping): "+
					"controller-runtime serves neither path until one is added", path, code, map[string]string{"/healthz": "liveness", "/readyz": "readiness"}[path])
			}
		}
		require.Eventually(t, func() bool { return httpStatus("http://"+proc.metricsAddr+"/metrics") == http.StatusOK },
			30*time.Second, 200*time.Millisecond, "the metrics endpoint answers")
	})

	t.Run("leader election and platform key", func(t *testing.T) {
		eventually(t, 60*time.Second, func() bool {
			l := &coordinationv1.Lease{}
			return c.Get(ctx, client.ObjectKey{Namespace: systemNamespace, Name: "promised-controller"}, l) == nil &&
				l.Spec.HolderIdentity != nil && *l.Spec.HolderIdentity != ""
		}, func() string {
			return "the controller never held the leader Lease in " + systemNamespace + "\n" + proc.output()
		})
		sec := &corev1.Secret{}
		require.NoError(t, c.Get(ctx, client.ObjectKey{Namespace: systemNamespace, Name: controller.PlatformKeySecret}, sec))
		require.Len(t, sec.Data["key"], 32)
	})

	t.Run("a promise's life", func(t *testing.T) {
		git := gittest.New(t)
		git.InitBare("state.git")
		create := func(o client.Object) {
			t.Helper()
			require.NoError(t, c.Create(ctx, o), "creating %T %s", o, o.GetName())
		}
		create(&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "state-store-git", Namespace: "default"},
			Data: map[string][]byte{"username": []byte(git.Username()), "password": []byte(git.Password())}})
		create(&v1alpha1.GitStateStore{ObjectMeta: metav1.ObjectMeta{Name: "default"}, Spec: v1alpha1.GitStateStoreSpec{
			URL: git.HTTPURL("state.git"), Branch: "main", AuthMethod: v1alpha1.AuthBasic,
			SecretRef: &v1alpha1.SecretReference{Name: "state-store-git", Namespace: "default"},
		}})
		create(&v1alpha1.Destination{ObjectMeta: metav1.ObjectMeta{Name: "dev", Labels: map[string]string{"environment": "dev"}},
			Spec: v1alpha1.DestinationSpec{StateStoreRef: v1alpha1.StateStoreRef{Kind: "GitStateStore", Name: "default"}}})

		p, err := local.LoadPromise("../../examples/team")
		require.NoError(t, err)
		create(p)
		eventually(t, 90*time.Second, func() bool {
			got := &v1alpha1.Promise{}
			return c.Get(ctx, client.ObjectKeyFromObject(p), got) == nil && condition(got.Status.Conditions, "Ready") == "True"
		}, func() string { return "promise team never became Ready\n" + proc.output() })

		req, err := local.LoadObject("../../examples/team/testdata/basic/request.yaml")
		require.NoError(t, err)
		create(req)
		var status string
		eventually(t, 90*time.Second, func() bool {
			got := &unstructured.Unstructured{}
			got.SetGroupVersionKind(req.GroupVersionKind())
			if c.Get(ctx, client.ObjectKeyFromObject(req), got) != nil {
				return false
			}
			conds, _, _ := unstructured.NestedSlice(got.Object, "status", "conditions")
			status = fmt.Sprint(conds)
			for _, raw := range conds {
				m, _ := raw.(map[string]any)
				if m["type"] == "Ready" && m["status"] == "True" {
					return true
				}
			}
			return false
		}, func() string { return "request payments never became Ready: " + status + "\n" + proc.output() })

		files := git.Files("state.git", "main")
		written := false
		for path, content := range files {
			if strings.Contains(path, "payments") && strings.Contains(content, "team-payments") {
				written = true
			}
		}
		require.True(t, written, "the request's output is in the state store: %v", keys(files))

		// The request's events are written with the events.k8s.io API.
		require.Eventually(t, func() bool {
			list := &eventsv1.EventList{}
			if c.List(ctx, list, client.InNamespace("default")) != nil {
				return false
			}
			for _, e := range list.Items {
				if e.Regarding.Name == req.GetName() {
					return true
				}
			}
			return false
		}, 30*time.Second, 200*time.Millisecond, "an Event about the request")

		require.NoError(t, c.Delete(ctx, req))
		waitGone(t, c, req, proc)
		require.NoError(t, c.Delete(ctx, p))
		waitGone(t, c, p, proc)
		crd := &apiextensionsv1.CustomResourceDefinition{ObjectMeta: metav1.ObjectMeta{Name: "teams.example.promised.dev"}}
		waitGone(t, c, crd, proc)
	})

	proc.stop(t)
	if out := proc.output(); strings.Contains(strings.ToLower(out), "forbidden") {
		t.Errorf("the controller was refused an API call under config/rbac (a rule is missing):\n%s", forbiddenLines(out))
	}
}

// TestRBACCoversTheJobRunner asks the API server whether the ServiceAccount
// may make the Job runner's calls, which TestControllerRunsUnderItsRBAC
// does not exercise (built-in stages run in-process), and checks a few
// grants it must not have.
func TestRBACCoversTheJobRunner(t *testing.T) {
	c := installed(t)
	type access struct{ verb, group, resource, namespace string }
	allowed := []access{
		{"create", "batch", "jobs", "team-a"},
		{"get", "batch", "jobs", "team-a"},
		{"watch", "batch", "jobs", "team-a"},
		{"delete", "batch", "jobs", "team-a"},
		{"list", "", "pods", "team-a"},
		{"create", "", "secrets", "team-a"},
		{"patch", "", "secrets", "team-a"},
		{"deletecollection", "", "secrets", "team-a"},
		{"list", "", "configmaps", "team-a"},
		{"create", "", "configmaps", "team-a"},
		{"deletecollection", "", "configmaps", "team-a"},
		{"get", "", "serviceaccounts", "team-a"},
		{"create", "", "serviceaccounts", "team-a"},
		{"update", "", "serviceaccounts", "team-a"},
		{"create", "rbac.authorization.k8s.io", "roles", "team-a"},
		{"update", "rbac.authorization.k8s.io", "rolebindings", "team-a"},
		// The ledger of a request in any namespace.
		{"list", "", "secrets", "team-b"},
		{"update", "", "secrets", "team-b"},
		{"delete", "", "secrets", "team-b"},
	}
	denied := []access{
		{"escalate", "rbac.authorization.k8s.io", "roles", "team-a"},
		{"bind", "rbac.authorization.k8s.io", "roles", "team-a"},
		{"create", "rbac.authorization.k8s.io", "clusterrolebindings", ""},
		{"create", "", "pods", "team-a"},
		{"delete", "", "namespaces", ""},
		{"create", "apps", "deployments", "team-a"},
		{"update", "apps", "deployments", "team-a"},
		// Minting a token for a pipeline's ServiceAccount (or any other)
		// would let the controller act as it.
		{"create", "", "serviceaccounts/token", "team-a"},
		{"impersonate", "", "users", ""},
	}
	check := func(a access) bool {
		resource, sub, _ := strings.Cut(a.resource, "/")
		sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
			User:   saUser,
			Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + systemNamespace, "system:authenticated"},
			ResourceAttributes: &authorizationv1.ResourceAttributes{
				Verb: a.verb, Group: a.group, Resource: resource, Subresource: sub, Namespace: a.namespace,
			},
		}}
		require.NoError(t, c.Create(context.Background(), sar))
		return sar.Status.Allowed
	}
	for _, a := range allowed {
		require.True(t, check(a), "%s may %s %s in group %q (namespace %q)", saUser, a.verb, a.resource, a.group, a.namespace)
	}
	for _, a := range denied {
		require.False(t, check(a), "%s must not %s %s in group %q (namespace %q)", saUser, a.verb, a.resource, a.group, a.namespace)
	}
}

// controllerProcess is `promised controller` running as the ServiceAccount.
type controllerProcess struct {
	cmd         *exec.Cmd
	out         *syncBuffer
	probeAddr   string
	metricsAddr string
	done        chan struct{}
	stopOnce    sync.Once
}

// startController builds promised and starts it with the Deployment's
// arguments; only the listen addresses, the state folder and the
// kubeconfig (standing in for the in-cluster ServiceAccount token) differ.
func startController(t *testing.T) *controllerProcess {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "promised")
	build := exec.Command("go", "build", "-o", bin, "./cmd/promised")
	build.Dir = "../.."
	out, err := build.CombinedOutput()
	require.NoError(t, err, "building promised: %s", out)

	saCfg, err := cp.AddUser(saUser, "system:serviceaccounts", "system:serviceaccounts:"+systemNamespace)
	require.NoError(t, err)
	kubeconfig := filepath.Join(dir, "kubeconfig")
	require.NoError(t, writeKubeconfig(saCfg, kubeconfig))

	p := &controllerProcess{out: &syncBuffer{}, probeAddr: freeAddr(t), metricsAddr: freeAddr(t), done: make(chan struct{})}
	var args []string
	for _, a := range controllerDeployment(t).Spec.Template.Spec.Containers[0].Args {
		switch {
		case strings.HasPrefix(a, "--health-probe-bind-address="):
			a = "--health-probe-bind-address=" + p.probeAddr
		case strings.HasPrefix(a, "--metrics-bind-address="):
			a = "--metrics-bind-address=" + p.metricsAddr
		case strings.HasPrefix(a, "--state-dir="):
			a = "--state-dir=" + filepath.Join(dir, "stores")
		}
		args = append(args, a)
	}
	args = append(args, "--kubeconfig="+kubeconfig)
	p.cmd = exec.Command(bin, args...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	// No KUBECONFIG of the developer's may leak in.
	p.cmd.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig)
	require.NoError(t, p.cmd.Start())
	go func() {
		_ = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() { p.stop(t) })
	return p
}

// stop sends SIGTERM, as the kubelet does, and kills the process if it has
// not exited 30 seconds later.
func (p *controllerProcess) stop(t *testing.T) {
	p.stopOnce.Do(func() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(30 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
			t.Errorf("the controller did not stop within 30 s of SIGTERM")
		}
	})
}

func (p *controllerProcess) output() string { return p.out.String() }

func writeKubeconfig(cfg *rest.Config, path string) error {
	kc := clientcmdapi.NewConfig()
	kc.Clusters["test"] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: cfg.CAData}
	kc.AuthInfos["test"] = &clientcmdapi.AuthInfo{ClientCertificateData: cfg.CertData, ClientKeyData: cfg.KeyData, Token: cfg.BearerToken}
	kc.Contexts["test"] = &clientcmdapi.Context{Cluster: "test", AuthInfo: "test"}
	kc.CurrentContext = "test"
	return clientcmd.WriteToFile(*kc, path)
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())
	return addr
}

func httpStatus(url string) int {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

func waitGone(t *testing.T, c client.Client, o client.Object, p *controllerProcess) {
	t.Helper()
	key := client.ObjectKeyFromObject(o)
	probe := o.DeepCopyObject().(client.Object)
	eventually(t, 90*time.Second, func() bool {
		return apierrors.IsNotFound(c.Get(context.Background(), key, probe))
	}, func() string {
		return fmt.Sprintf("%T %s is never deleted (finalizer not removed?)\n%s", o, key, p.output())
	})
}

// eventually waits for cond and fails with msg(), computed when it fails,
// so that it holds the controller's log up to then.
func eventually(t *testing.T, timeout time.Duration, cond func() bool, msg func() string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal(msg())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func condition(conds []metav1.Condition, typ string) string {
	for _, c := range conds {
		if c.Type == typ {
			return string(c.Status)
		}
	}
	return ""
}

func keys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

func forbiddenLines(out string) string {
	var b strings.Builder
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(strings.ToLower(l), "forbidden") {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

// syncBuffer is a bytes.Buffer the process writes while the test reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
