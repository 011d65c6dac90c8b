package local

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"promised.dev/promised/pipelines/stage"
)

// FolderObjects serves stage.Objects and stage.Secrets from the YAML files
// of a folder: the other requests and the platform configuration Secrets a
// stage would see on the platform, for local runs and test cases.
type FolderObjects struct {
	objs []unstructured.Unstructured
}

// LoadFolderObjects reads every .yaml/.yml/.json file under dir.
func LoadFolderObjects(dir string) (*FolderObjects, error) {
	fo := &FolderObjects{}
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		ext := strings.ToLower(filepath.Ext(p))
		if d.IsDir() || (ext != ".yaml" && ext != ".yml" && ext != ".json") {
			return nil
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
		for i := 1; ; i++ {
			doc, err := r.Read()
			if errors.Is(err, io.EOF) {
				return nil
			}
			if err != nil {
				return fmt.Errorf("%s: %w", p, err)
			}
			u := unstructured.Unstructured{}
			if err := yaml.Unmarshal(doc, &u.Object); err != nil {
				return fmt.Errorf("%s: document %d: %w", p, i, err)
			}
			if len(u.Object) > 0 {
				fo.objs = append(fo.objs, u)
			}
		}
	})
	if err != nil {
		return nil, fmt.Errorf("reading objects folder: %w", err)
	}
	sort.Slice(fo.objs, func(i, j int) bool {
		a, b := fo.objs[i], fo.objs[j]
		if a.GetNamespace() != b.GetNamespace() {
			return a.GetNamespace() < b.GetNamespace()
		}
		return a.GetName() < b.GetName()
	})
	return fo, nil
}

// List implements stage.Objects.
func (f *FolderObjects) List(_ context.Context, apiVersion, kind string) ([]unstructured.Unstructured, error) {
	var out []unstructured.Unstructured
	for _, o := range f.objs {
		if o.GetAPIVersion() == apiVersion && o.GetKind() == kind {
			out = append(out, *o.DeepCopy())
		}
	}
	return out, nil
}

// Get implements stage.Secrets: a v1 Secret of the folder labelled as
// platform configuration, with stringData folded into data as the
// apiserver would.
func (f *FolderObjects) Get(_ context.Context, namespace, name string) (map[string][]byte, error) {
	for _, o := range f.objs {
		if o.GetAPIVersion() != "v1" || o.GetKind() != "Secret" || o.GetNamespace() != namespace || o.GetName() != name {
			continue
		}
		if o.GetLabels()[stage.LabelPlatformConfig] != "true" {
			return nil, fmt.Errorf("Secret %s/%s is not labelled %s=true", namespace, name, stage.LabelPlatformConfig)
		}
		sec := &corev1.Secret{}
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, sec); err != nil {
			return nil, fmt.Errorf("Secret %s/%s: %w", namespace, name, err)
		}
		data := map[string][]byte{}
		for k, v := range sec.Data {
			data[k] = v
		}
		for k, v := range sec.StringData {
			data[k] = []byte(v)
		}
		return data, nil
	}
	return nil, fmt.Errorf("Secret %s/%s not found in the objects folder", namespace, name)
}
