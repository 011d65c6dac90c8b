// Package validate checks a pipeline's output before anything is written
// anywhere: paths stay inside the output folder, every file is Kubernetes
// objects, sizes are bounded and no plaintext Secret leaves the pipeline.
package validate

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// Rule names a validation rule; it appears in every violation's message.
type Rule string

// The rules output must satisfy.
const (
	RulePath      Rule = "path must be relative and stay inside the output folder"
	RuleFileType  Rule = "only regular files are allowed (no symlinks, devices or sockets)"
	RuleYAML      Rule = "file must parse as YAML or JSON Kubernetes objects"
	RuleObject    Rule = "every object needs apiVersion, kind and metadata.name"
	RuleSecret    Rule = "plaintext kind: Secret is not allowed in output; seal it first"
	RuleFileCount Rule = "too many output files"
	RuleSize      Rule = "output too large"
)

// Error is one violation: the file, the rule and what was found.
type Error struct {
	File   string
	Rule   Rule
	Detail string
}

func (e *Error) Error() string {
	msg := fmt.Sprintf("output file %q: %s", e.File, e.Rule)
	if e.File == "" {
		msg = "output: " + string(e.Rule)
	}
	if e.Detail != "" {
		msg += ": " + e.Detail
	}
	return msg
}

// Limits bound a pipeline's output.
type Limits struct {
	// MaxFiles is the most files one pipeline may produce.
	MaxFiles int
	// MaxBytes is the most bytes all files of one pipeline may hold.
	MaxBytes int64
}

// DefaultLimits are generous for manifests and small enough that one
// runaway pipeline cannot exhaust the controller's memory or the store.
var DefaultLimits = Limits{MaxFiles: 5000, MaxBytes: 32 << 20}

// Collect reads every file under dir into memory, keyed by slash-separated
// relative path, refusing anything that is not a regular file and stopping
// as soon as a limit is passed.
func Collect(dir string, lim Limits) (map[string][]byte, error) {
	files := map[string][]byte{}
	var total int64
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("reading output folder: %w", err)
		}
		if p == dir {
			return nil
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return fmt.Errorf("reading output folder: %w", err)
		}
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			return nil
		}
		if !d.Type().IsRegular() {
			return &Error{File: rel, Rule: RuleFileType, Detail: "found " + d.Type().String()}
		}
		if len(files) >= lim.MaxFiles {
			return &Error{Rule: RuleFileCount, Detail: fmt.Sprintf("more than %d files", lim.MaxFiles)}
		}
		info, err := d.Info()
		if err != nil {
			return fmt.Errorf("reading output file %s: %w", rel, err)
		}
		if total+info.Size() > lim.MaxBytes {
			return &Error{File: rel, Rule: RuleSize, Detail: fmt.Sprintf("more than %d bytes in all", lim.MaxBytes)}
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return fmt.Errorf("reading output file %s: %w", rel, err)
		}
		total += int64(len(data))
		files[rel] = data
		return nil
	})
	if err != nil {
		return nil, err
	}
	return files, nil
}

// Files checks every rule on files (as returned by Collect). Files are
// checked in path order so the same output always reports the same error.
func Files(files map[string][]byte, lim Limits) error {
	if len(files) > lim.MaxFiles {
		return &Error{Rule: RuleFileCount, Detail: fmt.Sprintf("%d files, at most %d", len(files), lim.MaxFiles)}
	}
	paths := make([]string, 0, len(files))
	var total int64
	for p, data := range files {
		paths = append(paths, p)
		total += int64(len(data))
	}
	if total > lim.MaxBytes {
		return &Error{Rule: RuleSize, Detail: fmt.Sprintf("%d bytes, at most %d", total, lim.MaxBytes)}
	}
	sort.Strings(paths)
	for _, p := range paths {
		if err := Path(p); err != nil {
			return err
		}
		if _, err := Objects(p, files[p]); err != nil {
			return err
		}
	}
	return nil
}

// Path checks one output path: relative, slash-separated, no "." or ".."
// element, no empty element, no backslash (which some tools treat as a
// separator).
func Path(p string) error {
	bad := func(detail string) error { return &Error{File: p, Rule: RulePath, Detail: detail} }
	switch {
	case p == "":
		return bad("empty path")
	case strings.HasPrefix(p, "/"):
		return bad("absolute path")
	case strings.ContainsAny(p, "\\\x00"):
		return bad("backslash or NUL in path")
	}
	for _, el := range strings.Split(p, "/") {
		switch el {
		case "":
			return bad("empty path element")
		case ".", "..":
			return bad(fmt.Sprintf("path element %q", el))
		}
	}
	return nil
}

// Object is the identity of one output object.
type Object struct {
	APIVersion string
	Kind       string
	Namespace  string
	Name       string
}

// Objects parses one output file into its objects and checks each: it must
// have apiVersion, kind and metadata.name, and must not be a plaintext
// Secret. Empty documents are allowed and skipped.
func Objects(file string, data []byte) ([]Object, error) {
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var objs []Object
	for doc := 0; ; doc++ {
		raw, err := r.Read()
		if errors.Is(err, io.EOF) {
			return objs, nil
		}
		if err != nil {
			return nil, &Error{File: file, Rule: RuleYAML, Detail: err.Error()}
		}
		if len(bytes.TrimSpace(stripComments(raw))) == 0 {
			continue
		}
		var m map[string]any
		if err := yaml.Unmarshal(raw, &m); err != nil {
			return nil, &Error{File: file, Rule: RuleYAML, Detail: fmt.Sprintf("document %d: %v", doc+1, err)}
		}
		if m == nil {
			continue
		}
		o, err := identity(m)
		if err != nil {
			return nil, &Error{File: file, Rule: RuleObject, Detail: fmt.Sprintf("document %d: %v", doc+1, err)}
		}
		if o.Kind == "Secret" && o.APIVersion == "v1" {
			return nil, &Error{File: file, Rule: RuleSecret, Detail: fmt.Sprintf("document %d: Secret %q", doc+1, o.Name)}
		}
		objs = append(objs, o)
	}
}

func identity(m map[string]any) (Object, error) {
	var o Object
	var ok bool
	if o.APIVersion, ok = m["apiVersion"].(string); !ok || o.APIVersion == "" {
		return o, errors.New("apiVersion missing or not a string")
	}
	if o.Kind, ok = m["kind"].(string); !ok || o.Kind == "" {
		return o, errors.New("kind missing or not a string")
	}
	meta, ok := m["metadata"].(map[string]any)
	if !ok {
		return o, errors.New("metadata missing or not a map")
	}
	if o.Name, ok = meta["name"].(string); !ok || o.Name == "" {
		return o, errors.New("metadata.name missing or not a string")
	}
	if ns, present := meta["namespace"]; present {
		if o.Namespace, ok = ns.(string); !ok {
			return o, errors.New("metadata.namespace is not a string")
		}
	}
	return o, nil
}

// stripComments drops comment-only lines so a document of comments counts
// as empty.
func stripComments(doc []byte) []byte {
	var out bytes.Buffer
	for _, line := range bytes.Split(doc, []byte("\n")) {
		if t := bytes.TrimSpace(line); len(t) > 0 && t[0] == '#' {
			continue
		}
		out.Write(line)
		out.WriteByte('\n')
	}
	return out.Bytes()
}
