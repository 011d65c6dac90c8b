package controller

import (
	"testing"

	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"
)

func viewObject(ns, name, rv string) *unstructured.Unstructured {
	u := &unstructured.Unstructured{Object: map[string]any{}}
	u.SetNamespace(ns)
	u.SetName(name)
	u.SetResourceVersion(rv)
	return u
}

func viewKeys(items []unstructured.Unstructured) []string {
	var out []string
	for _, u := range items {
		out = append(out, u.GetNamespace()+"/"+u.GetName()+"@"+u.GetResourceVersion())
	}
	return out
}

// The view's order and contents follow its events; the informer that
// delivers them in the controller is tested end to end by the
// ApiAggregatorTarget flows.
func TestKindViewKeepsNamespaceAndNameOrder(t *testing.T) {
	v := &kindView{objs: map[types.NamespacedName]*unstructured.Unstructured{}}
	// "a-b" sorts after "a" as a namespace, though "a-b/x" < "a/x" as text.
	v.put(viewObject("b", "x", "1"))
	v.put(viewObject("a-b", "x", "1"))
	v.put(viewObject("a", "z", "1"))
	v.put(viewObject("a", "y", "1"))
	v.put(viewObject("a", "y", "2")) // an update replaces, does not add
	v.put("not an object")
	require.Equal(t, []string{"a/y@2", "a/z@1", "a-b/x@1", "b/x@1"}, viewKeys(v.snapshot()))

	v.remove(viewObject("a", "z", "1"))
	v.remove(toolscache.DeletedFinalStateUnknown{Key: "b/x", Obj: viewObject("b", "x", "1")})
	v.remove(viewObject("c", "missing", "1"))
	require.Equal(t, []string{"a/y@2", "a-b/x@1"}, viewKeys(v.snapshot()))
}

func TestSortByNamespaceAndName(t *testing.T) {
	items := []unstructured.Unstructured{*viewObject("b", "a", ""), *viewObject("a", "z", ""), *viewObject("", "c", ""), *viewObject("a-b", "b", ""), *viewObject("a", "b", "")}
	sortByNamespaceAndName(items)
	require.Equal(t, []string{"/c@", "a/b@", "a/z@", "a-b/b@", "b/a@"}, viewKeys(items))
	sortByNamespaceAndName(nil)
}
