package database_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"promised.dev/promised/api/v1alpha1"
	"promised.dev/promised/pipelines/ledger"
	"promised.dev/promised/pipelines/local"
	"promised.dev/promised/pipelines/seal"
	"promised.dev/promised/pipelines/stage"
	"promised.dev/promised/promises/database"
	"promised.dev/promised/statestore/gittest"
	"promised.dev/promised/test/harness"
)

// configureRuns counts the configure stage's runs under the controller, so
// the test knows a forced re-run happened.
var configureRuns atomic.Int64

var (
	harnessOnce sync.Once
	platformK8s client.Client
	harnessErr  error
)

// controllerClient starts (once) the real controller, in-process, on the
// local control plane, with the promise's stages and the seal stage, and
// returns a client of that control plane.
func controllerClient(t *testing.T) client.Client {
	t.Helper()
	cp := database.ControlPlane(t)
	harnessOnce.Do(func() {
		reg := stage.NewRegistry()
		for name, f := range database.Stages() {
			if name == database.ConfigureStageName {
				configure := f
				f = func(ctx context.Context, c *stage.Context) error {
					configureRuns.Add(1)
					return configure(ctx, c)
				}
			}
			if harnessErr = reg.Register(name, f); harnessErr != nil {
				return
			}
		}
		if harnessErr = reg.Register(seal.StageName, seal.Stage); harnessErr != nil {
			return
		}
		var p *harness.Platform
		if p, harnessErr = harness.Start(cp, reg); harnessErr != nil {
			return
		}
		database.OnShutdown(p.Stop)
		platformK8s = p.Client
	})
	require.NoError(t, harnessErr)
	return platformK8s
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	require.Eventually(t, cond, 90*time.Second, 50*time.Millisecond, "waiting for %s", what)
}

func condition(u *unstructured.Unstructured, typ string) (status, message string) {
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	for _, c := range conds {
		if m, ok := c.(map[string]any); ok && m["type"] == typ {
			return fmt.Sprint(m["status"]), fmt.Sprint(m["message"])
		}
	}
	return "", ""
}

// TestThroughTheController runs the shared plan's story through the real
// controller: Promise and request objects on a real kube-apiserver, output
// committed to a real Git server, sealed for the destination's
// certificate, credentials in the Kubernetes ledger.
func TestThroughTheController(t *testing.T) {
	ctx := context.Background()
	k8s := controllerClient(t)
	srv := database.SharedServer()
	sealing := testSealingKey(t)
	create := func(obj client.Object) {
		t.Helper()
		require.NoError(t, client.IgnoreAlreadyExists(k8s.Create(ctx, obj)), "creating %T %s", obj, obj.GetName())
	}

	git := gittest.New(t)
	git.InitBare("state.git")
	for _, ns := range []string{"promised-system", "shop"} {
		create(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
	}
	create(&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "git", Namespace: "promised-system"},
		Data: map[string][]byte{"username": []byte(git.Username()), "password": []byte(git.Password())}})
	create(&v1alpha1.GitStateStore{ObjectMeta: metav1.ObjectMeta{Name: "state"}, Spec: v1alpha1.GitStateStoreSpec{
		URL: git.HTTPURL("state.git"), Branch: "main", AuthMethod: v1alpha1.AuthBasic,
		SecretRef: &v1alpha1.SecretReference{Name: "git", Namespace: "promised-system"},
	}})
	create(&v1alpha1.Destination{ObjectMeta: metav1.ObjectMeta{Name: "dev"}, Spec: v1alpha1.DestinationSpec{
		StateStoreRef: v1alpha1.StateStoreRef{Kind: "GitStateStore", Name: "state"}, Path: "dev",
		Sealing: &v1alpha1.Sealing{CertificatePEM: string(sealing.CertPEM)},
	}})
	create(&corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: serverSecretName, Namespace: serverSecretNamespace, Labels: map[string]string{stage.LabelPlatformConfig: "true"}},
		Data:       serverOf(srv).Data(),
	})
	promise, err := local.LoadPromise(".")
	require.NoError(t, err)
	create(promise)
	waitFor(t, "the promise to be Ready", func() bool {
		p := &v1alpha1.Promise{}
		if k8s.Get(ctx, client.ObjectKey{Name: promise.Name}, p) != nil {
			return false
		}
		for _, c := range p.Status.Conditions {
			if c.Type == "Ready" && c.Status == metav1.ConditionTrue && p.Status.ObservedGeneration == p.Generation {
				return true
			}
		}
		return false
	})

	// The apiserver evaluates the schema's CEL rules, which local runs
	// cannot: reserved names and changes to what cannot change.
	for spec, want := range map[string]string{"postgres": "databaseName is reserved by PostgreSQL", "pg_x": "may not start with pg_"} {
		bad := request("shop", "bad", map[string]any{"databaseName": spec, "secretName": "s"})
		bad.SetUID("")
		require.ErrorContains(t, k8s.Create(ctx, bad), want)
	}

	req := request("shop", "ctl-orders", map[string]any{"databaseName": "ctl_orders", "secretName": "orders-db", "extensions": []any{"citext"}})
	req.SetUID("")
	create(req)
	get := func() *unstructured.Unstructured {
		t.Helper()
		u := &unstructured.Unstructured{}
		u.SetGroupVersionKind(req.GroupVersionKind())
		require.NoError(t, k8s.Get(ctx, client.ObjectKeyFromObject(req), u))
		return u
	}
	waitReady := func(what string) *unstructured.Unstructured {
		t.Helper()
		var u *unstructured.Unstructured
		waitFor(t, what, func() bool {
			u = get()
			st, _ := condition(u, "Ready")
			gen, _, _ := unstructured.NestedInt64(u.Object, "status", "observedGeneration")
			return st == "True" && gen == u.GetGeneration()
		})
		return u
	}
	u := waitReady("the request to be Ready")
	dir := "dev/resources/shop/database/ctl-orders/configure/"
	files := git.Files("state.git", "main")
	sealed := files[dir+database.CredentialsFile]
	require.Contains(t, sealed, "kind: SealedSecret")
	creds, err := sealing.Unseal([]byte(sealed))
	require.NoError(t, err)
	wl, err := connectWith(ctx, creds)
	require.NoError(t, err, "the workload connects with what it unsealed")
	_, err = wl.Exec(ctx, "CREATE TABLE t (x citext)")
	require.NoError(t, err)
	require.NoError(t, wl.Close(ctx))

	renamed := u.DeepCopy()
	require.NoError(t, unstructured.SetNestedField(renamed.Object, "other_name", "spec", "databaseName"))
	require.ErrorContains(t, k8s.Update(ctx, renamed), "databaseName cannot be changed")

	l := &ledger.Kubernetes{Client: k8s}
	lkey := ledger.Key{Owner: ledger.OwnerFromObject(promise.Name, u), Credential: database.CredentialName}
	entry, found, err := l.Get(ctx, lkey)
	require.NoError(t, err)
	require.True(t, found, "the controller's ledger holds the password")
	password := string(entry.Data["password"])
	require.Equal(t, password, string(creds["password"]))
	for path, content := range git.Files("state.git", "main") {
		require.NotContains(t, content, password, "plaintext in %s", path)
	}
	status, _, _ := unstructured.NestedMap(u.Object, "status")
	require.NotContains(t, fmt.Sprint(status), password)

	// 100 forced re-runs: no commit, same bytes, same password, and the
	// role and database rows never rewritten.
	commits := git.CommitCount("state.git", "main")
	before, _ := catalog(t, srv, "ctl_orders")
	for i := range 100 {
		runs := configureRuns.Load()
		cur := get()
		cur.SetAnnotations(map[string]string{"promised.dev/reconcile-at": fmt.Sprint(i)})
		require.NoError(t, k8s.Update(ctx, cur))
		waitFor(t, fmt.Sprintf("forced re-run %d", i), func() bool { return configureRuns.Load() > runs })
	}
	waitReady("the request to settle after the re-runs")
	require.Equal(t, commits, git.CommitCount("state.git", "main"), "re-runs with nothing changed made a commit")
	require.Equal(t, sealed, git.Files("state.git", "main")[dir+database.CredentialsFile])
	after, _ := catalog(t, srv, "ctl_orders")
	require.Equal(t, before, after, "a re-run touched the role or the database")
	entry, _, err = l.Get(ctx, lkey)
	require.NoError(t, err)
	require.Equal(t, password, string(entry.Data["password"]))

	// Rotation: exactly one new commit; the new password works, the old
	// one does not. The controller re-runs a request only when its spec,
	// its reconcile-at annotation or its destinations change (or its
	// interval is up), not when the rotate annotation alone changes, so
	// both are set here (see the report: the run key should include it).
	cur := get()
	cur.SetAnnotations(map[string]string{ledger.RotateAnnotation: "2026-03-01T10:00:00Z", "promised.dev/reconcile-at": "rotate"})
	require.NoError(t, k8s.Update(ctx, cur))
	waitFor(t, "the rotated credentials to be committed", func() bool { return git.CommitCount("state.git", "main") == commits+1 })
	rotated := git.Files("state.git", "main")[dir+database.CredentialsFile]
	newCreds, err := sealing.Unseal([]byte(rotated))
	require.NoError(t, err)
	require.NotEqual(t, password, string(newCreds["password"]))
	c, err := connectWith(ctx, newCreds)
	require.NoError(t, err)
	require.NoError(t, c.Close(ctx))
	_, err = srv.ConnectAs(ctx, "ctl_orders", password, "ctl_orders")
	requirePgCode(t, err, "28P01")
	for i := range 5 {
		runs := configureRuns.Load()
		cur := get()
		cur.SetAnnotations(map[string]string{ledger.RotateAnnotation: "2026-03-01T10:00:00Z", "promised.dev/reconcile-at": fmt.Sprint("after-", i)})
		require.NoError(t, k8s.Update(ctx, cur))
		waitFor(t, "a re-run after rotating", func() bool { return configureRuns.Load() > runs })
	}
	waitReady("the request to settle after rotating")
	require.Equal(t, commits+1, git.CommitCount("state.git", "main"), "the rotate annotation rotates once")
	requireNotInServerLog(t, password, string(newCreds["password"]))

	// Delete with the default policy: the output goes, the database stays.
	require.NoError(t, k8s.Delete(ctx, get()))
	waitFor(t, "the request to be gone", func() bool {
		u := &unstructured.Unstructured{}
		u.SetGroupVersionKind(req.GroupVersionKind())
		return apierrors.IsNotFound(k8s.Get(ctx, client.ObjectKeyFromObject(req), u))
	})
	require.NotContains(t, git.Files("state.git", "main"), dir+database.CredentialsFile)
	require.True(t, databaseExists(t, srv, "ctl_orders"), "Retain keeps the database")

	// The same request again, now with Delete: it finds its database (the
	// role carries its name, not its UID), and deleting it drops it.
	again := request("shop", "ctl-orders", map[string]any{"databaseName": "ctl_orders", "secretName": "orders-db", "deletionPolicy": "Delete"})
	again.SetUID("")
	create(again)
	waitReady("the re-made request to be Ready")
	c, err = connectWith(ctx, mustUnseal(t, sealing.Unseal, git.Files("state.git", "main")[dir+database.CredentialsFile]))
	require.NoError(t, err)
	var n int
	require.NoError(t, c.QueryRow(ctx, "SELECT count(*) FROM t").Scan(&n), "the retained data is back")
	require.NoError(t, c.Close(ctx))
	require.NoError(t, k8s.Delete(ctx, get()))
	waitFor(t, "the request with Delete to be gone", func() bool {
		u := &unstructured.Unstructured{}
		u.SetGroupVersionKind(req.GroupVersionKind())
		return apierrors.IsNotFound(k8s.Get(ctx, client.ObjectKeyFromObject(req), u))
	})
	require.False(t, databaseExists(t, srv, "ctl_orders"), "Delete drops the database")
	_, roleLeft := catalog(t, srv, "ctl_orders")
	require.False(t, roleLeft, "Delete drops the role")
}

func mustUnseal(t *testing.T, unseal func([]byte) (map[string][]byte, error), manifest string) map[string][]byte {
	t.Helper()
	data, err := unseal([]byte(manifest))
	require.NoError(t, err)
	return data
}
