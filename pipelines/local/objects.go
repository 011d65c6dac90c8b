package local

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// FolderObjects serves stage.Objects from the YAML files of a folder: the
// other requests a stage would see on the platform, for local runs and
// test cases.
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
