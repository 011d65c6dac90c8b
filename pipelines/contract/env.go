package contract

import (
	"fmt"
	"sort"
)

// Action is what a workflow does to its object.
type Action string

// Workflow actions of the contract.
const (
	ActionConfigure Action = "configure"
	ActionDelete    Action = "delete"
)

// WorkflowType says whether a workflow acts on a request or on the promise.
type WorkflowType string

// Workflow types of the contract.
const (
	TypeResource WorkflowType = "resource"
	TypePromise  WorkflowType = "promise"
)

// Environment variable names of the contract.
const (
	EnvWorkflowAction  = "KRATIX_WORKFLOW_ACTION"
	EnvWorkflowType    = "KRATIX_WORKFLOW_TYPE"
	EnvPromiseName     = "KRATIX_PROMISE_NAME"
	EnvPipelineName    = "KRATIX_PIPELINE_NAME"
	EnvObjectKind      = "KRATIX_OBJECT_KIND"
	EnvObjectGroup     = "KRATIX_OBJECT_GROUP"
	EnvObjectVersion   = "KRATIX_OBJECT_VERSION"
	EnvObjectName      = "KRATIX_OBJECT_NAME"
	EnvObjectNamespace = "KRATIX_OBJECT_NAMESPACE"
)

// Env is the contract's environment for one pipeline run.
type Env struct {
	Action          Action
	Type            WorkflowType
	PromiseName     string
	PipelineName    string
	ObjectKind      string
	ObjectGroup     string
	ObjectVersion   string
	ObjectName      string
	ObjectNamespace string
}

// Map returns the variables as a map, as a container runtime wants them.
func (e Env) Map() map[string]string {
	return map[string]string{
		EnvWorkflowAction:  string(e.Action),
		EnvWorkflowType:    string(e.Type),
		EnvPromiseName:     e.PromiseName,
		EnvPipelineName:    e.PipelineName,
		EnvObjectKind:      e.ObjectKind,
		EnvObjectGroup:     e.ObjectGroup,
		EnvObjectVersion:   e.ObjectVersion,
		EnvObjectName:      e.ObjectName,
		EnvObjectNamespace: e.ObjectNamespace,
	}
}

// List returns the variables as sorted NAME=value pairs, as exec wants them.
func (e Env) List() []string {
	m := e.Map()
	out := make([]string, 0, len(m))
	for k, v := range m {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return out
}

// EnvFrom reads the contract's variables through getenv (os.Getenv in a
// process, a map lookup in-process) and checks the ones every stage needs.
func EnvFrom(getenv func(string) string) (Env, error) {
	e := Env{
		Action:          Action(getenv(EnvWorkflowAction)),
		Type:            WorkflowType(getenv(EnvWorkflowType)),
		PromiseName:     getenv(EnvPromiseName),
		PipelineName:    getenv(EnvPipelineName),
		ObjectKind:      getenv(EnvObjectKind),
		ObjectGroup:     getenv(EnvObjectGroup),
		ObjectVersion:   getenv(EnvObjectVersion),
		ObjectName:      getenv(EnvObjectName),
		ObjectNamespace: getenv(EnvObjectNamespace),
	}
	if e.Action != ActionConfigure && e.Action != ActionDelete {
		return e, fmt.Errorf("%s is %q: want %q or %q", EnvWorkflowAction, e.Action, ActionConfigure, ActionDelete)
	}
	if e.Type != TypeResource && e.Type != TypePromise {
		return e, fmt.Errorf("%s is %q: want %q or %q", EnvWorkflowType, e.Type, TypeResource, TypePromise)
	}
	return e, nil
}
