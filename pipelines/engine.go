package pipelines

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"promised.dev/promised/api/v1alpha1"
	"promised.dev/promised/pipelines/contract"
	"promised.dev/promised/pipelines/validate"
)

// Engine runs workflows. It is safe for concurrent use.
type Engine struct {
	// Choose returns the runner for one pipeline.
	Choose func(p v1alpha1.Pipeline) (PipelineRunner, error)
	// Limits bound each pipeline's output; validate.DefaultLimits when zero.
	Limits validate.Limits
	// TempDir holds the workspaces; DefaultTempDir when empty.
	TempDir string
}

var defaultTempDir = sync.OnceValue(DefaultTempDir)

// DefaultTempDir is where workspaces go: memory (/dev/shm) when the
// machine has it, so a stage's plaintext never reaches a disk and the
// dozen small files of a run cost no disk I/O; the system's temporary
// folder otherwise.
func DefaultTempDir() string {
	if info, err := os.Stat("/dev/shm"); err == nil && info.IsDir() {
		if f, err := os.CreateTemp("/dev/shm", ".promised-probe-"); err == nil {
			_ = f.Close()
			_ = os.Remove(f.Name())
			return "/dev/shm"
		}
	}
	return os.TempDir()
}

// Workflow is one run of a promise's configure or delete pipelines for one
// object.
type Workflow struct {
	// PromiseName names the promise in the environment and in errors.
	PromiseName string
	Type        contract.WorkflowType
	Action      contract.Action
	// Pipelines run in order.
	Pipelines []v1alpha1.Pipeline
	// Object is the request, or the Promise for promise workflows.
	Object *unstructured.Unstructured
	// Previous is what the workflow wrote last time, keyed
	// "<pipeline>/<path>" as the state store holds it.
	Previous map[string][]byte
	// Inputs are extra files written under input/ beside object.yaml, keyed
	// by slash-separated path (the destination's sealing certificate, for
	// one): facts the platform gives a stage that are not in the request.
	Inputs map[string][]byte
}

// Result is what a workflow produced, validated.
type Result struct {
	// Pipelines holds each pipeline's output, in run order.
	Pipelines []PipelineOutput
	// Status is every pipeline's status.yaml merged in order.
	Status map[string]any
	// Control is the last workflow-control.yaml written.
	Control contract.WorkflowControl
}

// PipelineOutput is one pipeline's files and where they may go.
type PipelineOutput struct {
	Name string
	// Files are keyed by slash-separated path under the output folder.
	Files map[string][]byte
	// Selectors are the pipeline's destination-selectors.yaml.
	Selectors []contract.Selector
}

// Files returns every pipeline's files keyed "<pipeline>/<path>", the way
// they are laid out under a request's folder in the state store.
func (r *Result) Files() map[string][]byte {
	out := map[string][]byte{}
	for _, p := range r.Pipelines {
		for f, data := range p.Files {
			out[p.Name+"/"+f] = data
		}
	}
	return out
}

// Run runs every pipeline of w in order. Each pipeline sees the object
// with the status merged so far; a pipeline that suspends the workflow
// ends it. Nothing is written outside the engine's temporary workspaces,
// which are removed before Run returns.
func (e *Engine) Run(ctx context.Context, w Workflow) (*Result, error) {
	lim := e.Limits
	if lim.MaxFiles == 0 {
		lim = validate.DefaultLimits
	}
	res := &Result{Status: map[string]any{}}
	obj := w.Object.DeepCopy()
	for _, p := range w.Pipelines {
		out, ctl, status, err := e.runPipeline(ctx, w, p, obj, lim)
		if err != nil {
			var pe *Error
			if !errors.As(err, &pe) {
				pe = &Error{Err: err}
			}
			pe.Promise, pe.Pipeline = w.PromiseName, p.Metadata.Name
			return nil, pe
		}
		res.Pipelines = append(res.Pipelines, out)
		res.Status = contract.MergeStatus(res.Status, status)
		res.Control = ctl
		if len(res.Status) > 0 {
			obj.Object["status"] = contract.MergeStatus(statusOf(obj), status)
		}
		if ctl.Suspend {
			break
		}
	}
	return res, nil
}

func (e *Engine) runPipeline(ctx context.Context, w Workflow, p v1alpha1.Pipeline, obj *unstructured.Unstructured, lim validate.Limits) (PipelineOutput, contract.WorkflowControl, map[string]any, error) {
	out := PipelineOutput{Name: p.Metadata.Name}
	var ctl contract.WorkflowControl
	runner, err := e.Choose(p)
	if err != nil {
		return out, ctl, nil, err
	}
	dir := e.TempDir
	if dir == "" {
		dir = defaultTempDir()
	}
	root, err := os.MkdirTemp(dir, "promised-run-")
	if err != nil {
		return out, ctl, nil, fmt.Errorf("creating workspace: %w", err)
	}
	defer os.RemoveAll(root)
	ws := contract.Workspace{Root: root}
	if err := prepare(ws, obj, w.Inputs, previousOf(w.Previous, p.Metadata.Name)); err != nil {
		return out, ctl, nil, err
	}
	gvk := obj.GroupVersionKind()
	env := contract.Env{
		Action: w.Action, Type: w.Type, PromiseName: w.PromiseName, PipelineName: p.Metadata.Name,
		ObjectKind: gvk.Kind, ObjectGroup: gvk.Group, ObjectVersion: gvk.Version,
		ObjectName: obj.GetName(), ObjectNamespace: obj.GetNamespace(),
	}
	if err := runner.RunPipeline(ctx, p, ws, env); err != nil {
		// A stage that fails may still say when to try again (waiting for
		// another request to appear, say).
		if _, _, wc, merr := readMetadata(ws); merr == nil && wc.RetryAfter > 0 {
			var pe *Error
			if !errors.As(err, &pe) {
				pe = &Error{Err: err}
				err = pe
			}
			pe.Control = wc
		}
		return out, ctl, nil, err
	}
	if out.Files, err = validate.Collect(ws.Output(), lim); err != nil {
		return out, ctl, nil, err
	}
	if err := validate.Files(out.Files, lim); err != nil {
		return out, ctl, nil, err
	}
	status, sels, ctl, err := readMetadata(ws)
	if err != nil {
		return out, ctl, nil, err
	}
	out.Selectors = sels
	return out, ctl, status, checkSelectorDirs(sels, out.Files)
}

// prepare writes the input object, the extra inputs and the previous
// output into ws.
func prepare(ws contract.Workspace, obj *unstructured.Unstructured, inputs, previous map[string][]byte) error {
	if err := ws.Create(); err != nil {
		return err
	}
	data, err := yaml.Marshal(obj.Object)
	if err != nil {
		return fmt.Errorf("marshalling the input object: %w", err)
	}
	if err := os.WriteFile(ws.ObjectPath(), data, 0o644); err != nil {
		return fmt.Errorf("writing the input object: %w", err)
	}
	if err := writeTree(ws.Input(), inputs); err != nil {
		return fmt.Errorf("writing inputs: %w", err)
	}
	if err := writeTree(ws.Previous(), previous); err != nil {
		return fmt.Errorf("writing previous output: %w", err)
	}
	return nil
}

// writeTree writes files under root, refusing paths that would leave it.
func writeTree(root string, files map[string][]byte) error {
	for rel, content := range files {
		if err := validate.Path(rel); err != nil {
			return err
		}
		p := filepath.Join(root, filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return fmt.Errorf("writing %s: %w", rel, err)
		}
		if err := os.WriteFile(p, content, 0o644); err != nil {
			return fmt.Errorf("writing %s: %w", rel, err)
		}
	}
	return nil
}

// previousOf returns the files of one pipeline from a request's folder.
func previousOf(all map[string][]byte, pipeline string) map[string][]byte {
	out := map[string][]byte{}
	for k, v := range all {
		if rest, ok := strings.CutPrefix(k, pipeline+"/"); ok {
			out[rest] = v
		}
	}
	return out
}

func readMetadata(ws contract.Workspace) (map[string]any, []contract.Selector, contract.WorkflowControl, error) {
	var (
		status = map[string]any{}
		sels   []contract.Selector
		ctl    contract.WorkflowControl
	)
	read := func(name string, parse func([]byte) error) error {
		data, err := os.ReadFile(filepath.Join(ws.Metadata(), name))
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading metadata %s: %w", name, err)
		}
		return parse(data)
	}
	err := errors.Join(
		read(contract.StatusFile, func(b []byte) (err error) { status, err = contract.ParseStatus(b); return }),
		read(contract.SelectorsFile, func(b []byte) (err error) { sels, err = contract.ParseSelectors(b); return }),
		read(contract.WorkflowControlFile, func(b []byte) (err error) { ctl, err = contract.ParseWorkflowControl(b); return }),
	)
	return status, sels, ctl, err
}

// checkSelectorDirs refuses a selector for a folder the output lacks: a
// typo there would silently send the files to the default destinations.
func checkSelectorDirs(sels []contract.Selector, files map[string][]byte) error {
	for _, s := range sels {
		if s.Directory == "" {
			continue
		}
		found := false
		for f := range files {
			if strings.HasPrefix(f, s.Directory+"/") {
				found = true
				break
			}
		}
		if !found {
			return fmt.Errorf("%s: directory %q is not a folder of the output", contract.SelectorsFile, path.Clean(s.Directory))
		}
	}
	return nil
}

func statusOf(obj *unstructured.Unstructured) map[string]any {
	s, _, _ := unstructured.NestedMap(obj.Object, "status")
	if s == nil {
		return map[string]any{}
	}
	return s
}
