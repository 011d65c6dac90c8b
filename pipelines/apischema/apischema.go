// Package apischema reads the API a Promise publishes (its spec.api CRD)
// and judges requests against it the way the kube-apiserver would: the
// served version, the structural defaults, the OpenAPI schema. Local runs
// use it so that `promised render` sees the same request the controller
// would.
package apischema

import (
	"encoding/json"
	"fmt"
	"strings"

	"k8s.io/apiextensions-apiserver/pkg/apis/apiextensions"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/defaulting"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/validation"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"promised.dev/promised/api/v1alpha1"
)

// CRD decodes a Promise's spec.api and checks it is a CustomResourceDefinition
// with at least one served version and a group and kind.
func CRD(p *v1alpha1.Promise) (*apiextensionsv1.CustomResourceDefinition, error) {
	if p.Spec.API == nil || len(p.Spec.API.Raw) == 0 {
		return nil, fmt.Errorf("promise %q: spec.api is empty", p.Name)
	}
	crd := &apiextensionsv1.CustomResourceDefinition{}
	if err := json.Unmarshal(p.Spec.API.Raw, crd); err != nil {
		return nil, fmt.Errorf("promise %q: spec.api is not a CustomResourceDefinition: %w", p.Name, err)
	}
	switch {
	case crd.Kind != "CustomResourceDefinition" || !strings.HasPrefix(crd.APIVersion, "apiextensions.k8s.io/"):
		return nil, fmt.Errorf("promise %q: spec.api has apiVersion %q kind %q: want apiextensions.k8s.io/v1 CustomResourceDefinition", p.Name, crd.APIVersion, crd.Kind)
	case crd.Spec.Group == "" || crd.Spec.Names.Kind == "" || crd.Spec.Names.Plural == "":
		return nil, fmt.Errorf("promise %q: spec.api needs spec.group, spec.names.kind and spec.names.plural", p.Name)
	case crd.Name != crd.Spec.Names.Plural+"."+crd.Spec.Group:
		return nil, fmt.Errorf("promise %q: spec.api metadata.name is %q: must be %q (<plural>.<group>)", p.Name, crd.Name, crd.Spec.Names.Plural+"."+crd.Spec.Group)
	}
	for _, v := range crd.Spec.Versions {
		if v.Served {
			return crd, nil
		}
	}
	return nil, fmt.Errorf("promise %q: spec.api serves no version", p.Name)
}

// Check returns obj with the CRD's defaults applied, or an error listing
// every field the schema refuses.
func Check(crd *apiextensionsv1.CustomResourceDefinition, obj *unstructured.Unstructured) (*unstructured.Unstructured, error) {
	gvk := obj.GroupVersionKind()
	ref := fmt.Sprintf("%s %s/%s", gvk.Kind, obj.GetNamespace(), obj.GetName())
	if gvk.Group != crd.Spec.Group || gvk.Kind != crd.Spec.Names.Kind {
		return nil, fmt.Errorf("%s: apiVersion %q kind %q is not the promise's API (%s, kind %s)", ref, obj.GetAPIVersion(), gvk.Kind, crd.Spec.Group, crd.Spec.Names.Kind)
	}
	var version *apiextensionsv1.CustomResourceDefinitionVersion
	for i := range crd.Spec.Versions {
		if crd.Spec.Versions[i].Name == gvk.Version && crd.Spec.Versions[i].Served {
			version = &crd.Spec.Versions[i]
		}
	}
	if version == nil {
		return nil, fmt.Errorf("%s: version %q is not served by %s", ref, gvk.Version, crd.Name)
	}
	if version.Schema == nil || version.Schema.OpenAPIV3Schema == nil {
		return obj, nil
	}
	internal := &apiextensions.JSONSchemaProps{}
	if err := apiextensionsv1.Convert_v1_JSONSchemaProps_To_apiextensions_JSONSchemaProps(version.Schema.OpenAPIV3Schema, internal, nil); err != nil {
		return nil, fmt.Errorf("reading the schema of %s: %w", crd.Name, err)
	}
	out := obj.DeepCopy()
	if structural, err := schema.NewStructural(internal); err == nil {
		defaulting.Default(out.Object, structural)
	}
	validator, _, err := validation.NewSchemaValidator(internal)
	if err != nil {
		return nil, fmt.Errorf("reading the schema of %s: %w", crd.Name, err)
	}
	if errs := validation.ValidateCustomResource(nil, out.Object, validator); len(errs) > 0 {
		return nil, fmt.Errorf("%s is refused by the promise's schema: %w", ref, errs.ToAggregate())
	}
	return out, nil
}
