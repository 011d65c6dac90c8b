package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"promised.dev/promised/api/v1alpha1"
	"promised.dev/promised/pipelines/stage"
	"promised.dev/promised/statestore/gittest"
)

// fixture objects for the pure tests: two promises, one with a request
// placed on two destinations, one failing, one pending, one on a
// destination that is gone.
func fixture() ([]v1alpha1.Promise, map[string][]unstructured.Unstructured, map[string]storePaths) {
	ready := metav1.Condition{Type: "Ready", Status: metav1.ConditionTrue, Reason: "Succeeded"}
	promises := []v1alpha1.Promise{
		{
			ObjectMeta: metav1.ObjectMeta{Name: "widgets", Generation: 2},
			Status: v1alpha1.PromiseStatus{
				ObservedGeneration: 2, Kind: "Widget", APIVersion: "widgets.example.com/v1",
				Requests:     v1alpha1.RequestCounts{Total: 4, Ready: 2, Failed: 1, Pending: 1},
				Conditions:   []metav1.Condition{ready},
				Destinations: []string{"prod", "dev"},
			},
		},
		{
			ObjectMeta: metav1.ObjectMeta{Name: "broken-api", Generation: 1},
			Status: v1alpha1.PromiseStatus{ObservedGeneration: 1, Conditions: []metav1.Condition{
				{Type: "Ready", Status: metav1.ConditionFalse, Reason: "InvalidAPI", Message: "spec.api is not a CRD"},
			}},
		},
		{ObjectMeta: metav1.ObjectMeta{Name: "new"}},
	}
	req := func(ns, name string, status map[string]any) unstructured.Unstructured {
		u := unstructured.Unstructured{Object: map[string]any{"apiVersion": "widgets.example.com/v1", "kind": "Widget", "status": status}}
		u.SetNamespace(ns)
		u.SetName(name)
		u.SetGeneration(1)
		return u
	}
	cond := func(status, reason string) []any {
		return []any{map[string]any{"type": "Ready", "status": status, "reason": reason, "message": "m"}}
	}
	requests := map[string][]unstructured.Unstructured{"widgets": {
		req("default", "orders", map[string]any{"observedGeneration": int64(1), "destinations": []any{"prod", "dev"},
			"commit": "0123456789abcdef0123456789abcdef01234567", "conditions": cond("True", "Succeeded")}),
		req("team-a", "billing", map[string]any{"observedGeneration": int64(1), "conditions": cond("False", "Failed")}),
		req("team-a", "fresh", nil),
		req("team-b", "orphan", map[string]any{"observedGeneration": int64(1), "destinations": []any{"gone"},
			"commit": "fedcba9876543210fedcba9876543210fedcba98", "conditions": cond("True", "Succeeded")}),
	}}
	paths := map[string]storePaths{
		"dev":  {Store: "platform", Destination: "dev"},
		"prod": {Store: "", Destination: "clusters/prod"},
	}
	return promises, requests, paths
}

func TestGetTables(t *testing.T) {
	promises, requests, paths := fixture()
	var rows []promiseRow
	for i := range promises {
		rows = append(rows, promiseRowOf(&promises[i]))
	}
	var b bytes.Buffer
	require.NoError(t, writePromiseTable(&b, rows))
	assertGolden(t, "get-promises.golden", b.Bytes())

	var reqRows []requestRow
	for i := range requests["widgets"] {
		reqRows = append(reqRows, requestRowOf("widgets", &requests["widgets"][i]))
	}
	b.Reset()
	require.NoError(t, writeRequestTable(&b, reqRows))
	assertGolden(t, "get-requests.golden", b.Bytes())

	tree := buildTree(promises, requests, map[string]string{"broken-api": "requests not listed: the cluster does not serve example.com/v1 Broken"}, paths)
	b.Reset()
	require.NoError(t, writeTree(&b, tree))
	assertGolden(t, "get-tree.golden", b.Bytes())
	b.Reset()
	require.NoError(t, printStructured(&b, "json", tree))
	assertGolden(t, "get-tree.json.golden", b.Bytes())
}

func TestStateOf(t *testing.T) {
	ready := &condition{Status: "True", Reason: "Succeeded"}
	for _, c := range []struct {
		deleting, stale bool
		ready           *condition
		want            string
	}{
		{ready: ready, want: "Ready"},
		{ready: nil, want: "Pending"},
		{deleting: true, ready: ready, want: "Deleting"},
		{stale: true, ready: ready, want: "Reconciling"},
		{ready: &condition{Status: "False", Reason: "StateStoreError"}, want: "StateStoreError"},
		{ready: &condition{Status: "Unknown"}, want: "NotReady"},
	} {
		got, _ := stateOf(c.deleting, c.stale, c.ready)
		require.Equal(t, c.want, got, "%+v", c)
	}
}

var platformIDs atomic.Int64

// testPlatform is one test's world on the shared platform: a Git server with
// a state store, a destination and a promise of its own.
type testPlatform struct {
	t       *testing.T
	id      string
	git     *gittest.Server
	repo    string
	promise string
	dest    string
	group   string
}

func newPlatform(t *testing.T) *testPlatform {
	t.Helper()
	p := &testPlatform{t: t, id: fmt.Sprintf("c%d", platformIDs.Add(1)), git: gittest.New(t), repo: "state.git"}
	p.git.InitBare(p.repo)
	p.group = p.id + ".cmd.test.promised.dev"
	p.promise = "widgets-" + p.id
	p.dest = "dev-" + p.id
	ctx := context.Background()
	sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "git-" + p.id, Namespace: "default"},
		Data: map[string][]byte{"username": []byte(p.git.Username()), "password": []byte(p.git.Password())}}
	require.NoError(t, k8s.Create(ctx, sec))
	require.NoError(t, k8s.Create(ctx, &v1alpha1.GitStateStore{ObjectMeta: metav1.ObjectMeta{Name: "store-" + p.id}, Spec: v1alpha1.GitStateStoreSpec{
		URL: p.git.HTTPURL(p.repo), Branch: "main", Path: "platform", AuthMethod: v1alpha1.AuthBasic,
		SecretRef: &v1alpha1.SecretReference{Name: sec.Name, Namespace: sec.Namespace},
	}}))
	require.NoError(t, k8s.Create(ctx, &v1alpha1.Destination{ObjectMeta: metav1.ObjectMeta{Name: p.dest, Labels: map[string]string{"test": p.id}},
		Spec: v1alpha1.DestinationSpec{StateStoreRef: v1alpha1.StateStoreRef{Kind: "GitStateStore", Name: "store-" + p.id}, Path: "dev"}}))

	preserve := true
	crd := apiextensionsv1.CustomResourceDefinition{
		TypeMeta:   metav1.TypeMeta{APIVersion: "apiextensions.k8s.io/v1", Kind: "CustomResourceDefinition"},
		ObjectMeta: metav1.ObjectMeta{Name: "widgets." + p.group},
		Spec: apiextensionsv1.CustomResourceDefinitionSpec{
			Group: p.group, Scope: apiextensionsv1.NamespaceScoped,
			Names: apiextensionsv1.CustomResourceDefinitionNames{Kind: "Widget", Plural: "widgets", Singular: "widget", ListKind: "WidgetList"},
			Versions: []apiextensionsv1.CustomResourceDefinitionVersion{{Name: "v1", Served: true, Storage: true,
				Schema: &apiextensionsv1.CustomResourceValidation{OpenAPIV3Schema: &apiextensionsv1.JSONSchemaProps{
					Type: "object",
					Properties: map[string]apiextensionsv1.JSONSchemaProps{
						"spec":   {Type: "object", XPreserveUnknownFields: &preserve},
						"status": {Type: "object", XPreserveUnknownFields: &preserve},
					},
				}}}},
		},
	}
	raw, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&crd)
	require.NoError(t, err)
	api, err := (&unstructured.Unstructured{Object: raw}).MarshalJSON()
	require.NoError(t, err)
	require.NoError(t, k8s.Create(ctx, &v1alpha1.Promise{
		ObjectMeta: metav1.ObjectMeta{Name: p.promise},
		Spec: v1alpha1.PromiseSpec{
			API:                  &runtime.RawExtension{Raw: api},
			DestinationSelectors: []v1alpha1.DestinationSelector{{MatchLabels: map[string]string{"test": p.id}}},
			Workflows: v1alpha1.Workflows{Resource: v1alpha1.WorkflowActions{Configure: []v1alpha1.Pipeline{{
				Metadata: v1alpha1.PipelineMetadata{Name: "render"},
				Spec:     v1alpha1.PipelineSpec{Containers: []v1alpha1.Container{{Name: "cm", Image: stage.Image("cm")}}},
			}}}},
		},
	}))
	return p
}

// request creates a request in namespace default and returns it.
func (p *testPlatform) request(name string, spec map[string]any) *unstructured.Unstructured {
	p.t.Helper()
	u := &unstructured.Unstructured{Object: map[string]any{"spec": spec}}
	u.SetAPIVersion(p.group + "/v1")
	u.SetKind("Widget")
	u.SetNamespace("default")
	u.SetName(name + "-" + p.id)
	require.Eventually(p.t, func() bool {
		// The kind is served once the promise installed its CRD.
		return k8s.Create(context.Background(), u.DeepCopy()) == nil
	}, 30*time.Second, 50*time.Millisecond, "creating request %s", u.GetName())
	return u
}

// waitRequest waits until a request's Ready condition has status want
// for its current generation.
func (p *testPlatform) waitRequest(u *unstructured.Unstructured, want string) {
	p.t.Helper()
	require.Eventually(p.t, func() bool {
		got := &unstructured.Unstructured{}
		got.SetGroupVersionKind(u.GroupVersionKind())
		if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(u), got); err != nil {
			return false
		}
		row := requestRowOf(p.promise, got)
		return (want == "True") == (row.State == "Ready") && row.State != "Pending" && row.State != "Reconciling"
	}, 60*time.Second, 100*time.Millisecond, "request %s never had Ready=%s", u.GetName(), want)
}

func TestGetOnThePlatform(t *testing.T) {
	p := newPlatform(t)
	p.waitRequest(p.request("orders", map[string]any{"value": "one"}), "True")
	p.waitRequest(p.request("broken", map[string]any{"fail": true}), "False")
	head := p.git.Head(p.repo, "main")
	require.NotEmpty(t, head)

	out, _, err := runCLI(t, "get", "promises", "--kubeconfig", kubeconfig)
	require.NoError(t, err)
	t.Logf("promised get promises:\n%s", out)
	require.Equal(t, "NAME KIND REQUESTS READY FAILED STATUS", strings.Join(strings.Fields(strings.Split(out, "\n")[0]), " "))
	// The counts are whatever the controller last wrote to the promise's
	// status; they are checked against the object, not against 2/1/1,
	// because the controller cannot currently write them (its status merge
	// patch omits zero counts the CRD requires: "status.requests.pending:
	// Required value").
	live := &v1alpha1.Promise{}
	require.NoError(t, k8s.Get(context.Background(), client.ObjectKey{Name: p.promise}, live))
	c := live.Status.Requests
	require.Contains(t, tableFields(out), fmt.Sprintf("%s Widget %d %d %d Ready", p.promise, c.Total, c.Ready, c.Failed))

	out, _, err = runCLI(t, "get", "requests", p.promise, "--kubeconfig", kubeconfig)
	require.NoError(t, err)
	t.Logf("promised get requests:\n%s", out)
	require.Equal(t, []string{
		"NAMESPACE NAME STATE DESTINATIONS COMMIT",
		"default broken-" + p.id + " Failed - -",
		"default orders-" + p.id + " Ready " + p.dest + " " + head[:12],
	}, tableFields(out))

	out, _, err = runCLI(t, "get", "tree", p.promise, "--kubeconfig", kubeconfig)
	require.NoError(t, err)
	t.Logf("promised get tree:\n%s", out)
	require.Equal(t, fmt.Sprintf(`%[1]s (Widget) Ready
├── default/broken-%[2]s Failed
└── default/orders-%[2]s Ready
    └── %[3]s: platform/dev/resources/default/%[1]s/orders-%[2]s @ %[4]s
`, p.promise, p.id, p.dest, head[:12]), out)

	out, _, err = runCLI(t, "get", "requests", p.promise, "-o", "json", "--kubeconfig", kubeconfig)
	require.NoError(t, err)
	var doc struct{ Items []requestRow }
	require.NoError(t, json.Unmarshal([]byte(out), &doc))
	require.Len(t, doc.Items, 2)
	require.Contains(t, doc.Items[0].Message, "the stage was asked to fail")
	require.Equal(t, requestRow{Promise: p.promise, Namespace: "default", Name: "orders-" + p.id, State: "Ready", Destinations: []string{p.dest}, Commit: head}, doc.Items[1])

	out, _, err = runCLI(t, "get", "promises", "-o", "yaml", "--kubeconfig", kubeconfig)
	require.NoError(t, err)
	require.Contains(t, out, "name: "+p.promise)

	_, _, err = runCLI(t, "get", "requests", "no-such-promise", "--kubeconfig", kubeconfig)
	require.ErrorContains(t, err, `reading promise "no-such-promise"`)
	_, _, err = runCLI(t, "get", "promises", "-o", "wide", "--kubeconfig", kubeconfig)
	require.ErrorContains(t, err, `unknown output format "wide"`)
}

// tableFields returns the lines of a table with their columns separated by
// one space, so a test does not depend on column widths.
func tableFields(s string) []string {
	var out []string
	for _, line := range strings.Split(strings.TrimRight(s, "\n"), "\n") {
		out = append(out, strings.Join(strings.Fields(line), " "))
	}
	return out
}
