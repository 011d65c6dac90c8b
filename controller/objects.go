package controller

import (
	"context"
	"fmt"
	"sort"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"promised.dev/promised/api/v1alpha1"
)

// promiseObjects gives in-process stages read access to requests, served
// from the controller's cache. Only kinds a Promise serves can be read:
// stages see the platform's requests, not the cluster's Secrets.
type promiseObjects struct {
	client client.Reader
}

// List implements stage.Objects.
func (o promiseObjects) List(ctx context.Context, apiVersion, kind string) ([]unstructured.Unstructured, error) {
	promises := &v1alpha1.PromiseList{}
	if err := o.client.List(ctx, promises); err != nil {
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
	list := &unstructured.UnstructuredList{}
	list.SetAPIVersion(apiVersion)
	list.SetKind(kind + "List")
	if err := o.client.List(ctx, list); err != nil {
		return nil, fmt.Errorf("listing %s: %w", kind, err)
	}
	sort.Slice(list.Items, func(i, j int) bool {
		a, b := list.Items[i], list.Items[j]
		if a.GetNamespace() != b.GetNamespace() {
			return a.GetNamespace() < b.GetNamespace()
		}
		return a.GetName() < b.GetName()
	})
	return list.Items, nil
}
