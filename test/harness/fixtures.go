package harness

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"promised.dev/promised/api/v1alpha1"
	"promised.dev/promised/pipelines/local"
	"promised.dev/promised/statestore/gittest"
)

// GitStore starts a real Git server with an empty repository and
// registers it as the GitStateStore name, with its credentials in a Secret
// of the default namespace.
func GitStore(tb testing.TB, c client.Client, name string) *gittest.Server {
	tb.Helper()
	ctx := context.Background()
	git := gittest.New(tb)
	git.InitBare("state.git")
	sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name + "-git", Namespace: "default"},
		Data: map[string][]byte{"username": []byte(git.Username()), "password": []byte(git.Password())}}
	require.NoError(tb, c.Create(ctx, sec))
	require.NoError(tb, c.Create(ctx, &v1alpha1.GitStateStore{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1alpha1.GitStateStoreSpec{
		URL: git.HTTPURL("state.git"), Branch: "main", AuthMethod: v1alpha1.AuthBasic,
		SecretRef: &v1alpha1.SecretReference{Name: sec.Name, Namespace: sec.Namespace}}}))
	return git
}

// Destination registers a destination of store whose folder is its name.
func Destination(tb testing.TB, c client.Client, name, store string, labels map[string]string) {
	tb.Helper()
	require.NoError(tb, c.Create(context.Background(), &v1alpha1.Destination{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
		Spec: v1alpha1.DestinationSpec{StateStoreRef: v1alpha1.StateStoreRef{Kind: "GitStateStore", Name: store}}}))
}

// InstallPromise creates the promise of a folder (or file) and waits until
// it serves its API.
func InstallPromise(tb testing.TB, c client.Client, path string) *v1alpha1.Promise {
	tb.Helper()
	ctx := context.Background()
	p, err := local.LoadPromise(path)
	require.NoError(tb, err)
	require.NoError(tb, c.Create(ctx, p))
	require.Eventually(tb, func() bool {
		got := &v1alpha1.Promise{}
		if c.Get(ctx, client.ObjectKey{Name: p.Name}, got) != nil {
			return false
		}
		for _, cond := range got.Status.Conditions {
			if cond.Type == "Ready" {
				return cond.Status == metav1.ConditionTrue
			}
		}
		return false
	}, 2*time.Minute, 50*time.Millisecond, "promise %s never became Ready", p.Name)
	return p
}

// Ready reports whether a request's Ready condition is True.
func Ready(ctx context.Context, c client.Client, gvk schema.GroupVersionKind, key client.ObjectKey) bool {
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(gvk)
	if c.Get(ctx, key, u) != nil {
		return false
	}
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	for _, cond := range conds {
		if m, ok := cond.(map[string]any); ok && m["type"] == "Ready" {
			return m["status"] == "True"
		}
	}
	return false
}

// Team returns a request of the example team promise.
func Team(namespace, name string) *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "example.promised.dev/v1", "kind": "Team",
		"metadata": map[string]any{"name": name, "namespace": namespace},
		"spec":     map[string]any{"owner": name + "@example.com"},
	}}
}

// TeamGVK is the example team promise's kind.
var TeamGVK = schema.GroupVersionKind{Group: "example.promised.dev", Version: "v1", Kind: "Team"}
