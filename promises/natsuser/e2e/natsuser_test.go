package e2e

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	"promised.dev/promised/api/v1alpha1"
	"promised.dev/promised/controller"
	"promised.dev/promised/pipelines/ledger"
	"promised.dev/promised/pipelines/local"
	"promised.dev/promised/pipelines/seal/sealtest"
	"promised.dev/promised/pipelines/stage"
	"promised.dev/promised/promises/natsuser"
	"promised.dev/promised/promises/natsuser/natstest"
	"promised.dev/promised/statestore/gittest"
)

const (
	// destLabel marks the destinations of these tests; the promise selects
	// them. Tests run one after the other and each removes its own.
	destLabel = "natsuser-e2e"
	requestNS = "payments"
)

var ids atomic.Int64

func ctx() context.Context { return context.Background() }

// env is one test's platform: a Git server and state store, a destination
// with its own sealing key, a NATS system, and the platform Secret
// describing it.
type env struct {
	t    *testing.T
	id   string
	git  *gittest.Server
	repo string
	key  sealtest.Key
	nats *natstest.System
}

var promiseOnce sync.Once

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{t: t, id: fmt.Sprintf("t%d", ids.Add(1)), repo: "state.git"}
	promiseOnce.Do(func() { installPromise(t) })
	for _, ns := range []string{"promised-system", requestNS} {
		err := k8s.Create(ctx(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
		if !apierrors.IsAlreadyExists(err) {
			require.NoError(t, err)
		}
	}
	e.git = gittest.New(t)
	e.git.InitBare(e.repo)
	creds := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "git-" + e.id, Namespace: "default"},
		Data: map[string][]byte{"username": []byte(e.git.Username()), "password": []byte(e.git.Password())}}
	require.NoError(t, k8s.Create(ctx(), creds))
	store := &v1alpha1.GitStateStore{ObjectMeta: metav1.ObjectMeta{Name: "store-" + e.id}, Spec: v1alpha1.GitStateStoreSpec{
		URL: e.git.HTTPURL(e.repo), Branch: "main", AuthMethod: v1alpha1.AuthBasic,
		SecretRef: &v1alpha1.SecretReference{Name: creds.Name, Namespace: creds.Namespace},
	}}
	require.NoError(t, k8s.Create(ctx(), store))
	var err error
	e.key, err = sealtest.NewKey(2048)
	require.NoError(t, err)
	dest := &v1alpha1.Destination{ObjectMeta: metav1.ObjectMeta{Name: "dev-" + e.id, Labels: map[string]string{destLabel: "true"}},
		Spec: v1alpha1.DestinationSpec{StateStoreRef: v1alpha1.StateStoreRef{Kind: "GitStateStore", Name: store.Name}, Path: "dev",
			Sealing: &v1alpha1.Sealing{CertificatePEM: string(e.key.CertPEM)}}}
	require.NoError(t, k8s.Create(ctx(), dest))
	// Registered first, so it runs last: after the test's requests are gone.
	t.Cleanup(func() { _ = k8s.Delete(ctx(), dest) })

	e.nats = natstest.Serve(t, "payments")
	e.setPlatform(platformData(t, e.nats, e.nats.URL))
	return e
}

// installPromise applies promise.yaml as a platform team would, selecting
// this package's destinations.
func installPromise(t *testing.T) {
	p, err := local.LoadPromise("..")
	require.NoError(t, err)
	p.Spec.DestinationSelectors = []v1alpha1.DestinationSelector{{MatchLabels: map[string]string{destLabel: "true"}}}
	require.NoError(t, k8s.Create(ctx(), p))
	got := &v1alpha1.Promise{}
	require.Eventually(t, func() bool {
		if err := k8s.Get(ctx(), client.ObjectKey{Name: p.Name}, got); err != nil {
			return false
		}
		return meta(got.Status.Conditions, "Ready") == "True" && got.Status.ObservedGeneration == got.Generation
	}, 60*time.Second, 50*time.Millisecond, "the natsuser promise never became Ready: %+v", got.Status.Conditions)
}

func meta(conds []metav1.Condition, t string) string {
	for _, c := range conds {
		if c.Type == t {
			return string(c.Status)
		}
	}
	return ""
}

// platformData is the platform Secret of README.md for ns.
func platformData(t testing.TB, ns *natstest.System, servers string) map[string][]byte {
	d := map[string][]byte{
		natsuser.KeyServers:             []byte(servers),
		natsuser.KeyOperatorSigningSeed: []byte(natstest.Seed(t, ns.OperatorSigner)),
		natsuser.KeyOperatorJWT:         []byte(ns.OperatorJWT),
		natsuser.KeySystemCreds:         ns.SysCreds,
	}
	a := ns.Accounts["payments"]
	d["payments"+natsuser.SuffixPublicKey] = []byte(a.Pub)
	d["payments"+natsuser.SuffixSigningSeed] = []byte(natstest.Seed(t, a.Signer))
	return d
}

// setPlatform creates or replaces the platform Secret.
func (e *env) setPlatform(data map[string][]byte) {
	e.t.Helper()
	sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "nats-accounts", Namespace: "promised-system"}}
	_, err := controllerutil.CreateOrUpdate(ctx(), k8s, sec, func() error {
		sec.Labels = map[string]string{stage.LabelPlatformConfig: "true"}
		sec.Data = data
		return nil
	})
	require.NoError(e.t, err)
}

func (e *env) request(name string, spec map[string]any) *unstructured.Unstructured {
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "nats.promised.dev/v1alpha1", "kind": "NatsUser",
		"metadata": map[string]any{"name": name + "-" + e.id, "namespace": requestNS},
		"spec":     spec,
	}}
	return u
}

func (e *env) get(obj *unstructured.Unstructured) (*unstructured.Unstructured, error) {
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(obj.GroupVersionKind())
	err := k8s.Get(ctx(), client.ObjectKeyFromObject(obj), u)
	return u, err
}

func condition(u *unstructured.Unstructured, t string) map[string]any {
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	for _, c := range conds {
		if m, ok := c.(map[string]any); ok && m["type"] == t {
			return m
		}
	}
	return nil
}

// waitReady waits until the request is Ready for its generation.
func (e *env) waitReady(obj *unstructured.Unstructured) *unstructured.Unstructured {
	e.t.Helper()
	var u *unstructured.Unstructured
	require.Eventually(e.t, func() bool {
		var err error
		if u, err = e.get(obj); err != nil {
			return false
		}
		gen, _, _ := unstructured.NestedInt64(u.Object, "status", "observedGeneration")
		c := condition(u, "Ready")
		return gen == u.GetGeneration() && c != nil && c["status"] == "True"
	}, 60*time.Second, 50*time.Millisecond, "request %s never became Ready: %v", obj.GetName(), u)
	return u
}

// force makes the controller run the request's pipeline again, as a
// periodic reconcile does, and waits until it has.
func (e *env) force(obj *unstructured.Unstructured, i int) {
	e.t.Helper()
	n := runs(obj.GetName())
	before := n.Load()
	require.Eventually(e.t, func() bool {
		u, err := e.get(obj)
		if err != nil {
			return false
		}
		ann := u.GetAnnotations()
		if ann == nil {
			ann = map[string]string{}
		}
		ann[controller.AnnotationReconcileAt] = fmt.Sprintf("%s-%d", e.id, i)
		u.SetAnnotations(ann)
		return k8s.Update(ctx(), u) == nil
	}, 10*time.Second, 10*time.Millisecond)
	require.Eventually(e.t, func() bool { return n.Load() > before }, 30*time.Second, 5*time.Millisecond, "forced reconcile %d never ran", i)
}

func (e *env) commits() int { return e.git.CommitCount(e.repo, "main") }

// output returns the request's files in the state store.
func (e *env) output(obj *unstructured.Unstructured) map[string]string {
	dir := "dev/resources/" + requestNS + "/natsuser/" + obj.GetName() + "/"
	out := map[string]string{}
	if e.git.Head(e.repo, "main") == "" {
		return out
	}
	for p, c := range e.git.Files(e.repo, "main") {
		if rest, ok := strings.CutPrefix(p, dir); ok {
			out[rest] = c
		}
	}
	return out
}

// workload unseals the request's SealedSecret from Git with the
// destination's key, as the sealed-secrets controller does, and mounts it.
func (e *env) workload(files map[string]string) natstest.Workload {
	e.t.Helper()
	manifest := files["user/secret.yaml"]
	require.Contains(e.t, manifest, "kind: SealedSecret")
	data, err := e.key.Unseal([]byte(manifest))
	require.NoError(e.t, err)
	return natstest.Mount(e.t, string(data["nats.creds"]), string(data["url"]))
}

// ledgerSecret returns the request's entry in the Kubernetes ledger.
func (e *env) ledgerSecret(obj *unstructured.Unstructured) *corev1.Secret {
	e.t.Helper()
	list := &corev1.SecretList{}
	require.NoError(e.t, k8s.List(ctx(), list, client.InNamespace(requestNS), client.MatchingLabels{ledger.LabelRequestUID: string(obj.GetUID())}))
	require.Len(e.t, list.Items, 1)
	return &list.Items[0]
}

// checkNoLeak fails when a secret of the NATS system or the user appears
// anywhere in Git or in the request's status.
func (e *env) checkNoLeak(obj *unstructured.Unstructured, user ...string) {
	e.t.Helper()
	secrets := append(e.nats.Secrets(e.t), user...)
	var texts []string
	if e.git.Head(e.repo, "main") != "" {
		for _, c := range e.git.Files(e.repo, "main") {
			texts = append(texts, c)
		}
	}
	if u, err := e.get(obj); err == nil {
		texts = append(texts, fmt.Sprint(u.Object["status"]))
	}
	for _, text := range texts {
		for _, s := range secrets {
			require.NotContains(e.t, text, strings.TrimSpace(s), "a secret leaked")
		}
	}
}

func userSecrets(t testing.TB, w natstest.Workload) []string {
	out := []string{}
	for _, line := range strings.Split(w.Creds, "\n") {
		if strings.HasPrefix(line, "SU") || strings.HasPrefix(line, "eyJ") {
			out = append(out, line)
		}
	}
	require.Len(t, out, 2, "a .creds file holds a JWT and a seed")
	return out
}

func ordersSpec() map[string]any {
	return map[string]any{
		"account":     "payments",
		"publish":     map[string]any{"allow": []any{"orders.events.>"}},
		"subscribe":   map[string]any{"allow": []any{"orders.commands.*", "_INBOX.>"}},
		"credentials": map[string]any{"ttl": "1h", "rotateBefore": "10m"},
	}
}

// TestAPIRefusesBadRequests: the apiserver refuses what the schema refuses,
// naming the field, before the controller sees it.
func TestAPIRefusesBadRequests(t *testing.T) {
	e := &env{t: t, id: fmt.Sprintf("t%d", ids.Add(1))}
	promiseOnce.Do(func() { installPromise(t) })
	for _, ns := range []string{requestNS} {
		err := k8s.Create(ctx(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
		if !apierrors.IsAlreadyExists(err) {
			require.NoError(t, err)
		}
	}
	for _, tc := range []struct {
		name string
		spec func(map[string]any)
		want string
	}{
		{"subject-space", func(s map[string]any) { s["publish"] = map[string]any{"allow": []any{"orders created"}} }, "spec.publish.allow[0]"},
		{"subject-empty-token", func(s map[string]any) { s["subscribe"] = map[string]any{"allow": []any{"orders..x"}} }, "spec.subscribe.allow[0]"},
		{"subject-gt-not-last", func(s map[string]any) { s["subscribe"] = map[string]any{"deny": []any{">.x"}} }, "spec.subscribe.deny[0]"},
		{"payload", func(s map[string]any) { s["limits"] = map[string]any{"payload": 1 << 30} }, "spec.limits.payload"},
		{"ttl", func(s map[string]any) { s["credentials"] = map[string]any{"ttl": "1m"} }, "ttl must be between 10m and 8760h"},
		{"rotate-before", func(s map[string]any) {
			s["credentials"] = map[string]any{"ttl": "1h", "rotateBefore": "2h"}
		}, "rotateBefore must be at least 1m and shorter than ttl"},
		{"connection-type", func(s map[string]any) { s["connectionTypes"] = []any{"CARRIER_PIGEON"} }, "spec.connectionTypes[0]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			spec := ordersSpec()
			tc.spec(spec)
			err := k8s.Create(ctx(), e.request(tc.name, spec))
			require.True(t, apierrors.IsInvalid(err), "want the apiserver to refuse it, got %v", err)
			require.ErrorContains(t, err, tc.want)
		})
	}

	// The account cannot change: the user would move to another account
	// while its old JWT stays valid in the first.
	obj := e.request("immutable", ordersSpec())
	require.NoError(t, k8s.Create(ctx(), obj))
	t.Cleanup(func() { _ = k8s.Delete(ctx(), obj) })
	// The controller adds its finalizer meanwhile: update the latest.
	var err error
	require.Eventually(t, func() bool {
		cur, gerr := e.get(obj)
		if gerr != nil {
			return false
		}
		require.NoError(t, unstructured.SetNestedField(cur.Object, "billing", "spec", "account"))
		err = k8s.Update(ctx(), cur)
		return !apierrors.IsConflict(err)
	}, 10*time.Second, 10*time.Millisecond)
	require.True(t, apierrors.IsInvalid(err), "got %v", err)
	require.ErrorContains(t, err, "account is immutable")
}

// TestNatsUserThroughTheController is the promise's story on the platform:
// a request becomes a SealedSecret in Git whose .creds work against NATS;
// 100 forced reconciles change nothing; the rotation window gives exactly
// one new commit while the old user keeps working; deleting the request
// revokes both users.
func TestNatsUserThroughTheController(t *testing.T) {
	e := newEnv(t)
	obj := e.request("orders", ordersSpec())
	require.NoError(t, k8s.Create(ctx(), obj))
	got := e.waitReady(obj)
	obj.SetUID(got.GetUID())

	files := e.output(obj)
	require.Contains(t, files, "user/configmap.yaml")
	first := e.workload(files)
	c := first.MustConnect(t)
	sub, err := c.NC.SubscribeSync("orders.commands.create")
	require.NoError(t, err)
	require.NoError(t, c.NC.Flush())
	require.NoError(t, c.NC.Publish("orders.commands.create", []byte("hi")))
	_, err = sub.NextMsg(5 * time.Second)
	require.Error(t, err, "the user may not publish commands")
	require.Eventually(t, func() bool { return c.HasError(nil, "Permissions Violation for Publish") }, 10*time.Second, 10*time.Millisecond)
	require.NoError(t, c.NC.Publish("orders.events.created", []byte("ok")))
	require.NoError(t, c.NC.Flush())
	e.checkNoLeak(obj, userSecrets(t, first)...)

	status, _, _ := unstructured.NestedSlice(got.Object, "status", "credentials")
	require.Len(t, status, 1)
	id := status[0].(map[string]any)["id"]
	require.Equal(t, first.Claims(t).Subject, id)

	// 100 forced reconciles: no commit, the same sealed bytes, the same
	// user, and not even a write to the ledger.
	commits := e.commits()
	ledgerVersion := e.ledgerSecret(obj).ResourceVersion
	for i := range 100 {
		e.force(obj, i)
	}
	time.Sleep(300 * time.Millisecond)
	require.Equal(t, commits, e.commits(), "100 reconciles made a commit")
	require.Equal(t, files, e.output(obj))
	require.Equal(t, ledgerVersion, e.ledgerSecret(obj).ResourceVersion, "the ledger was rewritten")

	// Into the rotate-before window: exactly one new commit.
	advance(51 * time.Minute)
	t.Cleanup(func() { advance(-51 * time.Minute) })
	e.force(obj, 100)
	require.Eventually(t, func() bool { return e.commits() == commits+1 }, 30*time.Second, 20*time.Millisecond, "the rotation made no commit")
	for i := 101; i < 111; i++ {
		e.force(obj, i)
	}
	time.Sleep(300 * time.Millisecond)
	require.Equal(t, commits+1, e.commits(), "the rotation made more than one commit")
	rotated := e.output(obj)
	second := e.workload(rotated)
	require.NotEqual(t, first.Claims(t).Subject, second.Claims(t).Subject)
	e.checkNoLeak(obj, append(userSecrets(t, first), userSecrets(t, second)...)...)

	// The old user works until it expires: the workload may still hold it.
	oldClient := first.MustConnect(t)
	newClient := second.MustConnect(t)
	for _, cl := range []*natstest.Client{oldClient, newClient} {
		require.NoError(t, cl.NC.Publish("orders.events.created", nil))
		require.NoError(t, cl.NC.Flush())
	}

	// Deleting the request revokes both, and the controller lets it go.
	require.NoError(t, k8s.Delete(ctx(), obj))
	require.Eventually(t, func() bool { _, err := e.get(obj); return apierrors.IsNotFound(err) }, 60*time.Second, 50*time.Millisecond)
	for _, cl := range []*natstest.Client{oldClient, newClient} {
		require.Eventually(t, func() bool { return cl.HasError(nats.ErrAuthRevoked, "") }, 10*time.Second, 10*time.Millisecond)
	}
	_, err = second.Connect(t)
	require.ErrorIs(t, err, nats.ErrAuthorization)
	require.Empty(t, e.output(obj), "the output left the state store")
}

// TestDeleteWaitsForTheResolver: while NATS is unreachable the delete
// workflow fails, the request keeps its finalizer and says why; once NATS
// is back the retry revokes the user and the request goes.
func TestDeleteWaitsForTheResolver(t *testing.T) {
	e := newEnv(t)
	obj := e.request("retry", ordersSpec())
	require.NoError(t, k8s.Create(ctx(), obj))
	e.waitReady(obj)
	w := e.workload(e.output(obj))

	e.setPlatform(platformData(t, e.nats, "nats://127.0.0.1:1"))
	require.NoError(t, k8s.Delete(ctx(), obj))
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		u, err := e.get(obj)
		if !assert.NoError(c, err) {
			return
		}
		ready := condition(u, "Ready")
		assert.Equal(c, "False", fmt.Sprint(ready["status"]), "%v", u.Object["status"])
		assert.Contains(c, fmt.Sprint(ready["message"]), "connecting to the NATS servers [nats://127.0.0.1:1]")
	}, 60*time.Second, 50*time.Millisecond, "the delete failure was not reported")
	u, err := e.get(obj)
	require.NoError(t, err)
	require.Contains(t, u.GetFinalizers(), controller.RequestFinalizer)
	e.checkNoLeak(obj, userSecrets(t, w)...)
	w.MustConnect(t)

	e.setPlatform(platformData(t, e.nats, e.nats.URL))
	require.Eventually(t, func() bool { _, err := e.get(obj); return apierrors.IsNotFound(err) }, 90*time.Second, 50*time.Millisecond)
	_, err = w.Connect(t)
	require.ErrorIs(t, err, nats.ErrAuthorization)
}

// TestUnknownAccountIsReportedAndIssuesNothing: a request the platform
// cannot serve gets a condition naming the field; no credential is
// recorded and nothing reaches Git.
func TestUnknownAccountIsReportedAndIssuesNothing(t *testing.T) {
	e := newEnv(t)
	spec := ordersSpec()
	spec["account"] = "billing"
	obj := e.request("lost", spec)
	require.NoError(t, k8s.Create(ctx(), obj))
	t.Cleanup(func() { _ = k8s.Delete(ctx(), obj) })
	var msg string
	require.Eventually(t, func() bool {
		u, err := e.get(obj)
		if err != nil {
			return false
		}
		c := condition(u, "PipelineSucceeded")
		msg = fmt.Sprint(c["message"])
		obj.SetUID(u.GetUID())
		return c != nil && c["status"] == "False"
	}, 60*time.Second, 50*time.Millisecond)
	require.Contains(t, msg, `spec.account: account "billing" is not configured`)
	e.checkNoLeak(obj)
	list := &corev1.SecretList{}
	require.NoError(t, k8s.List(ctx(), list, client.InNamespace(requestNS), client.MatchingLabels{ledger.LabelRequestUID: string(obj.GetUID())}))
	require.Empty(t, list.Items, "no credential is issued")
	require.Empty(t, e.output(obj), "nothing is written")
}
