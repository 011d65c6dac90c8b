package controller

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"promised.dev/promised/api/v1alpha1"
	"promised.dev/promised/pipelines/apischema"
)

// dependenciesFile holds a promise's dependencies in its folder. Pipeline
// names cannot contain a dot, so it never collides with a pipeline's
// folder.
const dependenciesFile = "dependencies.yaml"

// annotationAPIDigest records on a CRD the digest of the spec the
// controller installed from its promise.
const annotationAPIDigest = "promised.dev/api-digest"

// parseAPI returns the CRD to install for a promise: its spec.api with a
// status subresource and an open status schema on every version, because
// the controller and the pipelines write status to every request.
func parseAPI(p *v1alpha1.Promise) (*apiextensionsv1.CustomResourceDefinition, error) {
	crd, err := apischema.CRD(p)
	if err != nil {
		return nil, err
	}
	preserve := true
	for i := range crd.Spec.Versions {
		v := &crd.Spec.Versions[i]
		if v.Subresources == nil {
			v.Subresources = &apiextensionsv1.CustomResourceSubresources{}
		}
		v.Subresources.Status = &apiextensionsv1.CustomResourceSubresourceStatus{}
		if v.Schema == nil || v.Schema.OpenAPIV3Schema == nil {
			v.Schema = &apiextensionsv1.CustomResourceValidation{OpenAPIV3Schema: &apiextensionsv1.JSONSchemaProps{Type: "object", XPreserveUnknownFields: &preserve}}
		}
		s := v.Schema.OpenAPIV3Schema
		if s.Properties == nil {
			s.Properties = map[string]apiextensionsv1.JSONSchemaProps{}
		}
		s.Properties["status"] = apiextensionsv1.JSONSchemaProps{Type: "object", XPreserveUnknownFields: &preserve}
	}
	crd.Labels = map[string]string{LabelPromise: p.Name}
	spec, err := json.Marshal(crd.Spec)
	if err != nil {
		return nil, fmt.Errorf("promise %q: encoding spec.api: %w", p.Name, err)
	}
	sum := sha256.Sum256(spec)
	crd.Annotations = map[string]string{annotationAPIDigest: hex.EncodeToString(sum[:])}
	crd.ResourceVersion = ""
	crd.Status = apiextensionsv1.CustomResourceDefinitionStatus{}
	return crd, nil
}

// servedGVK is the version requests are read and written in: the storage
// version.
func servedGVK(crd *apiextensionsv1.CustomResourceDefinition) schema.GroupVersionKind {
	version := ""
	for _, v := range crd.Spec.Versions {
		if v.Storage {
			version = v.Name
		}
		if version == "" && v.Served {
			version = v.Name
		}
	}
	return schema.GroupVersionKind{Group: crd.Spec.Group, Version: version, Kind: crd.Spec.Names.Kind}
}

func established(crd *apiextensionsv1.CustomResourceDefinition) bool {
	for _, c := range crd.Status.Conditions {
		if c.Type == apiextensionsv1.Established && c.Status == apiextensionsv1.ConditionTrue {
			return true
		}
	}
	return false
}

// setCondition sets c keeping its transition time when its status is
// unchanged, so that an unchanged reconcile writes an equal status.
func setCondition(conds *[]metav1.Condition, c metav1.Condition, now time.Time) {
	c.LastTransitionTime = metav1.NewTime(now.UTC().Truncate(time.Second))
	meta.SetStatusCondition(conds, c)
}

func isTrue(conds []metav1.Condition, t string) bool {
	return meta.IsStatusConditionTrue(conds, t)
}
