package controller_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
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
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"promised.dev/promised/api/v1alpha1"
	"promised.dev/promised/pipelines/contract"
	"promised.dev/promised/pipelines/seal"
	"promised.dev/promised/pipelines/stage"
	"promised.dev/promised/statestore/gittest"
)

// runs counts the runs of the test stages per request ("ns/name").
var runs sync.Map

func countRun(c *stage.Context) {
	key := c.Env.ObjectNamespace + "/" + c.Env.ObjectName + "/" + string(c.Env.Action)
	n, _ := runs.LoadOrStore(key, new(atomic.Int64))
	n.(*atomic.Int64).Add(1)
}

func runCount(ns, name string, action contract.Action) int64 {
	n, ok := runs.Load(ns + "/" + name + "/" + string(action))
	if !ok {
		return 0
	}
	return n.(*atomic.Int64).Load()
}

var testStages = map[string]stage.Func{
	// cm writes a ConfigMap holding spec.value and reports it in status;
	// spec.fail makes it fail.
	"cm": func(_ context.Context, c *stage.Context) error {
		countRun(c)
		spec, err := c.Spec()
		if err != nil {
			return err
		}
		if spec["fail"] == true {
			return errors.New("the stage was asked to fail")
		}
		cm := map[string]any{"apiVersion": "v1", "kind": "ConfigMap",
			"metadata": map[string]any{"name": c.Env.ObjectName, "namespace": c.Env.ObjectNamespace},
			"data":     map[string]any{"value": fmt.Sprint(spec["value"])}}
		if err := c.WriteObjects("cm.yaml", cm); err != nil {
			return err
		}
		return c.SetStatus(map[string]any{"value": spec["value"], "observedGeneration": 999})
	},
	// secret writes a plaintext Secret holding spec.value as a password,
	// for the seal stage after it, and asks for destinations labelled
	// env=prod.
	"secret": func(_ context.Context, c *stage.Context) error {
		countRun(c)
		spec, err := c.Spec()
		if err != nil {
			return err
		}
		if err := c.AddDestinationSelector(contract.Selector{MatchLabels: map[string]string{"env": "prod"}}); err != nil {
			return err
		}
		return c.WriteObjects("secret.yaml", map[string]any{"apiVersion": "v1", "kind": "Secret",
			"metadata":   map[string]any{"name": c.Env.ObjectName, "namespace": c.Env.ObjectNamespace},
			"stringData": map[string]any{"password": fmt.Sprint(spec["value"])}})
	},
	seal.StageName: seal.Stage,
	// peek reads the platform Secret named by spec.value ("ns/name") and
	// lists ConfigMaps or Widgets (spec.list), reporting in status what it
	// could see but never the secret itself.
	"peek": func(ctx context.Context, c *stage.Context) error {
		countRun(c)
		spec, err := c.Spec()
		if err != nil {
			return err
		}
		if ref, _ := spec["value"].(string); ref != "" {
			secrets, err := c.Secrets()
			if err != nil {
				return err
			}
			ns, name, _ := strings.Cut(ref, "/")
			data, err := secrets.Get(ctx, ns, name)
			if err != nil {
				return err
			}
			if err := c.SetStatus(map[string]any{"secretKeys": len(data)}); err != nil {
				return err
			}
		}
		if kind, _ := spec["list"].(string); kind != "" {
			objects, err := c.Objects()
			if err != nil {
				return err
			}
			apiVersion := "v1"
			if kind == "Widget" {
				obj, err := c.Object()
				if err != nil {
					return err
				}
				apiVersion = obj.GetAPIVersion()
			}
			items, err := objects.List(ctx, apiVersion, kind)
			if err != nil {
				return err
			}
			return c.SetStatus(map[string]any{"listed": len(items)})
		}
		return nil
	},
	// cleanup is a delete pipeline.
	"cleanup": func(_ context.Context, c *stage.Context) error {
		countRun(c)
		return nil
	},
	// promise-cm is a promise configure stage.
	"promise-cm": func(_ context.Context, c *stage.Context) error {
		return c.WriteFile("shared.yaml", []byte("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: shared-"+c.Env.ObjectName+"\n  namespace: default\n"))
	},
}

var ids atomic.Int64

// env is one test's world: a Git server with a state store, destinations
// labelled for this test only, and promises whose selectors pick them.
type env struct {
	t     *testing.T
	id    string
	git   *gittest.Server
	repo  string
	store string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{t: t, id: fmt.Sprintf("t%d", ids.Add(1)), git: gittest.New(t), repo: "state.git"}
	e.git.InitBare(e.repo)
	e.store = "store-" + e.id
	sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "git-" + e.id, Namespace: "default"},
		Data: map[string][]byte{"username": []byte(e.git.Username()), "password": []byte(e.git.Password())}}
	e.create(sec)
	e.create(&v1alpha1.GitStateStore{ObjectMeta: metav1.ObjectMeta{Name: e.store}, Spec: v1alpha1.GitStateStoreSpec{
		URL: e.git.HTTPURL(e.repo), Branch: "main", AuthMethod: v1alpha1.AuthBasic,
		SecretRef: &v1alpha1.SecretReference{Name: sec.Name, Namespace: sec.Namespace},
	}})
	return e
}

func (e *env) ctx() context.Context { return context.Background() }

func (e *env) create(obj client.Object) {
	e.t.Helper()
	require.NoError(e.t, k8s.Create(e.ctx(), obj), "creating %T %s", obj, obj.GetName())
}

// destination creates a destination whose folder is its name.
func (e *env) destination(name string, labels map[string]string) *v1alpha1.Destination {
	e.t.Helper()
	l := map[string]string{"test": e.id}
	for k, v := range labels {
		l[k] = v
	}
	d := &v1alpha1.Destination{ObjectMeta: metav1.ObjectMeta{Name: name + "-" + e.id, Labels: l},
		Spec: v1alpha1.DestinationSpec{StateStoreRef: v1alpha1.StateStoreRef{Kind: "GitStateStore", Name: e.store}, Path: name}}
	e.create(d)
	return d
}

func pipeline(name string, stages ...string) v1alpha1.Pipeline {
	p := v1alpha1.Pipeline{APIVersion: "platform.kratix.io/v1alpha1", Kind: "Pipeline", Metadata: v1alpha1.PipelineMetadata{Name: name}}
	for _, s := range stages {
		p.Spec.Containers = append(p.Spec.Containers, v1alpha1.Container{Name: s, Image: stage.Image(s)})
	}
	return p
}

// promise returns (not yet created) a promise serving kind Widget in a
// group of this test, placing output on this test's destinations.
func (e *env) promise(name string, configure ...v1alpha1.Pipeline) *v1alpha1.Promise {
	group := e.id + ".test.promised.dev"
	preserve := true
	crd := apiextensionsv1.CustomResourceDefinition{
		TypeMeta:   metav1.TypeMeta{APIVersion: "apiextensions.k8s.io/v1", Kind: "CustomResourceDefinition"},
		ObjectMeta: metav1.ObjectMeta{Name: "widgets." + group},
		Spec: apiextensionsv1.CustomResourceDefinitionSpec{
			Group: group, Scope: apiextensionsv1.NamespaceScoped,
			Names: apiextensionsv1.CustomResourceDefinitionNames{Kind: "Widget", Plural: "widgets", Singular: "widget", ListKind: "WidgetList"},
			Versions: []apiextensionsv1.CustomResourceDefinitionVersion{{Name: "v1", Served: true, Storage: true,
				Schema: &apiextensionsv1.CustomResourceValidation{OpenAPIV3Schema: &apiextensionsv1.JSONSchemaProps{
					Type: "object",
					Properties: map[string]apiextensionsv1.JSONSchemaProps{
						"spec": {Type: "object", Properties: map[string]apiextensionsv1.JSONSchemaProps{
							"value": {Type: "string"},
							"list":  {Type: "string"},
							"fail":  {Type: "boolean"},
						}},
						"status": {Type: "object", XPreserveUnknownFields: &preserve},
					},
				}}}},
		},
	}
	raw, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&crd)
	require.NoError(e.t, err)
	api := &unstructured.Unstructured{Object: raw}
	data, err := api.MarshalJSON()
	require.NoError(e.t, err)
	return &v1alpha1.Promise{
		ObjectMeta: metav1.ObjectMeta{Name: name + "-" + e.id},
		Spec: v1alpha1.PromiseSpec{
			API:                  &runtime.RawExtension{Raw: data},
			DestinationSelectors: []v1alpha1.DestinationSelector{{MatchLabels: map[string]string{"test": e.id}}},
			Workflows:            v1alpha1.Workflows{Resource: v1alpha1.WorkflowActions{Configure: configure}},
		},
	}
}

func (e *env) request(name, value string) *unstructured.Unstructured {
	u := &unstructured.Unstructured{}
	u.SetAPIVersion(e.id + ".test.promised.dev/v1")
	u.SetKind("Widget")
	u.SetNamespace("default")
	u.SetName(name + "-" + e.id)
	u.Object["spec"] = map[string]any{"value": value}
	return u
}

// waitPromiseReady waits until the promise serves its kind.
func (e *env) waitPromiseReady(name string) *v1alpha1.Promise {
	e.t.Helper()
	p := &v1alpha1.Promise{}
	require.Eventually(e.t, func() bool {
		if err := k8s.Get(e.ctx(), client.ObjectKey{Name: name}, p); err != nil {
			return false
		}
		return condStatus(p.Status.Conditions, "Ready") == "True" && p.Status.ObservedGeneration == p.Generation
	}, 60*time.Second, 50*time.Millisecond, "promise %s never became Ready: %+v", name, p.Status.Conditions)
	return p
}

func condStatus(conds []metav1.Condition, t string) string {
	for _, c := range conds {
		if c.Type == t {
			return string(c.Status)
		}
	}
	return ""
}

// get reads a request.
func (e *env) get(obj *unstructured.Unstructured) (*unstructured.Unstructured, error) {
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(obj.GroupVersionKind())
	err := k8s.Get(e.ctx(), client.ObjectKeyFromObject(obj), u)
	return u, err
}

// requestCondition returns a request's condition as a map.
func requestCondition(u *unstructured.Unstructured, t string) map[string]any {
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	for _, c := range conds {
		if m, ok := c.(map[string]any); ok && m["type"] == t {
			return m
		}
	}
	return nil
}

// waitRequest waits until a request's condition has the status wanted for
// its current generation.
func (e *env) waitRequest(obj *unstructured.Unstructured, condType, status string) *unstructured.Unstructured {
	e.t.Helper()
	var u *unstructured.Unstructured
	require.Eventually(e.t, func() bool {
		var err error
		if u, err = e.get(obj); err != nil {
			return false
		}
		gen, _, _ := unstructured.NestedInt64(u.Object, "status", "observedGeneration")
		c := requestCondition(u, condType)
		return gen == u.GetGeneration() && c != nil && c["status"] == status
	}, 60*time.Second, 50*time.Millisecond, "request %s: condition %s never became %s", obj.GetName(), condType, status)
	return u
}

// files returns the state store's files at the branch head.
func (e *env) files() map[string]string {
	if e.git.Head(e.repo, "main") == "" {
		return map[string]string{}
	}
	return e.git.Files(e.repo, "main")
}

// filesUnder returns the files under a folder of the store, keyed by
// path relative to it.
func (e *env) filesUnder(dir string) map[string]string {
	out := map[string]string{}
	for p, c := range e.files() {
		if rest, ok := strings.CutPrefix(p, dir+"/"); ok {
			out[rest] = c
		}
	}
	return out
}

func (e *env) commits() int { return e.git.CommitCount(e.repo, "main") }

func requestDir(dest, ns, promise, name string) string {
	return dest + "/resources/" + ns + "/" + promise + "/" + name
}

// metric returns the sum of a counter of the controller's metrics registry
// (the controller runs in this process).
func metric(t *testing.T, name string) float64 {
	t.Helper()
	families, err := metrics.Registry.Gather()
	require.NoError(t, err)
	var sum float64
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			sum += m.GetCounter().GetValue()
		}
	}
	return sum
}
