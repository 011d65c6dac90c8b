package controller

import (
	"testing"

	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

func TestSortByNamespaceAndName(t *testing.T) {
	obj := func(ns, name string) unstructured.Unstructured {
		u := unstructured.Unstructured{Object: map[string]any{}}
		u.SetNamespace(ns)
		u.SetName(name)
		return u
	}
	items := []unstructured.Unstructured{obj("b", "a"), obj("a", "z"), obj("", "c"), obj("a", "b"), obj("b", "a2")}
	sortByNamespaceAndName(items)
	var got []string
	for _, u := range items {
		got = append(got, u.GetNamespace()+"/"+u.GetName())
	}
	require.Equal(t, []string{"/c", "a/b", "a/z", "b/a", "b/a2"}, got)
	sortByNamespaceAndName(nil)
}
