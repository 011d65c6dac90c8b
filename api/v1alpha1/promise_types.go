package v1alpha1

import (
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

// PromiseFinalizer guards a Promise until its delete workflow has run, its
// output is gone from every destination and its CRD can be removed.
const PromiseFinalizer = "platform.promised.dev/promise-cleanup"

// DefaultReconcileInterval is how often a request is re-run when nothing
// triggers it; the same default as Kratix, so credentials minted by a
// pipeline are re-checked a few times a day and never re-minted.
const DefaultReconcileInterval = 10 * time.Hour

// PromiseSpec is what a platform team publishes: an API, its dependencies
// and the workflows that turn requests into manifests.
type PromiseSpec struct {
	// API is the CustomResourceDefinition developers create requests of.
	// +kubebuilder:pruning:PreserveUnknownFields
	// +kubebuilder:validation:EmbeddedResource
	// +optional
	API *runtime.RawExtension `json:"api,omitempty"`

	// Dependencies are objects every matching destination needs before any
	// request can be served there (operators, CRDs, shared config).
	// +optional
	Dependencies []Dependency `json:"dependencies,omitempty"`

	// Workflows are the pipelines run for the promise itself and for each
	// request.
	// +optional
	Workflows Workflows `json:"workflows,omitempty"`

	// DestinationSelectors choose the destinations this promise's output may
	// be placed on; every selector must match.
	// +optional
	DestinationSelectors []DestinationSelector `json:"destinationSelectors,omitempty"`

	// RequiredPromises must be installed and Available before this promise
	// serves requests.
	// +optional
	RequiredPromises []RequiredPromise `json:"requiredPromises,omitempty"`

	// ReconcileInterval is how often each request's configure workflow is
	// re-run when nothing else triggers it. Defaults to 10h.
	// +optional
	ReconcileInterval *metav1.Duration `json:"reconcileInterval,omitempty"`
}

// Dependency is one Kubernetes object written to every matching destination.
// +kubebuilder:pruning:PreserveUnknownFields
// +kubebuilder:validation:EmbeddedResource
type Dependency struct {
	runtime.RawExtension `json:",inline"`
}

// Workflows groups the pipelines by what they act on.
type Workflows struct {
	// Promise workflows run when the Promise itself is applied or deleted.
	// +optional
	Promise WorkflowActions `json:"promise,omitempty"`
	// Resource workflows run for each request.
	// +optional
	Resource WorkflowActions `json:"resource,omitempty"`
}

// WorkflowActions lists the pipelines run on configure and on delete; the
// pipelines of one action run in order and share the request's status.
type WorkflowActions struct {
	// +optional
	Configure []Pipeline `json:"configure,omitempty"`
	// +optional
	Delete []Pipeline `json:"delete,omitempty"`
}

// Pipeline is a Kratix-shaped pipeline: ordered containers sharing the
// /kratix input, output and metadata folders.
type Pipeline struct {
	// APIVersion is kept for Kratix compatibility (platform.kratix.io/v1alpha1
	// or platform.promised.dev/v1alpha1); it is not interpreted.
	// +optional
	APIVersion string `json:"apiVersion,omitempty"`
	// Kind is kept for Kratix compatibility ("Pipeline").
	// +optional
	Kind string `json:"kind,omitempty"`
	// Metadata names the pipeline.
	Metadata PipelineMetadata `json:"metadata"`
	// Spec holds the containers.
	Spec PipelineSpec `json:"spec"`
}

// PipelineMetadata names a pipeline; the name appears in env, status and
// every error about it.
type PipelineMetadata struct {
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	// +kubebuilder:validation:MaxLength=63
	Name string `json:"name"`
	// +optional
	Labels map[string]string `json:"labels,omitempty"`
	// +optional
	Annotations map[string]string `json:"annotations,omitempty"`
}

// PipelineRuntime says where a pipeline's containers run.
// +kubebuilder:validation:Enum="";auto;job
type PipelineRuntime string

const (
	// RuntimeAuto runs a container in-process when its image names a stage
	// compiled into the running binary at the same version, and as a Job
	// otherwise.
	RuntimeAuto PipelineRuntime = "auto"
	// RuntimeJob always runs the pipeline as a Kubernetes Job.
	RuntimeJob PipelineRuntime = "job"
)

// PipelineSpec is the body of a Pipeline.
type PipelineSpec struct {
	// Containers run in order; each sees what the previous ones wrote.
	// +kubebuilder:validation:MinItems=1
	Containers []Container `json:"containers"`
	// Runtime forces where the pipeline runs; empty means auto.
	// +optional
	Runtime PipelineRuntime `json:"runtime,omitempty"`
	// Timeout bounds each container's run. Defaults to 5m.
	// +optional
	Timeout *metav1.Duration `json:"timeout,omitempty"`
	// RBAC lists the extra permissions a Job pipeline's ServiceAccount gets.
	// +optional
	RBAC RBAC `json:"rbac,omitempty"`
}

// Container is one stage of a pipeline.
type Container struct {
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	// +kubebuilder:validation:MaxLength=63
	Name string `json:"name"`
	// +kubebuilder:validation:MinLength=1
	Image string `json:"image"`
	// +optional
	Command []string `json:"command,omitempty"`
	// +optional
	Args []string `json:"args,omitempty"`
	// +optional
	Env []EnvVar `json:"env,omitempty"`
	// +optional
	ImagePullPolicy string `json:"imagePullPolicy,omitempty"`
}

// EnvVar is a literal environment variable for a container.
type EnvVar struct {
	Name string `json:"name"`
	// +optional
	Value string `json:"value,omitempty"`
}

// RBAC is the permission request of a Job pipeline.
type RBAC struct {
	// +optional
	Permissions []PolicyRule `json:"permissions,omitempty"`
}

// PolicyRule mirrors rbac/v1 PolicyRule, optionally bound in another
// namespace than the request's.
type PolicyRule struct {
	// +optional
	ResourceNamespace string `json:"resourceNamespace,omitempty"`
	// +optional
	APIGroups []string `json:"apiGroups,omitempty"`
	// +optional
	Resources []string `json:"resources,omitempty"`
	Verbs     []string `json:"verbs"`
	// +optional
	ResourceNames []string `json:"resourceNames,omitempty"`
}

// DestinationSelector matches destinations by label.
type DestinationSelector struct {
	// MatchLabels must all be present with equal values on the destination.
	MatchLabels map[string]string `json:"matchLabels"`
}

// RequiredPromise names a promise this one builds on.
type RequiredPromise struct {
	Name string `json:"name"`
	// +optional
	Version string `json:"version,omitempty"`
}

// PromiseStatus reports what the promise serves and how its requests fare.
type PromiseStatus struct {
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// Conditions: Ready, APIInstalled, DependenciesWritten, ConfigureWorkflowSucceeded.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// APIVersion of the requests this promise serves.
	// +optional
	APIVersion string `json:"apiVersion,omitempty"`
	// Kind of the requests this promise serves.
	// +optional
	Kind string `json:"kind,omitempty"`
	// Requests counts this promise's requests by state.
	// +optional
	Requests RequestCounts `json:"requests,omitempty"`
	// Destinations the dependencies were written to.
	// +optional
	Destinations []string `json:"destinations,omitempty"`
}

// RequestCounts tallies requests by their Ready condition.
type RequestCounts struct {
	Total   int `json:"total"`
	Ready   int `json:"ready"`
	Failed  int `json:"failed"`
	Pending int `json:"pending"`
}

// Promise publishes a self-service API and the pipelines that fulfil it.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,categories=promised
// +kubebuilder:printcolumn:name="Kind",type=string,JSONPath=`.status.kind`
// +kubebuilder:printcolumn:name="Requests",type=integer,JSONPath=`.status.requests.total`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type Promise struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   PromiseSpec   `json:"spec,omitempty"`
	Status PromiseStatus `json:"status,omitempty"`
}

// PromiseList is a list of Promises.
// +kubebuilder:object:root=true
type PromiseList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Promise `json:"items"`
}
