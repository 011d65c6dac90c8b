package controller

import (
	"context"
	"fmt"
	"slices"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"promised.dev/promised/api/v1alpha1"
)

// promiseObjects gives in-process stages read access to requests, served
// from the controller's cache. Only kinds a Promise serves can be read:
// stages see the platform's requests, not the cluster's Secrets.
type promiseObjects struct {
	client client.Reader
	// kinds has the ordered views of the kinds being served; set once the
	// request controllers exist.
	kinds *Kinds
}

// List implements stage.Objects.
func (o *promiseObjects) List(ctx context.Context, apiVersion, kind string) ([]unstructured.Unstructured, error) {
	promises := &v1alpha1.PromiseList{}
	// Only read: no need for the cache to copy every promise.
	if err := o.client.List(ctx, promises, client.UnsafeDisableDeepCopy); err != nil {
		return nil, fmt.Errorf("listing promises: %w", err)
	}
	served := false
	for _, p := range promises.Items {
		if p.Status.APIVersion == apiVersion && p.Status.Kind == kind {
			served = true
			break
		}
	}
	if !served {
		return nil, fmt.Errorf("%s %s is not served by any promise; stages may only read requests", apiVersion, kind)
	}
	if o.kinds != nil {
		if v := o.kinds.view(schema.FromAPIVersionAndKind(apiVersion, kind)); v != nil {
			if items, ok := v.list(); ok {
				return items, nil
			}
		}
	}
	list := &unstructured.UnstructuredList{}
	list.SetAPIVersion(apiVersion)
	list.SetKind(kind + "List")
	// Stages only read them (stage.Objects says so), and a target stage
	// lists every target: a deep copy of each, for each run, was the
	// largest cost of a run at thousands of targets.
	if err := o.client.List(ctx, list, client.UnsafeDisableDeepCopy); err != nil {
		return nil, fmt.Errorf("listing %s: %w", kind, err)
	}
	sortByNamespaceAndName(list.Items)
	return list.Items, nil
}

// sortByNamespaceAndName sorts objects by namespace, then name, reading
// each object's keys once (the views keep their order; this serves a kind
// before its view has synced).
func sortByNamespaceAndName(items []unstructured.Unstructured) {
	type keyed struct {
		key types.NamespacedName
		obj unstructured.Unstructured
	}
	ks := make([]keyed, len(items))
	for i := range items {
		// One lookup of metadata instead of one per field: the objects'
		// maps are scattered over the heap, and each lookup misses the CPU
		// cache.
		meta, _ := items[i].Object["metadata"].(map[string]any)
		ns, _ := meta["namespace"].(string)
		name, _ := meta["name"].(string)
		ks[i] = keyed{key: types.NamespacedName{Namespace: ns, Name: name}, obj: items[i]}
	}
	slices.SortFunc(ks, func(a, b keyed) int { return compareKeys(a.key, b.key) })
	for i := range ks {
		items[i] = ks[i].obj
	}
}
