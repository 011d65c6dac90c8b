package pull_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"promised.dev/promised/statestore/pull"
)

var ids atomic.Int64

// world is one test's corner of the cluster: a destination name and a
// namespace of its own.
type world struct {
	t    *testing.T
	id   string
	ns   string
	kube kubernetes.Interface
	dyn  dynamic.Interface
}

func newWorld(t *testing.T) *world {
	t.Helper()
	id := fmt.Sprintf("t%d", ids.Add(1))
	kube, err := kubernetes.NewForConfig(cfg)
	require.NoError(t, err)
	dyn, err := dynamic.NewForConfig(cfg)
	require.NoError(t, err)
	return &world{t: t, id: id, ns: "ns-" + id, kube: kube, dyn: dyn}
}

func (w *world) ctx() context.Context { return context.Background() }

// applier returns an Applier for this world's destination, with retries
// short enough for tests.
func (w *world) applier(mut ...func(*pull.Options)) *pull.Applier {
	w.t.Helper()
	opts := pull.Options{Destination: "dest-" + w.id, Retry: pull.RetryPolicy{Attempts: 3, Backoff: 50 * time.Millisecond}}
	for _, m := range mut {
		m(&opts)
	}
	a, err := pull.NewApplier(cfg, opts)
	require.NoError(w.t, err)
	return a
}

func (w *world) sync(a *pull.Applier, files map[string]string) pull.Report {
	w.t.Helper()
	rep, err := a.Sync(w.ctx(), bytesOf(files))
	require.NoError(w.t, err)
	var b strings.Builder
	require.NoError(w.t, rep.WriteText(&b))
	w.t.Logf("sync report:\n%s", b.String())
	return rep
}

func bytesOf(files map[string]string) map[string][]byte {
	out := map[string][]byte{}
	for k, v := range files {
		out[k] = []byte(v)
	}
	return out
}

func (w *world) namespaceYAML() string {
	return "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: " + w.ns + "\n"
}

func (w *world) configMapYAML(name, value string) string {
	return fmt.Sprintf("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: %s\n  namespace: %s\ndata:\n  value: %q\n", name, w.ns, value)
}

func (w *world) configMap(name string) (*corev1.ConfigMap, error) {
	return w.kube.CoreV1().ConfigMaps(w.ns).Get(w.ctx(), name, metav1.GetOptions{})
}

// actions maps each object (by its String) to what the sync did with it.
func actions(rep pull.Report) map[string]pull.Action {
	out := map[string]pull.Action{}
	for _, o := range rep.Objects {
		out[o.Object.String()] = o.Action
	}
	return out
}

func result(t *testing.T, rep pull.Report, object string) pull.ObjectResult {
	t.Helper()
	for _, o := range rep.Objects {
		if o.Object.String() == object {
			return o
		}
	}
	t.Fatalf("no result for %s in %+v", object, rep.Objects)
	return pull.ObjectResult{}
}

func (w *world) cm(name string) string { return "ConfigMap " + w.ns + "/" + name }

func TestApplyCreatesObjectsWithFieldManagerAndLabel(t *testing.T) {
	w := newWorld(t)
	a := w.applier()
	rep := w.sync(a, map[string]string{
		"ns.yaml":                   w.namespaceYAML(),
		"resources/app/config.yaml": w.configMapYAML("app", "one") + "---\n" + w.configMapYAML("app-2", "two"),
	})
	require.NoError(t, rep.Err())
	require.Equal(t, map[string]pull.Action{
		"Namespace " + w.ns: pull.ActionApplied,
		w.cm("app"):         pull.ActionApplied,
		w.cm("app-2"):       pull.ActionApplied,
	}, actions(rep))
	require.Equal(t, "resources/app/config.yaml#2", result(t, rep, w.cm("app-2")).File)

	cm, err := w.configMap("app")
	require.NoError(t, err)
	require.Equal(t, "one", cm.Data["value"])
	require.Equal(t, pull.ManagedBy, cm.Labels[pull.LabelManagedBy])
	var managers []string
	for _, mf := range cm.ManagedFields {
		managers = append(managers, fmt.Sprintf("%s/%s", mf.Manager, mf.Operation))
	}
	require.Equal(t, []string{"promised/Apply"}, managers, "applied with server-side apply by field manager promised, and nothing else")

	// The inventory records both objects, in its own namespace.
	inv, err := w.kube.CoreV1().ConfigMaps(pull.DefaultInventoryNamespace).Get(w.ctx(), pull.InventoryName("dest-"+w.id), metav1.GetOptions{})
	require.NoError(t, err)
	require.Contains(t, inv.Data["objects"], `"name":"app-2"`)
	require.Equal(t, "dest-"+w.id, inv.Annotations[pull.AnnotationDestination])

	// A namespaced object without a namespace lands in "default".
	rep = w.sync(w.applier(func(o *pull.Options) { o.Destination = "defaults-" + w.id }), map[string]string{
		"cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: no-ns-" + w.id + "\n",
	})
	require.Equal(t, pull.ActionApplied, result(t, rep, "ConfigMap default/no-ns-"+w.id).Action)
}

// crdYAML is a namespaced CRD of kind Gadget in a group of this world.
func (w *world) crdYAML() (string, schema.GroupVersionResource) {
	group := w.id + ".pull.test.promised.dev"
	return fmt.Sprintf(`apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: gadgets.%s
spec:
  group: %s
  scope: Namespaced
  names: {kind: Gadget, plural: gadgets, singular: gadget, listKind: GadgetList}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              size: {type: integer}
`, group, group), schema.GroupVersionResource{Group: group, Version: "v1", Resource: "gadgets"}
}

func (w *world) gadgetYAML(name string, size int) string {
	return fmt.Sprintf("apiVersion: %s.pull.test.promised.dev/v1\nkind: Gadget\nmetadata:\n  name: %s\n  namespace: %s\nspec:\n  size: %d\n", w.id, name, w.ns, size)
}

func TestCRDsAndNamespacesGoFirst(t *testing.T) {
	w := newWorld(t)
	crd, gvr := w.crdYAML()
	// Path order puts the custom resource and the ConfigMap before the CRD
	// and the namespace they need.
	files := map[string]string{
		"a/gadget.yaml": w.gadgetYAML("g1", 3),
		"b/cm.yaml":     w.configMapYAML("cm", "x"),
		"y/crd.yaml":    crd,
		"z/ns.yaml":     w.namespaceYAML(),
	}
	rep := w.sync(w.applier(), files)
	require.NoError(t, rep.Err())
	var order []string
	for _, o := range rep.Objects {
		require.Equal(t, pull.ActionApplied, o.Action, o.Object.String())
		order = append(order, o.Object.Kind)
	}
	require.Equal(t, []string{"CustomResourceDefinition", "Namespace", "Gadget", "ConfigMap"}, order)

	g, err := w.dyn.Resource(gvr).Namespace(w.ns).Get(w.ctx(), "g1", metav1.GetOptions{})
	require.NoError(t, err)
	size, _, _ := unstructured.NestedInt64(g.Object, "spec", "size")
	require.Equal(t, int64(3), size)
}

func TestPruneDeletesOnlyWhatSyncCreated(t *testing.T) {
	w := newWorld(t)
	a := w.applier()
	_, err := w.kube.CoreV1().Namespaces().Create(w.ctx(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: w.ns}}, metav1.CreateOptions{})
	require.NoError(t, err)
	// "adopted" exists before sync ever applies it.
	_, err = w.kube.CoreV1().ConfigMaps(w.ns).Create(w.ctx(), &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "adopted"}, Data: map[string]string{"by": "hand"}}, metav1.CreateOptions{})
	require.NoError(t, err)

	files := map[string]string{
		"keep.yaml":      w.configMapYAML("keep", "1"),
		"drop.yaml":      w.configMapYAML("drop", "1"),
		"adopted.yaml":   w.configMapYAML("adopted", "1"),
		"recreated.yaml": w.configMapYAML("recreated", "1"),
		"ns.yaml":        w.namespaceYAML(),
	}
	rep := w.sync(a, files)
	require.NoError(t, rep.Err())
	require.Equal(t, pull.ActionApplied, result(t, rep, w.cm("adopted")).Action, "a pre-existing object in the folder is applied")

	// "recreated" is deleted and created again by someone else.
	require.NoError(t, w.kube.CoreV1().ConfigMaps(w.ns).Delete(w.ctx(), "recreated", metav1.DeleteOptions{}))
	_, err = w.kube.CoreV1().ConfigMaps(w.ns).Create(w.ctx(), &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "recreated"}}, metav1.CreateOptions{})
	require.NoError(t, err)

	// Everything but "keep" leaves the folder; the namespace too, but
	// sync did not create it either.
	rep = w.sync(a, map[string]string{"keep.yaml": files["keep.yaml"]})
	require.NoError(t, rep.Err())
	require.Equal(t, map[string]pull.Action{
		w.cm("keep"):        pull.ActionUnchanged,
		w.cm("drop"):        pull.ActionPruned,
		w.cm("adopted"):     pull.ActionKept,
		w.cm("recreated"):   pull.ActionKept,
		"Namespace " + w.ns: pull.ActionKept,
	}, actions(rep))
	require.Contains(t, result(t, rep, w.cm("adopted")).Reason, "existed before sync")
	require.Contains(t, result(t, rep, w.cm("recreated")).Reason, "re-created outside sync")

	_, err = w.configMap("drop")
	require.True(t, apierrors.IsNotFound(err), "drop was pruned: %v", err)
	for _, name := range []string{"keep", "adopted", "recreated"} {
		_, err := w.configMap(name)
		require.NoError(t, err, "%s must still exist", name)
	}
	_, err = w.kube.CoreV1().Namespaces().Get(w.ctx(), w.ns, metav1.GetOptions{})
	require.NoError(t, err)

	// Kept objects are no longer tracked: the next sync says nothing of them.
	rep = w.sync(a, map[string]string{"keep.yaml": files["keep.yaml"]})
	require.Equal(t, map[string]pull.Action{w.cm("keep"): pull.ActionUnchanged}, actions(rep))

	// A sync-created object whose label someone removed is left alone too.
	rep = w.sync(a, map[string]string{"keep.yaml": files["keep.yaml"], "labelled.yaml": w.configMapYAML("opt-out", "1")})
	require.NoError(t, rep.Err())
	cm, err := w.configMap("opt-out")
	require.NoError(t, err)
	delete(cm.Labels, pull.LabelManagedBy)
	_, err = w.kube.CoreV1().ConfigMaps(w.ns).Update(w.ctx(), cm, metav1.UpdateOptions{})
	require.NoError(t, err)
	rep = w.sync(a, map[string]string{"keep.yaml": files["keep.yaml"]})
	require.Equal(t, pull.ActionKept, result(t, rep, w.cm("opt-out")).Action)
	_, err = w.configMap("opt-out")
	require.NoError(t, err)
}

func TestPruneRemovesCustomResourcesBeforeTheirCRDAndNamespace(t *testing.T) {
	w := newWorld(t)
	a := w.applier()
	crd, gvr := w.crdYAML()
	rep := w.sync(a, map[string]string{"crd.yaml": crd, "ns.yaml": w.namespaceYAML(), "g.yaml": w.gadgetYAML("g", 1)})
	require.NoError(t, rep.Err())

	rep, err := a.Sync(w.ctx(), nil)
	require.ErrorIs(t, err, pull.ErrEmptySource, "an empty folder must not prune everything by default")
	require.Empty(t, rep.Objects)
	_, err = w.dyn.Resource(gvr).Namespace(w.ns).Get(w.ctx(), "g", metav1.GetOptions{})
	require.NoError(t, err)

	rep = w.sync(w.applier(func(o *pull.Options) { o.AllowEmpty = true }), nil)
	require.NoError(t, rep.Err())
	var order []string
	for _, o := range rep.Objects {
		require.Equal(t, pull.ActionPruned, o.Action, o.Object.String())
		order = append(order, o.Object.Kind)
	}
	require.Equal(t, []string{"Gadget", "Namespace", "CustomResourceDefinition"}, order)
}

func TestPruneKeepsCRDsAndNamespacesHoldingOthersObjects(t *testing.T) {
	w := newWorld(t)
	a := w.applier(func(o *pull.Options) { o.AllowEmpty = true })
	crd, gvr := w.crdYAML()
	rep := w.sync(a, map[string]string{"crd.yaml": crd, "ns.yaml": w.namespaceYAML(), "g.yaml": w.gadgetYAML("ours", 1), "cm.yaml": w.configMapYAML("ours", "1")})
	require.NoError(t, rep.Err())

	// A developer puts their own things in sync's namespace and kind.
	theirs := &unstructured.Unstructured{Object: map[string]any{"apiVersion": gvr.GroupVersion().String(), "kind": "Gadget",
		"metadata": map[string]any{"name": "theirs", "namespace": "default"}, "spec": map[string]any{"size": int64(9)}}}
	_, err := w.dyn.Resource(gvr).Namespace("default").Create(w.ctx(), theirs, metav1.CreateOptions{})
	require.NoError(t, err)
	_, err = w.kube.CoreV1().Secrets(w.ns).Create(w.ctx(), &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "their-secret"}}, metav1.CreateOptions{})
	require.NoError(t, err)
	// A dependent (it has an owner) does not count: its owner decides.
	cm, err := w.configMap("ours")
	require.NoError(t, err)
	_, err = w.kube.CoreV1().ConfigMaps(w.ns).Create(w.ctx(), &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "child",
		OwnerReferences: []metav1.OwnerReference{{APIVersion: "v1", Kind: "ConfigMap", Name: "ours", UID: cm.UID}}}}, metav1.CreateOptions{})
	require.NoError(t, err)

	rep = w.sync(a, nil)
	require.NoError(t, rep.Err())
	require.Equal(t, pull.ActionPruned, result(t, rep, w.cm("ours")).Action)
	require.Equal(t, pull.ActionPruned, result(t, rep, "Gadget."+gvr.Group+" "+w.ns+"/ours").Action)
	nsRes := result(t, rep, "Namespace "+w.ns)
	require.Equal(t, pull.ActionKept, nsRes.Action)
	require.Equal(t, "not deleted yet: deleting it would delete Secret "+w.ns+"/their-secret, which sync did not create", nsRes.Reason)
	crdRes := result(t, rep, "CustomResourceDefinition.apiextensions.k8s.io gadgets."+gvr.Group)
	require.Equal(t, pull.ActionKept, crdRes.Action)
	require.Contains(t, crdRes.Reason, "Gadget."+gvr.Group+" default/theirs")

	// They stay tracked: once the developer's things are gone, they go.
	require.NoError(t, w.kube.CoreV1().Secrets(w.ns).Delete(w.ctx(), "their-secret", metav1.DeleteOptions{}))
	require.NoError(t, w.dyn.Resource(gvr).Namespace("default").Delete(w.ctx(), "theirs", metav1.DeleteOptions{}))
	require.Eventually(t, func() bool {
		// Our own gadget's delete is asynchronous too.
		l, err := w.dyn.Resource(gvr).List(w.ctx(), metav1.ListOptions{})
		return err == nil && len(l.Items) == 0
	}, 10*time.Second, 50*time.Millisecond)
	rep = w.sync(a, nil)
	require.Equal(t, map[string]pull.Action{
		"Namespace " + w.ns: pull.ActionPruned,
		"CustomResourceDefinition.apiextensions.k8s.io gadgets." + gvr.Group: pull.ActionPruned,
	}, actions(rep))
}

func TestPartialFailureIsReportedAndTheRestApplied(t *testing.T) {
	w := newWorld(t)
	a := w.applier()
	bad := fmt.Sprintf("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: bad\n  namespace: %s\ndata:\n  \"not a valid key!\": x\n", w.ns)
	start := time.Now()
	rep := w.sync(a, map[string]string{
		"0-ns.yaml":    w.namespaceYAML(),
		"a-good.yaml":  w.configMapYAML("good-a", "1"),
		"b-bad.yaml":   bad,
		"c-good.yaml":  w.configMapYAML("good-c", "1"),
		"d-broken.yml": "apiVersion: v1\nkind: ConfigMap\nmetadata: [not, a, mapping\n",
		"README.md":    "not for the cluster",
	})
	// The apiserver's verdict is final: no retry rounds were spent on it.
	require.Less(t, time.Since(start), 5*time.Second)
	require.EqualError(t, rep.Err(), "destination dest-"+w.id+": 2 of 5 objects failed")
	badRes := result(t, rep, w.cm("bad"))
	require.Equal(t, pull.ActionFailed, badRes.Action)
	require.Contains(t, badRes.Reason, "Invalid value")
	require.Contains(t, badRes.Reason, "not a valid key!")
	require.Equal(t, "b-bad.yaml#1", badRes.File)
	require.Equal(t, pull.ActionApplied, result(t, rep, w.cm("good-a")).Action)
	require.Equal(t, pull.ActionApplied, result(t, rep, w.cm("good-c")).Action)
	broken := rep.Objects[0]
	require.Equal(t, pull.ActionFailed, broken.Action)
	require.Equal(t, "d-broken.yml#1", broken.File)
	require.Contains(t, broken.Reason, "parsing YAML")
	require.Contains(t, rep.Notes, "skipped README.md: not a .yaml or .yml file")
	for _, name := range []string{"good-a", "good-c"} {
		_, err := w.configMap(name)
		require.NoError(t, err)
	}
	_, err := w.configMap("bad")
	require.True(t, apierrors.IsNotFound(err))

	// While a document cannot be read, nothing is pruned: the object that
	// left the folder might be in it.
	rep = w.sync(a, map[string]string{
		"0-ns.yaml":    w.namespaceYAML(),
		"a-good.yaml":  w.configMapYAML("good-a", "1"),
		"d-broken.yml": "apiVersion: v1\nkind: ConfigMap\nmetadata: [not, a, mapping\n",
	})
	require.Contains(t, rep.Notes, "prune held back for 1 object(s): 1 document(s) could not be read, so what left the folder is not known")
	_, err = w.configMap("good-c")
	require.NoError(t, err)
	// Once it reads, prune catches up.
	rep = w.sync(a, map[string]string{"0-ns.yaml": w.namespaceYAML(), "a-good.yaml": w.configMapYAML("good-a", "1")})
	require.NoError(t, rep.Err())
	require.Equal(t, pull.ActionPruned, result(t, rep, w.cm("good-c")).Action)
}

func TestMissingNamespaceFailsAtOnce(t *testing.T) {
	w := newWorld(t)
	start := time.Now()
	rep := w.sync(w.applier(func(o *pull.Options) { o.Retry = pull.RetryPolicy{Attempts: 5, Backoff: time.Second} }), map[string]string{
		"cm.yaml": w.configMapYAML("homeless", "1"),
	})
	require.Less(t, time.Since(start), time.Second, "no retry rounds for a namespace nothing creates")
	res := result(t, rep, w.cm("homeless"))
	require.Equal(t, pull.ActionFailed, res.Action)
	require.Equal(t, fmt.Sprintf("namespace %q does not exist and the folder does not create it", w.ns), res.Reason)
}

func TestUnknownKindIsRetriedThenReported(t *testing.T) {
	w := newWorld(t)
	rep := w.sync(w.applier(), map[string]string{
		"ns.yaml":    w.namespaceYAML(),
		"ghost.yaml": "apiVersion: nowhere.promised.dev/v1\nkind: Ghost\nmetadata:\n  name: boo\n  namespace: " + w.ns + "\n",
		"dup-1.yaml": w.configMapYAML("dup", "first"),
		"dup-2.yaml": w.configMapYAML("dup", "second"),
		"empty.yaml": "# nothing here\n---\n",
	})
	ghost := result(t, rep, "Ghost.nowhere.promised.dev "+w.ns+"/boo")
	require.Equal(t, pull.ActionFailed, ghost.Action)
	require.Contains(t, ghost.Reason, "does not serve nowhere.promised.dev/v1, Kind=Ghost")
	var dups []pull.ObjectResult
	for _, o := range rep.Objects {
		if o.Object.Name == "dup" {
			dups = append(dups, o)
		}
	}
	require.Len(t, dups, 2)
	require.Equal(t, pull.ActionApplied, dups[0].Action)
	require.Equal(t, pull.ActionFailed, dups[1].Action)
	require.Equal(t, "defined again: dup-1.yaml#1 already defines it and is applied instead", dups[1].Reason)
	cm, err := w.configMap("dup")
	require.NoError(t, err)
	require.Equal(t, "first", cm.Data["value"])
}

func TestSecondSyncChangesNothing(t *testing.T) {
	w := newWorld(t)
	a := w.applier()
	crd, gvr := w.crdYAML()
	files := map[string]string{
		"crd.yaml": crd, "ns.yaml": w.namespaceYAML(), "g.yaml": w.gadgetYAML("g", 2),
		"cms.yaml": w.configMapYAML("one", "1") + "---\n" + w.configMapYAML("two", "2"),
	}
	rep := w.sync(a, files)
	require.NoError(t, rep.Err())
	require.Equal(t, 5, rep.Count(pull.ActionApplied))

	versions := func() map[string]string {
		out := map[string]string{}
		for _, name := range []string{"one", "two"} {
			cm, err := w.configMap(name)
			require.NoError(t, err)
			out["cm/"+name] = cm.ResourceVersion
		}
		ns, err := w.kube.CoreV1().Namespaces().Get(w.ctx(), w.ns, metav1.GetOptions{})
		require.NoError(t, err)
		out["ns"] = ns.ResourceVersion
		g, err := w.dyn.Resource(gvr).Namespace(w.ns).Get(w.ctx(), "g", metav1.GetOptions{})
		require.NoError(t, err)
		out["gadget"] = g.GetResourceVersion()
		c, err := w.dyn.Resource(schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}).Get(w.ctx(), "gadgets."+gvr.Group, metav1.GetOptions{})
		require.NoError(t, err)
		out["crd"] = c.GetResourceVersion()
		inv, err := w.kube.CoreV1().ConfigMaps(pull.DefaultInventoryNamespace).Get(w.ctx(), pull.InventoryName("dest-"+w.id), metav1.GetOptions{})
		require.NoError(t, err)
		out["inventory"] = inv.ResourceVersion
		return out
	}
	before := versions()
	// A new Applier as well: nothing may depend on memory of the last run.
	for _, ap := range []*pull.Applier{a, w.applier()} {
		rep = w.sync(ap, files)
		require.NoError(t, rep.Err())
		require.Equal(t, 5, rep.Count(pull.ActionUnchanged), "every object unchanged: %+v", rep.Objects)
		require.Len(t, rep.Objects, 5)
		require.Equal(t, before, versions(), "a sync that changes nothing must write nothing")
	}

	// A real change is an apply, of that object alone.
	files["cms.yaml"] = w.configMapYAML("one", "1") + "---\n" + w.configMapYAML("two", "changed")
	rep = w.sync(a, files)
	require.Equal(t, 1, rep.Count(pull.ActionApplied))
	require.Equal(t, pull.ActionApplied, result(t, rep, w.cm("two")).Action)
	after := versions()
	require.NotEqual(t, before["cm/two"], after["cm/two"])
	require.Equal(t, before["cm/one"], after["cm/one"])
	require.Equal(t, before["inventory"], after["inventory"], "the same objects: the inventory is not rewritten")
}

func TestManualEditIsTakenBack(t *testing.T) {
	w := newWorld(t)
	a := w.applier()
	files := map[string]string{"ns.yaml": w.namespaceYAML(), "cm.yaml": w.configMapYAML("drift", "git")}
	w.sync(a, files)
	cm, err := w.configMap("drift")
	require.NoError(t, err)
	cm.Data["value"] = "edited by hand"
	_, err = w.kube.CoreV1().ConfigMaps(w.ns).Update(w.ctx(), cm, metav1.UpdateOptions{FieldManager: "kubectl-edit"})
	require.NoError(t, err)

	rep := w.sync(a, files)
	require.Equal(t, pull.ActionApplied, result(t, rep, w.cm("drift")).Action)
	cm, err = w.configMap("drift")
	require.NoError(t, err)
	require.Equal(t, "git", cm.Data["value"])
}

func TestInterruptedSyncStillRecordsWhatItCreated(t *testing.T) {
	w := newWorld(t)
	// The ghost kind makes the sync wait between retries; the context ends
	// during that wait, after the ConfigMap was created.
	a := w.applier(func(o *pull.Options) { o.Retry = pull.RetryPolicy{Attempts: 10, Backoff: time.Second} })
	ctx, cancel := context.WithTimeout(w.ctx(), 1500*time.Millisecond)
	defer cancel()
	rep, err := a.Sync(ctx, bytesOf(map[string]string{
		"ns.yaml":    w.namespaceYAML(),
		"cm.yaml":    w.configMapYAML("made", "1"),
		"ghost.yaml": "apiVersion: nowhere.promised.dev/v1\nkind: Ghost\nmetadata:\n  name: boo\n  namespace: " + w.ns + "\n",
	}))
	require.True(t, errors.Is(err, context.DeadlineExceeded), "got %v", err)
	require.Equal(t, pull.ActionApplied, result(t, rep, w.cm("made")).Action)

	// It was recorded, so removing it from the folder prunes it.
	rep = w.sync(w.applier(), map[string]string{"ns.yaml": w.namespaceYAML()})
	require.Equal(t, pull.ActionPruned, result(t, rep, w.cm("made")).Action)
}
