// Package stage is the SDK for pipeline stages written in Go. A stage is a
// Func over a Context; the same Func runs in-process inside the controller,
// as a subprocess, or as a container's entrypoint, because the Context only
// reaches the world through the contract's folders and variables.
package stage

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"promised.dev/promised/pipelines/contract"
	"promised.dev/promised/pipelines/ledger"
)

// Func is a pipeline stage. It reads the input object and previous output
// through c and writes output and metadata through c.
type Func func(ctx context.Context, c *Context) error

// Context is a stage's view of one pipeline run.
type Context struct {
	// Env is the contract's environment for this run.
	Env contract.Env
	// Workspace locates the contract's folders.
	Workspace contract.Workspace

	getenv  func(string) string
	object  *unstructured.Unstructured
	ledger  ledger.Ledger
	objects Objects
	secrets Secrets
}

// Option configures what a Context offers beyond the contract's folders
// and variables.
type Option func(*Context)

// WithLedger gives stages the platform's credential ledger (nil: none).
func WithLedger(l ledger.Ledger) Option { return func(c *Context) { c.ledger = l } }

// NewContext builds a Context over ws, reading variables through getenv.
func NewContext(ws contract.Workspace, getenv func(string) string, opts ...Option) (*Context, error) {
	env, err := contract.EnvFrom(getenv)
	if err != nil {
		return nil, err
	}
	c := &Context{Env: env, Workspace: ws, getenv: getenv}
	for _, o := range opts {
		o(c)
	}
	return c, nil
}

// ErrNoLedger is returned by Context.Ledger where the platform gives no
// ledger: a stage run as a container or subprocess, or a local run
// without one.
var ErrNoLedger = errors.New("no credential ledger here: stages that mint credentials run in-process, in the controller or in a local run given a ledger folder")

// Ledger returns the platform's credential ledger, through which a stage
// finds the credentials it issued before (see ledger.Obtain) instead of
// keeping its own client to the platform.
func (c *Context) Ledger() (ledger.Ledger, error) {
	if c == nil || c.ledger == nil {
		return nil, ErrNoLedger
	}
	return c.ledger, nil
}

// Getenv returns a variable of this run's environment (the container's env
// in a container, the pipeline spec's env in-process).
func (c *Context) Getenv(name string) string { return c.getenv(name) }

// Object returns the input object: the request, or the Promise for promise
// workflows.
func (c *Context) Object() (*unstructured.Unstructured, error) {
	if c.object != nil {
		return c.object, nil
	}
	data, err := os.ReadFile(c.Workspace.ObjectPath())
	if err != nil {
		return nil, fmt.Errorf("reading the input object: %w", err)
	}
	u := &unstructured.Unstructured{}
	if err := yaml.Unmarshal(data, &u.Object); err != nil {
		return nil, fmt.Errorf("parsing %s/%s: %w", contract.InputDir, contract.ObjectFile, err)
	}
	c.object = u
	return u, nil
}

// Spec returns the input object's spec (empty when it has none).
func (c *Context) Spec() (map[string]any, error) {
	obj, err := c.Object()
	if err != nil {
		return nil, err
	}
	spec, _, err := unstructured.NestedMap(obj.Object, "spec")
	if err != nil {
		return nil, fmt.Errorf("reading spec of the input object: %w", err)
	}
	if spec == nil {
		spec = map[string]any{}
	}
	return spec, nil
}

// WriteFile writes one output file; rel is relative to the output folder and
// may not leave it.
func (c *Context) WriteFile(rel string, data []byte) error {
	p, err := confined(c.Workspace.Output(), rel)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return fmt.Errorf("creating output folder for %s: %w", rel, err)
	}
	if err := os.WriteFile(p, data, 0o644); err != nil {
		return fmt.Errorf("writing output file %s: %w", rel, err)
	}
	return nil
}

// WriteObjects writes objects as one multi-document YAML output file.
func (c *Context) WriteObjects(rel string, objs ...any) error {
	data, err := MarshalDocuments(objs...)
	if err != nil {
		return fmt.Errorf("writing %s: %w", rel, err)
	}
	return c.WriteFile(rel, data)
}

// MarshalDocuments renders objects as a multi-document YAML stream.
func MarshalDocuments(objs ...any) ([]byte, error) {
	var buf bytes.Buffer
	for i, o := range objs {
		b, err := yaml.Marshal(o)
		if err != nil {
			return nil, fmt.Errorf("marshalling document %d: %w", i, err)
		}
		if i > 0 {
			buf.WriteString("---\n")
		}
		buf.Write(b)
	}
	return buf.Bytes(), nil
}

// Previous returns a file this request's pipeline wrote last time, or an
// error satisfying errors.Is(err, fs.ErrNotExist) when there is none.
func (c *Context) Previous(rel string) ([]byte, error) {
	p, err := confined(c.Workspace.Previous(), rel)
	if err != nil {
		return nil, err
	}
	return os.ReadFile(p)
}

// Input returns a file the platform placed under input/ beside the object
// (such as the destination's sealing certificate), or an error satisfying
// errors.Is(err, fs.ErrNotExist).
func (c *Context) Input(rel string) ([]byte, error) {
	p, err := confined(c.Workspace.Input(), rel)
	if err != nil {
		return nil, err
	}
	return os.ReadFile(p)
}

// ReadOutput returns an output file an earlier stage of this pipeline wrote.
func (c *Context) ReadOutput(rel string) ([]byte, error) {
	p, err := confined(c.Workspace.Output(), rel)
	if err != nil {
		return nil, err
	}
	return os.ReadFile(p)
}

// SetStatus merges fields into metadata/status.yaml the way the controller
// merges them into the object's status: keys overwrite, conditions merge
// by type.
func (c *Context) SetStatus(fields map[string]any) error {
	p := filepath.Join(c.Workspace.Metadata(), contract.StatusFile)
	status := map[string]any{}
	if data, err := os.ReadFile(p); err == nil {
		if status, err = contract.ParseStatus(data); err != nil {
			return err
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("reading %s: %w", contract.StatusFile, err)
	}
	return writeYAML(p, contract.MergeStatus(status, fields))
}

// AddDestinationSelector appends a selector to destination-selectors.yaml.
func (c *Context) AddDestinationSelector(s contract.Selector) error {
	p := filepath.Join(c.Workspace.Metadata(), contract.SelectorsFile)
	var sels []contract.Selector
	if data, err := os.ReadFile(p); err == nil {
		if sels, err = contract.ParseSelectors(data); err != nil {
			return err
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("reading %s: %w", contract.SelectorsFile, err)
	}
	return writeYAML(p, append(sels, s))
}

func writeYAML(p string, v any) error {
	data, err := yaml.Marshal(v)
	if err != nil {
		return fmt.Errorf("marshalling %s: %w", filepath.Base(p), err)
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return fmt.Errorf("creating %s: %w", filepath.Dir(p), err)
	}
	if err := os.WriteFile(p, data, 0o644); err != nil {
		return fmt.Errorf("writing %s: %w", filepath.Base(p), err)
	}
	return nil
}

// confined joins rel onto root and refuses anything that would leave root,
// so a stage bug cannot write outside its own output.
func confined(root, rel string) (string, error) {
	if rel == "" || filepath.IsAbs(rel) || !filepath.IsLocal(rel) || strings.Contains(rel, "\\") {
		return "", fmt.Errorf("path %q must be relative and stay inside %s", rel, filepath.Base(root))
	}
	return filepath.Join(root, rel), nil
}
