package local

import (
	"context"
	"fmt"
	"os"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"promised.dev/promised/api/v1alpha1"
	"promised.dev/promised/pipelines"
	"promised.dev/promised/pipelines/apischema"
	"promised.dev/promised/pipelines/contract"
	"promised.dev/promised/pipelines/ledger"
	"promised.dev/promised/pipelines/stage"
)

// Runtime chooses how local runs execute containers.
type Runtime string

// The local runtimes.
const (
	// RuntimeAuto runs built-in stages in-process and any other image with
	// Docker.
	RuntimeAuto Runtime = "auto"
	// RuntimeInProcess runs built-in stages only; any other image is an error.
	RuntimeInProcess Runtime = "inprocess"
	// RuntimeExec runs built-in stages as subprocesses of StageCommand.
	RuntimeExec Runtime = "exec"
	// RuntimeDocker runs every image with Docker, built-in ones included.
	RuntimeDocker Runtime = "docker"
)

// Options configure a local run.
type Options struct {
	Registry *stage.Registry
	Runtime  Runtime
	// StageCommand runs a built-in stage by name in the exec runtime; the
	// stage's name is appended. Defaults to this executable's
	// `stage run`.
	StageCommand []string
	// Docker runs images; the zero value uses the docker CLI.
	Docker pipelines.Docker
	// Ledger is the credential ledger of in-process stages, typically a
	// ledger.Folder so re-rendering reuses the credentials minted before;
	// nil leaves stages without one.
	Ledger ledger.Ledger
	// Objects are the platform objects stages may read (stage.Objects);
	// nil leaves stages without any.
	Objects stage.Objects
	// Secrets are the platform configuration Secrets stages may read.
	Secrets stage.Secrets
}

// NewEngine returns an engine that runs containers as opts says.
func NewEngine(opts Options) (*pipelines.Engine, error) {
	inproc := pipelines.InProcess{Registry: opts.Registry, Ledger: opts.Ledger, Objects: opts.Objects, Secrets: opts.Secrets}
	exec := pipelines.Exec{Resolve: func(image string) ([]string, bool) {
		name, ok := stage.BuiltinName(image)
		if !ok {
			return nil, false
		}
		if _, ok := opts.Registry.ByName(name); !ok {
			return nil, false
		}
		cmd := opts.StageCommand
		if len(cmd) == 0 {
			self, err := os.Executable()
			if err != nil {
				return nil, false
			}
			cmd = []string{self, "stage", "run"}
		}
		return append(append([]string{}, cmd...), name), true
	}}
	var pick func(c v1alpha1.Container) (pipelines.ContainerRunner, error)
	switch opts.Runtime {
	case RuntimeAuto, "":
		pick = func(c v1alpha1.Container) (pipelines.ContainerRunner, error) {
			if _, ok := opts.Registry.Lookup(c.Image); ok {
				return inproc, nil
			}
			return opts.Docker, nil
		}
	case RuntimeInProcess:
		pick = func(v1alpha1.Container) (pipelines.ContainerRunner, error) { return inproc, nil }
	case RuntimeExec:
		pick = func(v1alpha1.Container) (pipelines.ContainerRunner, error) { return exec, nil }
	case RuntimeDocker:
		pick = func(v1alpha1.Container) (pipelines.ContainerRunner, error) { return opts.Docker, nil }
	default:
		return nil, fmt.Errorf("runtime %q: want auto, inprocess, exec or docker", opts.Runtime)
	}
	seq := pipelines.Sequential{Pick: pick}
	return &pipelines.Engine{Choose: func(v1alpha1.Pipeline) (pipelines.PipelineRunner, error) { return seq, nil }}, nil
}

// Request is what to render.
type Request struct {
	Promise *v1alpha1.Promise
	Type    contract.WorkflowType
	Action  contract.Action
	// Object is the request; ignored for promise workflows, whose object is
	// the Promise itself.
	Object *unstructured.Unstructured
	// Previous is the output of an earlier run, keyed "<pipeline>/<path>".
	Previous map[string][]byte
	// SealingCert is the certificate the seal stage seals for; a throwaway
	// one when nil.
	SealingCert []byte
}

// Render runs one workflow of a promise locally. A request is first
// defaulted and validated against the promise's API, as the apiserver
// would before the controller ever saw it.
func Render(ctx context.Context, e *pipelines.Engine, r Request) (*pipelines.Result, error) {
	w := pipelines.Workflow{PromiseName: r.Promise.Name, Type: r.Type, Action: r.Action, Previous: r.Previous}
	actions := r.Promise.Spec.Workflows.Resource
	switch r.Type {
	case contract.TypeResource:
		crd, err := apischema.CRD(r.Promise)
		if err != nil {
			return nil, err
		}
		if r.Object == nil {
			return nil, fmt.Errorf("a resource workflow needs a request")
		}
		obj := r.Object.DeepCopy()
		if obj.GetNamespace() == "" && crd.Spec.Scope != apiextensionsv1.ClusterScoped {
			obj.SetNamespace("default")
		}
		if w.Object, err = apischema.Check(crd, obj); err != nil {
			return nil, err
		}
	case contract.TypePromise:
		actions = r.Promise.Spec.Workflows.Promise
		obj, err := pipelines.PromiseObject(r.Promise)
		if err != nil {
			return nil, err
		}
		w.Object = obj
	default:
		return nil, fmt.Errorf("workflow type %q: want resource or promise", r.Type)
	}
	switch r.Action {
	case contract.ActionConfigure:
		w.Pipelines = actions.Configure
	case contract.ActionDelete:
		w.Pipelines = actions.Delete
	default:
		return nil, fmt.Errorf("workflow action %q: want configure or delete", r.Action)
	}
	if usesSeal(w.Pipelines) {
		in, err := sealInputs(r.SealingCert, r.Promise.Name, w.Object.GetNamespace(), w.Object.GetName())
		if err != nil {
			return nil, err
		}
		w.Inputs = in
	}
	return e.Run(ctx, w)
}
