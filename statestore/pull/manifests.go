package pull

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path"
	"sort"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// manifest is one object read from a destination's folder, with where it
// came from (for the report and for error messages).
type manifest struct {
	file string
	doc  int // 1-based document number within the file
	obj  *unstructured.Unstructured
}

func (m manifest) source() string {
	return fmt.Sprintf("%s#%d", m.file, m.doc)
}

// fileFailure is a document that could not be turned into an object.
type fileFailure struct {
	file   string
	doc    int
	reason string
}

// decoded is what a folder holds, as objects.
type decoded struct {
	manifests []manifest
	// skipped are files that are not YAML, with why.
	skipped []string
	// failures are documents that do not parse. Their objects are unknown,
	// so pruning must not run: an object missing from the parsed set may
	// only be missing because its document is broken.
	failures []fileFailure
}

// isYAML reports whether a file is one sync reads. Both layouts of the
// state store (nestedByMetadata and aggregatedYAML) hold only YAML
// documents; anything else (a README a pipeline wrote, a binary) is noted
// and skipped rather than guessed at.
func isYAML(name string) bool {
	switch strings.ToLower(path.Ext(name)) {
	case ".yaml", ".yml":
		return true
	}
	return false
}

// decodeFiles parses every YAML file of files (multi-document streams and
// v1 Lists included) into objects, in path order so that reports and the
// order of applies are the same on every run.
func decodeFiles(files map[string][]byte) decoded {
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	var out decoded
	for _, name := range names {
		if !isYAML(name) {
			out.skipped = append(out.skipped, name)
			continue
		}
		r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(files[name])))
		for doc := 1; ; doc++ {
			raw, err := r.Read()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				// The reader cannot find the next document boundary: the rest
				// of the file is lost to us.
				out.failures = append(out.failures, fileFailure{file: name, doc: doc, reason: fmt.Sprintf("reading YAML: %v", err)})
				break
			}
			objs, err := decodeDocument(raw)
			if err != nil {
				out.failures = append(out.failures, fileFailure{file: name, doc: doc, reason: err.Error()})
				continue
			}
			for _, o := range objs {
				out.manifests = append(out.manifests, manifest{file: name, doc: doc, obj: o})
			}
		}
	}
	return out
}

// decodeDocument turns one YAML document into objects: none for an empty
// document (only comments, or "---" twice), the items of a v1 List, or the
// object itself.
func decodeDocument(raw []byte) ([]*unstructured.Unstructured, error) {
	js, err := yaml.YAMLToJSON(raw)
	if err != nil {
		return nil, fmt.Errorf("parsing YAML: %w", err)
	}
	js = bytes.TrimSpace(js)
	if len(js) == 0 || bytes.Equal(js, []byte("null")) {
		return nil, nil
	}
	var content map[string]any
	if err := json.Unmarshal(js, &content); err != nil {
		return nil, fmt.Errorf("the document is not a YAML mapping (a Kubernetes object): %w", err)
	}
	obj := &unstructured.Unstructured{Object: content}
	if obj.GetAPIVersion() == "v1" && obj.GetKind() == "List" {
		items, _, err := unstructured.NestedSlice(content, "items")
		if err != nil {
			return nil, fmt.Errorf("v1 List: %w", err)
		}
		var out []*unstructured.Unstructured
		for i, it := range items {
			m, ok := it.(map[string]any)
			if !ok {
				return nil, fmt.Errorf("v1 List: item %d is not an object", i)
			}
			o := &unstructured.Unstructured{Object: m}
			if err := checkObject(o); err != nil {
				return nil, fmt.Errorf("v1 List: item %d: %w", i, err)
			}
			out = append(out, o)
		}
		return out, nil
	}
	if err := checkObject(obj); err != nil {
		return nil, err
	}
	return []*unstructured.Unstructured{obj}, nil
}

// checkObject refuses what server-side apply cannot take, with a message
// that names the missing field instead of the apiserver's URL error.
func checkObject(o *unstructured.Unstructured) error {
	if o.GetAPIVersion() == "" || o.GetKind() == "" {
		return errors.New("apiVersion and kind are required")
	}
	if _, err := schema.ParseGroupVersion(o.GetAPIVersion()); err != nil {
		return fmt.Errorf("apiVersion %q: %w", o.GetAPIVersion(), err)
	}
	if o.GetName() == "" {
		if o.GetGenerateName() != "" {
			return fmt.Errorf("%s has generateName but no name: server-side apply needs a fixed name", o.GetKind())
		}
		return fmt.Errorf("%s has no metadata.name", o.GetKind())
	}
	return nil
}
