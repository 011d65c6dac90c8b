package clustertest

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwv1beta1 "sigs.k8s.io/gateway-api/apis/v1beta1"
	"sigs.k8s.io/yaml"

	"promised.dev/promised/api/v1alpha1"
	"promised.dev/promised/promises/apiaggregator"
	"promised.dev/promised/statestore/gittest"
)

// world is the end-to-end test's platform: a Git server holding the state
// store and three destinations the aggregator promise may choose from.
type world struct {
	t    *testing.T
	git  *gittest.Server
	repo string
}

var destinations = []string{"edge-a", "edge-b", "edge-c"}

func newWorld(t *testing.T) *world {
	t.Helper()
	ctx := context.Background()
	w := &world{t: t, git: gittest.New(t), repo: "state.git"}
	w.git.InitBare(w.repo)
	sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "git-e2e", Namespace: "default"},
		Data: map[string][]byte{"username": []byte(w.git.Username()), "password": []byte(w.git.Password())}}
	require.NoError(t, k8s.Create(ctx, sec))
	require.NoError(t, k8s.Create(ctx, &v1alpha1.GitStateStore{ObjectMeta: metav1.ObjectMeta{Name: "e2e"}, Spec: v1alpha1.GitStateStoreSpec{
		URL: w.git.HTTPURL(w.repo), Branch: "main", AuthMethod: v1alpha1.AuthBasic,
		SecretRef: &v1alpha1.SecretReference{Name: sec.Name, Namespace: sec.Namespace},
	}}))
	for _, name := range destinations {
		require.NoError(t, k8s.Create(ctx, &v1alpha1.Destination{
			ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{
				testDestinationLabel: "true",
				// The label the controller should give every destination
				// (see README, "Placement"); set by hand until it does.
				apiaggregator.LabelDestination: name,
			}},
			Spec: v1alpha1.DestinationSpec{StateStoreRef: v1alpha1.StateStoreRef{Kind: "GitStateStore", Name: "e2e"}, Path: name},
		}))
	}
	return w
}

func (w *world) create(doc string) *unstructured.Unstructured {
	w.t.Helper()
	u := object(w.t, doc)
	ensureNamespace(w.t, u.GetNamespace())
	require.NoError(w.t, k8s.Create(context.Background(), u), "creating %s %s/%s", u.GetKind(), u.GetNamespace(), u.GetName())
	return u
}

func (w *world) get(obj *unstructured.Unstructured) (*unstructured.Unstructured, error) {
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(obj.GroupVersionKind())
	return u, k8s.Get(context.Background(), client.ObjectKeyFromObject(obj), u)
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

// waitReady waits until a request's Ready condition has the status wanted
// for its current generation, and returns it.
func (w *world) waitReady(obj *unstructured.Unstructured, status string, within time.Duration) *unstructured.Unstructured {
	w.t.Helper()
	var u *unstructured.Unstructured
	require.Eventually(w.t, func() bool {
		var err error
		if u, err = w.get(obj); err != nil {
			return false
		}
		gen, _, _ := unstructured.NestedInt64(u.Object, "status", "observedGeneration")
		c := condition(u, "Ready")
		return gen == u.GetGeneration() && c != nil && c["status"] == status
	}, within, 100*time.Millisecond, "%s %s/%s: Ready never became %s (last: %v)", obj.GetKind(), obj.GetNamespace(), obj.GetName(), status, func() any {
		if u == nil {
			return nil
		}
		return condition(u, "Ready")
	}())
	return u
}

func placedOn(u *unstructured.Unstructured) []string {
	dests, _, _ := unstructured.NestedStringSlice(u.Object, "status", "destinations")
	return dests
}

// files returns the state store's files at the head of main.
func (w *world) files() map[string]string {
	if w.git.Head(w.repo, "main") == "" {
		return map[string]string{}
	}
	return w.git.Files(w.repo, "main")
}

// requestFiles returns, keyed by destination and then by path within the
// request's folder, every file of a request in the state store.
func (w *world) requestFiles(promise string, obj *unstructured.Unstructured) map[string]map[string]string {
	out := map[string]map[string]string{}
	for p, content := range w.files() {
		for _, d := range destinations {
			prefix := fmt.Sprintf("%s/resources/%s/%s/%s/", d, obj.GetNamespace(), promise, obj.GetName())
			if rest, ok := strings.CutPrefix(p, prefix); ok {
				if out[d] == nil {
					out[d] = map[string]string{}
				}
				out[d][rest] = content
			}
		}
	}
	return out
}

func decodeStrict[T any](t *testing.T, doc string) *T {
	t.Helper()
	v := new(T)
	require.NoError(t, yaml.UnmarshalStrict([]byte(doc), v), "%s", doc)
	return v
}

// TestEndToEnd runs both promises through the controller: an aggregator
// and three targets from two namespaces land, rendered, on the
// aggregator's destination in Git, and the apiserver with the real Gateway
// API CRDs accepts every object written; a fourth target claiming a held
// path is refused with a clear status and nothing written; deleting a
// target removes its route and nothing else; a target created before its
// aggregator waits and then proceeds on its own; a target from a namespace
// the aggregator does not allow is refused.
func TestEndToEnd(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)

	// Started first because its retry is the slowest step: the controller
	// re-runs a failed request after a minute (see README).
	early := w.create(`
apiVersion: gateway.promised.dev/v1alpha1
kind: ApiAggregatorTarget
metadata: {name: early, namespace: team-a}
spec:
  aggregator: {name: internal, namespace: platform-e2e}
  routes: [{path: {value: /early}}]
  backend: {name: early, port: 8080}
`)
	got := w.waitReady(early, "False", 30*time.Second)
	require.Contains(t, condition(got, "Ready")["message"], "waiting for ApiAggregator platform-e2e/internal: it does not exist")
	require.Empty(t, w.requestFiles("apiaggregatortarget", early), "a waiting target writes nothing")
	internal := w.create(`
apiVersion: gateway.promised.dev/v1alpha1
kind: ApiAggregator
metadata: {name: internal, namespace: platform-e2e}
spec:
  hostnames: [internal.example.com]
  gateway: {dedicated: {gatewayClassName: internal}}
  targetNamespaces: {from: All}
`)

	public := w.create(`
apiVersion: gateway.promised.dev/v1alpha1
kind: ApiAggregator
metadata: {name: public, namespace: platform-e2e}
spec:
  hostnames: [api.example.com]
  gateway: {dedicated: {gatewayClassName: eg}}
  tls: {certificateRef: {name: api-tls}}
  defaultTimeouts: {request: 30s, backendRequest: 10s}
  targetNamespaces: {from: List, names: [team-a, team-b]}
`)
	public = w.waitReady(public, "True", 30*time.Second)
	require.Len(t, placedOn(public), 1)
	dest := placedOn(public)[0]

	orders := w.create(`
apiVersion: gateway.promised.dev/v1alpha1
kind: ApiAggregatorTarget
metadata: {name: orders, namespace: team-a}
spec:
  aggregator: {name: public, namespace: platform-e2e}
  routes:
    - path: {type: PathPrefix, value: /orders}
      methods: [GET, POST]
    - path: {type: Exact, value: /orders/health}
  backend: {name: orders, port: 8080}
`)
	payments := w.create(`
apiVersion: gateway.promised.dev/v1alpha1
kind: ApiAggregatorTarget
metadata: {name: payments, namespace: team-a}
spec:
  aggregator: {name: public, namespace: platform-e2e}
  routes:
    - path: {type: PathPrefix, value: /payments}
      rewrite: {replacePrefixMatch: /}
      methods: [GET, PUT]
  backend: {name: payments, port: 80}
  secondaryBackend: {name: payments-next, port: 80, weight: 25}
`)
	billing := w.create(`
apiVersion: gateway.promised.dev/v1alpha1
kind: ApiAggregatorTarget
metadata: {name: billing, namespace: team-b}
spec:
  aggregator: {name: public, namespace: platform-e2e}
  routes:
    - path: {type: PathPrefix, value: /billing}
  backend: {name: billing-api, namespace: billing-svc, port: 9090}
`)
	targets := []*unstructured.Unstructured{orders, payments, billing}
	for i, tg := range targets {
		targets[i] = w.waitReady(tg, "True", 30*time.Second)
		require.Equal(t, []string{dest}, placedOn(targets[i]), "%s follows its aggregator to %s", tg.GetName(), dest)
	}

	t.Run("the aggregator's and the targets' objects are in Git, on the aggregator's destination", func(t *testing.T) {
		agg := w.requestFiles("apiaggregator", public)
		require.Equal(t, []string{dest}, keysOf(agg))
		gw := decodeStrict[gwv1.Gateway](t, agg[dest]["render/gateway.yaml"])
		require.Equal(t, gwv1.Hostname("api.example.com"), *gw.Spec.Listeners[0].Hostname)

		files := w.requestFiles("apiaggregatortarget", orders)
		require.Equal(t, []string{dest}, keysOf(files))
		route := decodeStrict[gwv1.HTTPRoute](t, files[dest]["render/httproute.yaml"])
		require.Equal(t, gwv1.ObjectName("public"), route.Spec.ParentRefs[0].Name)
		require.Equal(t, gwv1.Namespace("platform-e2e"), *route.Spec.ParentRefs[0].Namespace)
		require.Equal(t, []gwv1.Hostname{"api.example.com"}, route.Spec.Hostnames)
		require.Equal(t, gwv1.Duration("30s"), *route.Spec.Rules[0].Timeouts.Request, "the aggregator's default timeouts")
		require.NotContains(t, files[dest], "render/referencegrants.yaml", "the Service is in the route's namespace")

		files = w.requestFiles("apiaggregatortarget", payments)
		route = decodeStrict[gwv1.HTTPRoute](t, files[dest]["render/httproute.yaml"])
		require.Len(t, route.Spec.Rules, 2)
		require.Equal(t, int32(75), *route.Spec.Rules[0].BackendRefs[0].Weight)
		require.Equal(t, int32(25), *route.Spec.Rules[0].BackendRefs[1].Weight)

		files = w.requestFiles("apiaggregatortarget", billing)
		grant := decodeStrict[gwv1beta1.ReferenceGrant](t, files[dest]["render/referencegrants.yaml"])
		require.Equal(t, "billing-svc", grant.Namespace)
		require.Equal(t, gwv1beta1.Namespace("team-b"), grant.Spec.From[0].Namespace)
	})

	t.Run("the apiserver with the Gateway API CRDs accepts everything written", func(t *testing.T) {
		n := 0
		for p, content := range w.files() {
			if !strings.HasPrefix(p, dest+"/resources/") {
				continue
			}
			for _, u := range documents(t, []byte(content)) {
				ensureNamespace(t, u.GetNamespace())
				require.NoError(t, apply(ctx, u), "%s: %s %s/%s", p, u.GetKind(), u.GetNamespace(), u.GetName())
				n++
			}
		}
		require.GreaterOrEqual(t, n, 5, "Gateway, three HTTPRoutes and a ReferenceGrant at least")
	})

	t.Run("a fourth target claiming a held path is refused and writes nothing", func(t *testing.T) {
		before := w.files()
		copycat := w.create(`
apiVersion: gateway.promised.dev/v1alpha1
kind: ApiAggregatorTarget
metadata: {name: orders-copy, namespace: team-b}
spec:
  aggregator: {name: public, namespace: platform-e2e}
  routes:
    - path: {type: PathPrefix, value: /orders/}
      methods: [GET]
  backend: {name: orders-copy, port: 8080}
`)
		got := w.waitReady(copycat, "False", 30*time.Second)
		msg := condition(got, "Ready")["message"].(string)
		require.Contains(t, msg, "ApiAggregatorTarget team-b/orders-copy is refused: spec.routes[0]: PathPrefix /orders for GET is already claimed by ApiAggregatorTarget team-a/orders on ApiAggregator platform-e2e/public")
		require.Equal(t, "False", condition(got, "PipelineSucceeded")["status"])
		require.Empty(t, w.requestFiles("apiaggregatortarget", copycat))
		require.Equal(t, before, w.files(), "the refusal changed nothing in Git")
		// The holder is untouched.
		require.Equal(t, "True", condition(w.waitReady(orders, "True", 5*time.Second), "Ready")["status"])
	})

	t.Run("a target from a namespace the aggregator does not allow is refused", func(t *testing.T) {
		intruder := w.create(`
apiVersion: gateway.promised.dev/v1alpha1
kind: ApiAggregatorTarget
metadata: {name: intruder, namespace: team-c}
spec:
  aggregator: {name: public, namespace: platform-e2e}
  routes: [{path: {value: /intruder}}]
  backend: {name: intruder, port: 8080}
`)
		got := w.waitReady(intruder, "False", 30*time.Second)
		require.Contains(t, condition(got, "Ready")["message"], `namespace "team-c" is not allowed to attach to ApiAggregator platform-e2e/public`)
		require.Empty(t, w.requestFiles("apiaggregatortarget", intruder))
	})

	t.Run("deleting a target removes only its route", func(t *testing.T) {
		before := w.files()
		require.NoError(t, k8s.Delete(ctx, payments))
		require.Eventually(t, func() bool {
			_, err := w.get(payments)
			return apierrors.IsNotFound(err)
		}, 30*time.Second, 100*time.Millisecond)
		after := w.files()
		gone := fmt.Sprintf("%s/resources/team-a/apiaggregatortarget/payments/", dest)
		for p, content := range before {
			if strings.HasPrefix(p, gone) {
				require.NotContains(t, after, p)
				continue
			}
			require.Equal(t, content, after[p], "%s changed", p)
		}
		require.Len(t, after, len(before)-len(w.filesUnderPrefix(before, gone)))
	})

	t.Run("a target created before its aggregator proceeds once the aggregator is placed", func(t *testing.T) {
		internal = w.waitReady(internal, "True", 30*time.Second)
		got := w.waitReady(early, "True", 100*time.Second)
		require.Equal(t, placedOn(internal), placedOn(got))
		files := w.requestFiles("apiaggregatortarget", early)
		route := decodeStrict[gwv1.HTTPRoute](t, files[placedOn(internal)[0]]["render/httproute.yaml"])
		require.Equal(t, gwv1.ObjectName("internal"), route.Spec.ParentRefs[0].Name)
	})
}

func (w *world) filesUnderPrefix(files map[string]string, prefix string) []string {
	var out []string
	for p := range files {
		if strings.HasPrefix(p, prefix) {
			out = append(out, p)
		}
	}
	return out
}

func keysOf[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}
