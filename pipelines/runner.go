package pipelines

import (
	"context"
	"fmt"
	"time"

	"promised.dev/promised/api/v1alpha1"
	"promised.dev/promised/pipelines/contract"
)

// DefaultTimeout bounds each container of a pipeline that sets no timeout.
const DefaultTimeout = 5 * time.Minute

// ContainerRunner runs one container against a workspace whose folders the
// previous containers of the pipeline have already filled.
type ContainerRunner interface {
	RunContainer(ctx context.Context, c v1alpha1.Container, ws contract.Workspace, env map[string]string) error
}

// PipelineRunner runs a whole pipeline against a workspace. The Kubernetes
// Job runner implements it directly (one Job per pipeline); Sequential
// builds one from ContainerRunners.
type PipelineRunner interface {
	RunPipeline(ctx context.Context, p v1alpha1.Pipeline, ws contract.Workspace, env contract.Env) error
}

// Sequential runs a pipeline's containers one after the other, each under
// the pipeline's timeout, choosing a runner per container with Pick.
type Sequential struct {
	Pick func(c v1alpha1.Container) (ContainerRunner, error)
}

// RunPipeline implements PipelineRunner.
func (s Sequential) RunPipeline(ctx context.Context, p v1alpha1.Pipeline, ws contract.Workspace, env contract.Env) error {
	timeout := DefaultTimeout
	if p.Spec.Timeout != nil && p.Spec.Timeout.Duration > 0 {
		timeout = p.Spec.Timeout.Duration
	}
	for _, c := range p.Spec.Containers {
		r, err := s.Pick(c)
		if err != nil {
			return &Error{Container: c.Name, Image: c.Image, Err: err}
		}
		if err := runWithTimeout(ctx, r, c, ws, containerEnv(env, c), timeout); err != nil {
			return &Error{Container: c.Name, Image: c.Image, Err: err}
		}
	}
	return nil
}

func runWithTimeout(ctx context.Context, r ContainerRunner, c v1alpha1.Container, ws contract.Workspace, env map[string]string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeoutCause(ctx, timeout, fmt.Errorf("timed out after %s", timeout))
	defer cancel()
	err := r.RunContainer(ctx, c, ws, env)
	if cause := context.Cause(ctx); cause != nil && ctx.Err() != nil {
		return cause
	}
	return err
}

// containerEnv is the contract's variables plus the container's own; the
// contract's win, since a stage must be able to trust them.
func containerEnv(env contract.Env, c v1alpha1.Container) map[string]string {
	m := make(map[string]string, len(c.Env)+9)
	for _, e := range c.Env {
		m[e.Name] = e.Value
	}
	for k, v := range env.Map() {
		m[k] = v
	}
	return m
}

// Error says which promise, pipeline and container failed and why.
type Error struct {
	Promise   string
	Pipeline  string
	Container string
	Image     string
	Err       error
	// Control is what the failed pipeline wrote to workflow-control.yaml
	// before failing, such as when to try again.
	Control contract.WorkflowControl
}

func (e *Error) Error() string {
	msg := ""
	if e.Promise != "" {
		msg = fmt.Sprintf("promise %q, ", e.Promise)
	}
	if e.Pipeline != "" {
		msg += fmt.Sprintf("pipeline %q, ", e.Pipeline)
	}
	if e.Container != "" {
		msg += fmt.Sprintf("container %q (image %s), ", e.Container, e.Image)
	}
	return msg + e.Err.Error()
}

func (e *Error) Unwrap() error { return e.Err }
