package pipelines

import (
	"fmt"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"

	"promised.dev/promised/api/v1alpha1"
)

// PromiseObject is a Promise as the input object of its own workflows.
func PromiseObject(p *v1alpha1.Promise) (*unstructured.Unstructured, error) {
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(p)
	if err != nil {
		return nil, fmt.Errorf("promise %q: %w", p.Name, err)
	}
	u := &unstructured.Unstructured{Object: m}
	u.SetAPIVersion(v1alpha1.GroupVersion.String())
	u.SetKind("Promise")
	return u, nil
}
