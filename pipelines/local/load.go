// Package local runs a promise's workflows on this machine, with no
// cluster: the code behind `promised render` and `promised test`, built on
// the same engine the controller uses.
package local

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"promised.dev/promised/api/v1alpha1"
)

// KratixGroup is the API group of Kratix's Promise; promises written for
// Kratix load unchanged.
const KratixGroup = "platform.kratix.io"

// PromiseFile is the file a promise folder keeps its Promise in.
const PromiseFile = "promise.yaml"

// LoadPromise reads a Promise from a promise folder or a YAML file.
func LoadPromise(path string) (*v1alpha1.Promise, error) {
	if info, err := os.Stat(path); err == nil && info.IsDir() {
		path = filepath.Join(path, PromiseFile)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading promise: %w", err)
	}
	return ParsePromise(path, data)
}

// ParsePromise decodes a Promise, accepting Kratix's group as well as ours
// and refusing unknown fields so a typo in a pipeline is not silently lost.
func ParsePromise(name string, data []byte) (*v1alpha1.Promise, error) {
	var head struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
	}
	if err := yaml.Unmarshal(data, &head); err != nil {
		return nil, fmt.Errorf("promise %s: not YAML: %w", name, err)
	}
	group, _, _ := strings.Cut(head.APIVersion, "/")
	if head.Kind != "Promise" || (group != v1alpha1.Group && group != KratixGroup) {
		return nil, fmt.Errorf("promise %s: apiVersion %q kind %q: want kind Promise in group %s or %s", name, head.APIVersion, head.Kind, v1alpha1.Group, KratixGroup)
	}
	p := &v1alpha1.Promise{}
	if err := yaml.UnmarshalStrict(data, p); err != nil {
		return nil, fmt.Errorf("promise %s: %w", name, err)
	}
	p.APIVersion = v1alpha1.GroupVersion.String()
	if p.Name == "" {
		return nil, fmt.Errorf("promise %s: metadata.name is empty", name)
	}
	return p, nil
}

// LoadObject reads exactly one Kubernetes object from a YAML or JSON file.
func LoadObject(path string) (*unstructured.Unstructured, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading object: %w", err)
	}
	return ParseObject(path, data)
}

// ParseObject decodes exactly one Kubernetes object.
func ParseObject(name string, data []byte) (*unstructured.Unstructured, error) {
	if docs := bytes.Split(data, []byte("\n---")); len(docs) > 1 && len(bytes.TrimSpace(docs[1])) > 0 {
		return nil, fmt.Errorf("%s: holds more than one YAML document; give one object", name)
	}
	u := &unstructured.Unstructured{}
	if err := yaml.Unmarshal(data, &u.Object); err != nil {
		return nil, fmt.Errorf("%s: not valid YAML: %w", name, err)
	}
	if u.Object == nil || u.GetAPIVersion() == "" || u.GetKind() == "" || u.GetName() == "" {
		return nil, fmt.Errorf("%s: an object needs apiVersion, kind and metadata.name", name)
	}
	return u, nil
}
