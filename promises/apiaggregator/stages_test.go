package apiaggregator_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwv1beta1 "sigs.k8s.io/gateway-api/apis/v1beta1"
	"sigs.k8s.io/yaml"

	"promised.dev/promised/pipelines/contract"
	"promised.dev/promised/pipelines/local"
	"promised.dev/promised/pipelines/stage"
	"promised.dev/promised/promises/apiaggregator"
)

// run is one stage run on a real workspace through the stage SDK, as the
// in-process runner does it.
type run struct {
	ws  contract.Workspace
	err error
}

// runStage runs f with obj as its input object, env as its environment
// beyond the contract's, and the YAML documents of objects (if any) as the
// platform's other requests.
func runStage(t *testing.T, f stage.Func, obj string, env map[string]string, objects ...string) run {
	t.Helper()
	ws := contract.Workspace{Root: t.TempDir()}
	require.NoError(t, ws.Create())
	require.NoError(t, os.WriteFile(ws.ObjectPath(), []byte(obj), 0o644))
	u, err := local.ParseObject("object", []byte(obj))
	require.NoError(t, err)
	vars := contract.Env{
		Action: contract.ActionConfigure, Type: contract.TypeResource, PipelineName: "render",
		ObjectKind: u.GetKind(), ObjectName: u.GetName(), ObjectNamespace: u.GetNamespace(),
	}.Map()
	for k, v := range env {
		vars[k] = v
	}
	var opts []stage.Option
	if len(objects) > 0 {
		dir := t.TempDir()
		require.NoError(t, os.WriteFile(filepath.Join(dir, "objects.yaml"), []byte(strings.Join(objects, "\n---\n")), 0o644))
		fo, err := local.LoadFolderObjects(dir)
		require.NoError(t, err)
		opts = append(opts, stage.WithObjects(fo))
	}
	c, err := stage.NewContext(ws, func(k string) string { return vars[k] }, opts...)
	require.NoError(t, err)
	return run{ws: ws, err: stage.Run(context.Background(), f, c)}
}

// output returns the output files by name.
func (r run) output(t *testing.T) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	err := filepath.WalkDir(r.ws.Output(), func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(p)
		rel, _ := filepath.Rel(r.ws.Output(), p)
		out[filepath.ToSlash(rel)] = data
		return err
	})
	require.NoError(t, err)
	return out
}

func (r run) metadata(t *testing.T, name string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(r.ws.Metadata(), name))
	require.NoError(t, err, "metadata/%s", name)
	return data
}

// docs splits a multi-document YAML file.
func docs(t *testing.T, data []byte) [][]byte {
	t.Helper()
	var out [][]byte
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return out
		}
		require.NoError(t, err)
		if len(bytes.TrimSpace(doc)) > 0 {
			out = append(out, doc)
		}
	}
}

// decode reads a document into a Gateway API type, refusing any field the
// type does not have: a misspelt field would otherwise be dropped silently
// by the destination's apiserver (pruning) and never take effect.
func decode[T any](t *testing.T, doc []byte) *T {
	t.Helper()
	v := new(T)
	require.NoError(t, yaml.UnmarshalStrict(doc, v), "%s", doc)
	return v
}

const dedicatedAggregator = `
apiVersion: gateway.promised.dev/v1alpha1
kind: ApiAggregator
metadata: {name: public-api, namespace: platform}
spec:
  hostnames: [api.example.com, api.example.org]
  gateway: {dedicated: {gatewayClassName: eg}}
  tls: {certificateRef: {name: api-tls}}
  maxRequestBodySize: 10Mi
  defaultTimeouts: {request: 30s, backendRequest: 10s}
  targetNamespaces: {from: List, names: [team-a, team-b]}
status:
  destinations: [edge-eu]
`

func TestAggregatorRendersADedicatedGateway(t *testing.T) {
	r := runStage(t, apiaggregator.RenderAggregator, dedicatedAggregator, nil)
	require.NoError(t, r.err)
	out := r.output(t)
	require.Equal(t, []string{"gateway.yaml"}, keys(out), "no default backend, no cross-namespace reference, no implementation policy")

	gw := decode[gwv1.Gateway](t, docs(t, out["gateway.yaml"])[0])
	require.Equal(t, "public-api", gw.Name)
	require.Equal(t, "platform", gw.Namespace)
	require.Equal(t, gwv1.ObjectName("eg"), gw.Spec.GatewayClassName)
	require.Len(t, gw.Spec.Listeners, 2)
	for i, host := range []string{"api.example.com", "api.example.org"} {
		l := gw.Spec.Listeners[i]
		require.Equal(t, gwv1.Hostname(host), *l.Hostname)
		require.Equal(t, gwv1.HTTPSProtocolType, l.Protocol)
		require.Equal(t, gwv1.PortNumber(443), l.Port)
		require.Equal(t, gwv1.ObjectName("api-tls"), l.TLS.CertificateRefs[0].Name)
		require.Nil(t, l.TLS.CertificateRefs[0].Namespace, "the certificate is in the Gateway's namespace")
		require.Equal(t, gwv1.NamespacesFromSelector, *l.AllowedRoutes.Namespaces.From)
		require.Equal(t, []string{"platform", "team-a", "team-b"}, l.AllowedRoutes.Namespaces.Selector.MatchExpressions[0].Values,
			"the listed namespaces and the aggregator's own, where its default route lives")
	}

	var status map[string]any
	require.NoError(t, yaml.Unmarshal(r.metadata(t, contract.StatusFile), &status))
	require.Len(t, status["warnings"], 1)
	require.Contains(t, status["warnings"].([]any)[0], "spec.maxRequestBodySize 10Mi is not enforced")
}

func TestAggregatorRendersEnvoyGatewayPoliciesBehindTheOption(t *testing.T) {
	r := runStage(t, apiaggregator.RenderAggregator, dedicatedAggregator, map[string]string{apiaggregator.EnvImplementation: string(apiaggregator.ImplementationEnvoyGateway)})
	require.NoError(t, r.err)
	out := r.output(t)
	require.Contains(t, out, "envoy-gateway.yaml")
	policy := &unstructured.Unstructured{}
	require.NoError(t, yaml.Unmarshal(out["envoy-gateway.yaml"], &policy.Object))
	require.Equal(t, "gateway.envoyproxy.io/v1alpha1", policy.GetAPIVersion())
	require.Equal(t, "BackendTrafficPolicy", policy.GetKind())
	require.Equal(t, "platform", policy.GetNamespace(), "a policy attaches to targets in its own namespace")
	refs, _, _ := unstructured.NestedSlice(policy.Object, "spec", "targetRefs")
	require.Equal(t, []any{map[string]any{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "public-api"}}, refs)
	limit, _, _ := unstructured.NestedString(policy.Object, "spec", "requestBuffer", "limit")
	require.Equal(t, "10Mi", limit)

	var status map[string]any
	require.NoError(t, yaml.Unmarshal(r.metadata(t, contract.StatusFile), &status))
	require.Empty(t, status["warnings"], "the limit is enforced now")

	bad := runStage(t, apiaggregator.RenderAggregator, dedicatedAggregator, map[string]string{apiaggregator.EnvImplementation: "nginx"})
	require.ErrorContains(t, bad.err, apiaggregator.EnvImplementation+` is "nginx"`)
}

func TestAggregatorOnASharedGateway(t *testing.T) {
	obj := `
apiVersion: gateway.promised.dev/v1alpha1
kind: ApiAggregator
metadata: {name: partners, namespace: platform}
spec:
  hostnames: [partners.example.com]
  gateway: {shared: {name: public, namespace: gateway-system}}
  tls: {certificateRef: {name: partners-tls, namespace: certificates}}
  maxRequestBodySize: 1Mi
  defaultBackend: {name: not-found, namespace: errors, port: 8080}
`
	r := runStage(t, apiaggregator.RenderAggregator, obj, map[string]string{apiaggregator.EnvImplementation: "envoy-gateway"})
	require.NoError(t, r.err)
	out := r.output(t)
	require.Equal(t, []string{"default-route.yaml", "envoy-gateway.yaml", "gateway.yaml", "referencegrants.yaml"}, keys(out))

	ls := decode[gwv1.ListenerSet](t, out["gateway.yaml"])
	require.Equal(t, gwv1.ObjectName("public"), ls.Spec.ParentRef.Name)
	require.Equal(t, gwv1.Namespace("gateway-system"), *ls.Spec.ParentRef.Namespace)
	require.Equal(t, gwv1.Namespace("certificates"), *ls.Spec.Listeners[0].TLS.CertificateRefs[0].Namespace)
	require.Equal(t, gwv1.NamespacesFromSame, *ls.Spec.Listeners[0].AllowedRoutes.Namespaces.From)

	route := decode[gwv1.HTTPRoute](t, out["default-route.yaml"])
	require.Equal(t, gwv1.Kind("ListenerSet"), *route.Spec.ParentRefs[0].Kind, "routes attach to the ListenerSet, not to the shared Gateway's own listeners")
	require.Equal(t, gwv1.ObjectName("partners"), route.Spec.ParentRefs[0].Name)
	require.Equal(t, []gwv1.Hostname{"partners.example.com"}, route.Spec.Hostnames)
	require.Equal(t, "/", *route.Spec.Rules[0].Matches[0].Path.Value)
	require.Equal(t, gwv1.Namespace("errors"), *route.Spec.Rules[0].BackendRefs[0].Namespace)

	grants := docs(t, out["referencegrants.yaml"])
	require.Len(t, grants, 2)
	tls := decode[gwv1beta1.ReferenceGrant](t, grants[0])
	require.Equal(t, "certificates", tls.Namespace)
	require.Equal(t, gwv1beta1.Kind("ListenerSet"), tls.Spec.From[0].Kind, "a Gateway's grants are not inherited by its ListenerSets")
	require.Equal(t, gwv1beta1.Kind("Secret"), tls.Spec.To[0].Kind)
	require.Equal(t, gwv1beta1.ObjectName("partners-tls"), *tls.Spec.To[0].Name)
	backend := decode[gwv1beta1.ReferenceGrant](t, grants[1])
	require.Equal(t, "errors", backend.Namespace)
	require.Equal(t, gwv1beta1.Kind("HTTPRoute"), backend.Spec.From[0].Kind)

	policy := &unstructured.Unstructured{}
	require.NoError(t, yaml.Unmarshal(out["envoy-gateway.yaml"], &policy.Object))
	refs, _, _ := unstructured.NestedSlice(policy.Object, "spec", "targetRefs")
	require.Equal(t, "ListenerSet", refs[0].(map[string]any)["kind"], "the limit applies to this aggregator's listeners only, not to the whole shared Gateway")
}

const placedAggregator = `
apiVersion: gateway.promised.dev/v1alpha1
kind: ApiAggregator
metadata: {name: public-api, namespace: platform, creationTimestamp: "2026-01-01T00:00:00Z"}
spec:
  hostnames: [api.example.com]
  gateway: {dedicated: {gatewayClassName: eg}}
  targetNamespaces: {from: All}
status:
  destinations: [edge-eu]
`

func TestTargetRendersAWeightedCrossNamespaceRoute(t *testing.T) {
	obj := `
apiVersion: gateway.promised.dev/v1alpha1
kind: ApiAggregatorTarget
metadata: {name: search, namespace: team-a, creationTimestamp: "2026-01-02T00:00:00Z"}
spec:
  aggregator: {name: public-api, namespace: platform}
  routes:
    - path: {type: PathPrefix, value: /search}
      rewrite: {replacePrefixMatch: /v2/search}
      methods: [GET, HEAD]
  backend: {name: search, namespace: search-svc, port: 8080}
  secondaryBackend: {name: search-next, namespace: search-svc, port: 8081, weight: 10}
`
	r := runStage(t, apiaggregator.RenderTarget, obj, nil, placedAggregator)
	require.NoError(t, r.err)
	out := r.output(t)
	require.Equal(t, []string{"httproute.yaml", "referencegrants.yaml"}, keys(out))

	route := decode[gwv1.HTTPRoute](t, out["httproute.yaml"])
	require.Equal(t, "team-a", route.Namespace)
	parent := route.Spec.ParentRefs[0]
	require.Equal(t, gwv1.Kind("Gateway"), *parent.Kind)
	require.Equal(t, gwv1.Namespace("platform"), *parent.Namespace)
	require.Equal(t, []gwv1.Hostname{"api.example.com"}, route.Spec.Hostnames)
	require.Len(t, route.Spec.Rules, 2, "a rewrite allows one match per rule: one rule per method")
	for i, method := range []gwv1.HTTPMethod{"GET", "HEAD"} {
		ru := route.Spec.Rules[i]
		require.Len(t, ru.Matches, 1)
		require.Equal(t, method, *ru.Matches[0].Method)
		require.Equal(t, "/v2/search", *ru.Filters[0].URLRewrite.Path.ReplacePrefixMatch)
		require.Len(t, ru.BackendRefs, 2)
		require.Equal(t, int32(90), *ru.BackendRefs[0].Weight)
		require.Equal(t, int32(10), *ru.BackendRefs[1].Weight)
	}

	grant := decode[gwv1beta1.ReferenceGrant](t, out["referencegrants.yaml"])
	require.Equal(t, "search-svc", grant.Namespace)
	require.Equal(t, gwv1beta1.Namespace("team-a"), grant.Spec.From[0].Namespace)
	require.Len(t, grant.Spec.To, 2, "one grant per namespace, naming each Service")

	sels, err := contract.ParseSelectors(r.metadata(t, contract.SelectorsFile))
	require.NoError(t, err)
	require.Equal(t, []contract.Selector{{MatchLabels: map[string]string{apiaggregator.LabelDestination: "edge-eu"}}}, sels)
}

func TestTargetWaitsForItsAggregator(t *testing.T) {
	obj := `
apiVersion: gateway.promised.dev/v1alpha1
kind: ApiAggregatorTarget
metadata: {name: early, namespace: team-a}
spec:
  aggregator: {name: later, namespace: platform}
  routes: [{path: {value: /early}}]
  backend: {name: early, port: 80}
`
	unplaced := strings.Replace(strings.Replace(placedAggregator, "public-api", "later", 1), "destinations: [edge-eu]", "{}", 1)
	for _, tc := range []struct {
		name    string
		objects []string
		why     string
	}{
		{"absent", []string{placedAggregator}, "it does not exist"},
		{"not placed yet", []string{unplaced}, "it has not been placed on a destination yet"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := runStage(t, apiaggregator.RenderTarget, obj, nil, tc.objects...)
			var w *apiaggregator.WaitingError
			require.ErrorAs(t, r.err, &w)
			require.EqualError(t, r.err, "waiting for ApiAggregator platform/later: "+tc.why)
			require.Empty(t, r.output(t), "nothing is rendered while waiting")
			ctl, err := contract.ParseWorkflowControl(r.metadata(t, contract.WorkflowControlFile))
			require.NoError(t, err)
			require.Positive(t, ctl.RetryAfter)
			require.Equal(t, r.err.Error(), ctl.Message)
		})
	}
}

func TestTargetRefusedForAConflictWritesNothing(t *testing.T) {
	holder := `
apiVersion: gateway.promised.dev/v1alpha1
kind: ApiAggregatorTarget
metadata: {name: orders, namespace: team-a, creationTimestamp: "2026-01-02T00:00:00Z"}
spec:
  aggregator: {name: public-api, namespace: platform}
  routes: [{path: {type: Exact, value: /orders}}]
  backend: {name: orders, port: 80}
`
	late := `
apiVersion: gateway.promised.dev/v1alpha1
kind: ApiAggregatorTarget
metadata: {name: orders-copy, namespace: team-b, creationTimestamp: "2026-01-03T00:00:00Z"}
spec:
  aggregator: {name: public-api, namespace: platform}
  routes: [{path: {type: Exact, value: /orders}, methods: [DELETE]}]
  backend: {name: copy, port: 80}
`
	r := runStage(t, apiaggregator.RenderTarget, late, nil, placedAggregator, holder)
	require.ErrorContains(t, r.err, "ApiAggregatorTarget team-b/orders-copy is refused: spec.routes[0]: Exact path /orders is already claimed by ApiAggregatorTarget team-a/orders")
	require.Empty(t, r.output(t))

	// The holder itself, listed among the objects, is still admitted.
	r = runStage(t, apiaggregator.RenderTarget, holder, nil, placedAggregator, late, holder)
	require.NoError(t, r.err)
}

func TestTargetNeedsObjectAccess(t *testing.T) {
	obj := `
apiVersion: gateway.promised.dev/v1alpha1
kind: ApiAggregatorTarget
metadata: {name: t, namespace: team-a}
spec:
  aggregator: {name: public-api}
  routes: [{path: {value: /t}}]
  backend: {name: t, port: 80}
`
	r := runStage(t, apiaggregator.RenderTarget, obj, nil)
	require.ErrorIs(t, r.err, stage.ErrNoObjects)
}

func keys(m map[string][]byte) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
