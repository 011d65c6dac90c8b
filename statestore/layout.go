package statestore

import (
	"bytes"
	"fmt"
	"path"
	"regexp"
	"sort"
	"strings"
)

// The store layout (see ARCHITECTURE.md, "State store layout"):
//
//	<store path>/<destination path>/dependencies/<promise>/…
//	<store path>/<destination path>/resources/<namespace>/<promise>/<request>/…
//
// The functions below are the only place that knows it. They validate every
// name, because a name such as ".." or "a/b" would otherwise let one
// request's output land in (and on the next write replace) another's folder.

const (
	dependenciesDir = "dependencies"
	resourcesDir    = "resources"
)

// PathError reports a name that cannot be placed in the store layout.
type PathError struct {
	Field string // which input: "namespace", "promise", "request", "store path", …
	Value string
	Rule  string // the rule it breaks, in words
}

func (e *PathError) Error() string {
	return fmt.Sprintf("invalid %s %q: %s", e.Field, e.Value, e.Rule)
}

var (
	dns1123Label     = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
	dns1123Subdomain = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)
	pathSegment      = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9._-]*$`)
)

const (
	ruleLabel     = "must be a DNS-1123 label: at most 63 lowercase letters, digits or '-', starting and ending with a letter or digit"
	ruleSubdomain = "must be a DNS-1123 subdomain: at most 253 lowercase letters, digits, '-' or '.', each dot-separated part starting and ending with a letter or digit"
	rulePath      = "must be a relative path of '/'-separated segments made of letters, digits, '.', '_' or '-', none empty, none starting with '.'"
)

func checkLabel(field, v string) error {
	if len(v) > 63 || !dns1123Label.MatchString(v) {
		return &PathError{Field: field, Value: v, Rule: ruleLabel}
	}
	return nil
}

func checkSubdomain(field, v string) error {
	if len(v) > 253 || !dns1123Subdomain.MatchString(v) {
		return &PathError{Field: field, Value: v, Rule: ruleSubdomain}
	}
	return nil
}

// checkPath accepts a store or destination path. These are chosen by the
// platform team, so they are freer than Kubernetes names (upper case,
// nesting), but still cannot climb out of the store or hide in dot folders
// (".git", the store's own ".promised").
func checkPath(field, v string, allowEmpty bool) error {
	if v == "" {
		if allowEmpty {
			return nil
		}
		return &PathError{Field: field, Value: v, Rule: "must not be empty"}
	}
	for _, seg := range strings.Split(v, "/") {
		if !pathSegment.MatchString(seg) {
			return &PathError{Field: field, Value: v, Rule: rulePath}
		}
	}
	return nil
}

// DependenciesDir returns the folder of a promise's own output (its
// dependencies) for one destination:
// <storePath>/<destinationPath>/dependencies/<promise>.
// storePath may be empty; destinationPath is usually the destination's name.
func DependenciesDir(storePath, destinationPath, promise string) (string, error) {
	if err := checkPath("store path", storePath, true); err != nil {
		return "", err
	}
	if err := checkPath("destination path", destinationPath, false); err != nil {
		return "", err
	}
	if err := checkSubdomain("promise", promise); err != nil {
		return "", err
	}
	return path.Join(storePath, destinationPath, dependenciesDir, promise), nil
}

// ResourceDir returns the folder of one request's output for its
// destination:
// <storePath>/<destinationPath>/resources/<namespace>/<promise>/<request>.
func ResourceDir(storePath, destinationPath, namespace, promise, request string) (string, error) {
	if err := checkPath("store path", storePath, true); err != nil {
		return "", err
	}
	if err := checkPath("destination path", destinationPath, false); err != nil {
		return "", err
	}
	if err := checkLabel("namespace", namespace); err != nil {
		return "", err
	}
	if err := checkSubdomain("promise", promise); err != nil {
		return "", err
	}
	if err := checkSubdomain("request", request); err != nil {
		return "", err
	}
	return path.Join(storePath, destinationPath, resourcesDir, namespace, promise, request), nil
}

// FilepathMode is how a destination wants output laid out in its folder
// (Kratix's Destination spec.filepath.mode).
type FilepathMode string

const (
	// FilepathNestedByMetadata keeps the output files as the pipeline wrote
	// them, under the folder. It is the default.
	FilepathNestedByMetadata FilepathMode = "nestedByMetadata"
	// FilepathAggregatedYAML concatenates all of the output's YAML documents
	// into one file, for destinations whose tooling wants a single file.
	FilepathAggregatedYAML FilepathMode = "aggregatedYAML"
)

// DefaultAggregatedFilename is the file FilepathAggregatedYAML writes when
// no filename is given (the same default as Kratix).
const DefaultAggregatedFilename = "aggregated.yaml"

// Filepath selects the layout inside an output folder.
type Filepath struct {
	// Mode is FilepathNestedByMetadata when empty.
	Mode FilepathMode
	// Filename is the aggregated file's path relative to the folder, for
	// FilepathAggregatedYAML; DefaultAggregatedFilename when empty.
	Filename string
}

// OutputChange turns a pipeline's output files into the Change that
// replaces folder dir, laid out as fp says.
func OutputChange(dir string, fp Filepath, files map[string][]byte) (Change, error) {
	switch fp.Mode {
	case "", FilepathNestedByMetadata:
		c := Change{Dir: dir, Files: files}
		return c, validateChange(c, false)
	case FilepathAggregatedYAML:
		name := fp.Filename
		if name == "" {
			name = DefaultAggregatedFilename
		}
		doc, err := AggregateYAML(files)
		if err != nil {
			return Change{}, err
		}
		c := Change{Dir: dir, Files: map[string][]byte{name: doc}}
		if len(doc) == 0 {
			// Nothing to place: the folder goes, as with an empty nested output.
			c.Files = nil
		}
		return c, validateChange(c, false)
	default:
		return Change{}, fmt.Errorf("unknown filepath mode %q: want %q or %q", fp.Mode, FilepathNestedByMetadata, FilepathAggregatedYAML)
	}
}

// AggregateYAML concatenates the YAML documents of files into one
// multi-document stream, in path order so the result (and so the commit) is
// the same on every run. Empty documents are dropped. A file that is not
// .yaml or .yml is refused rather than silently left out.
func AggregateYAML(files map[string][]byte) ([]byte, error) {
	paths := make([]string, 0, len(files))
	for p := range files {
		ext := strings.ToLower(path.Ext(p))
		if ext != ".yaml" && ext != ".yml" {
			return nil, fmt.Errorf("aggregatedYAML: %q is not a .yaml or .yml file", p)
		}
		paths = append(paths, p)
	}
	sort.Strings(paths)
	var out bytes.Buffer
	for _, p := range paths {
		for _, doc := range splitYAMLDocuments(files[p]) {
			if out.Len() > 0 {
				out.WriteString("---\n")
			}
			out.Write(doc)
			out.WriteByte('\n')
		}
	}
	return out.Bytes(), nil
}

// splitYAMLDocuments splits a stream on "---" separator lines and returns the
// non-empty documents without trailing blank lines. It does not parse YAML:
// the pipeline output was validated before it got here.
func splitYAMLDocuments(b []byte) [][]byte {
	var docs [][]byte
	var cur []string
	flush := func() {
		doc := strings.TrimRight(strings.Join(cur, "\n"), " \t\r\n")
		if strings.TrimSpace(doc) != "" {
			docs = append(docs, []byte(doc))
		}
		cur = cur[:0]
	}
	for _, line := range strings.Split(string(b), "\n") {
		trimmed := strings.TrimRight(line, " \t\r")
		if trimmed == "---" || strings.HasPrefix(trimmed, "--- ") {
			flush()
			if rest := strings.TrimSpace(trimmed[3:]); rest != "" {
				cur = append(cur, rest)
			}
			continue
		}
		if trimmed == "..." {
			flush()
			continue
		}
		cur = append(cur, line)
	}
	flush()
	return docs
}
