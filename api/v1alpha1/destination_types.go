package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// FilepathMode says how a destination's files are laid out in the store.
// +kubebuilder:validation:Enum=nestedByMetadata;aggregatedYAML
type FilepathMode string

const (
	// FilepathNestedByMetadata keeps each request's files under
	// resources/<namespace>/<promise>/<name>/ (the default).
	FilepathNestedByMetadata FilepathMode = "nestedByMetadata"
	// FilepathAggregatedYAML concatenates a request's objects into one file,
	// for destinations whose tooling wants a single manifest.
	FilepathAggregatedYAML FilepathMode = "aggregatedYAML"
)

// SealingScope is the Sealed Secrets scope a destination's secrets are
// sealed with.
// +kubebuilder:validation:Enum=strict;namespace-wide;cluster-wide
type SealingScope string

const (
	// ScopeStrict binds a sealed secret to its name and namespace.
	ScopeStrict SealingScope = "strict"
	// ScopeNamespaceWide lets a sealed secret be renamed within its namespace.
	ScopeNamespaceWide SealingScope = "namespace-wide"
	// ScopeClusterWide lets a sealed secret be unsealed anywhere.
	ScopeClusterWide SealingScope = "cluster-wide"
)

// DestinationSpec says where a destination's desired state lives.
type DestinationSpec struct {
	// StateStoreRef names the store this destination pulls from.
	StateStoreRef StateStoreRef `json:"stateStoreRef"`
	// Path is this destination's folder inside the store; defaults to the
	// destination's name.
	// +optional
	// +kubebuilder:validation:Pattern=`^[a-zA-Z0-9]([-a-zA-Z0-9_./]*[a-zA-Z0-9])?$`
	Path string `json:"path,omitempty"`
	// StrictMatchLabels makes a destination with labels match only promises
	// and requests that select it explicitly.
	// +optional
	StrictMatchLabels bool `json:"strictMatchLabels,omitempty"`
	// Filepath chooses the file layout.
	// +optional
	Filepath Filepath `json:"filepath,omitempty"`
	// Sealing configures how secrets bound for this destination are sealed.
	// +optional
	Sealing *Sealing `json:"sealing,omitempty"`
}

// StateStoreRef points at a state store object.
type StateStoreRef struct {
	// +kubebuilder:validation:Enum=GitStateStore
	Kind string `json:"kind"`
	Name string `json:"name"`
}

// Filepath is the layout of the destination's folder.
type Filepath struct {
	// +optional
	// +kubebuilder:default=nestedByMetadata
	Mode FilepathMode `json:"mode,omitempty"`
}

// Sealing names the destination's Sealed Secrets certificate.
type Sealing struct {
	// CertificatePEM is the sealing certificate inline.
	// +optional
	CertificatePEM string `json:"certificatePEM,omitempty"`
	// CertificateRef reads the certificate from a Secret or ConfigMap key.
	// +optional
	CertificateRef *KeyReference `json:"certificateRef,omitempty"`
	// Scope defaults to strict.
	// +optional
	Scope SealingScope `json:"scope,omitempty"`
}

// KeyReference points at one key of a Secret or ConfigMap.
type KeyReference struct {
	// +kubebuilder:validation:Enum=Secret;ConfigMap
	Kind      string `json:"kind"`
	Name      string `json:"name"`
	Namespace string `json:"namespace"`
	Key       string `json:"key"`
}

// DestinationStatus reports whether the destination can receive writes.
type DestinationStatus struct {
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// Conditions: Ready (the store is reachable and writable).
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// SealingCertificateFingerprint is the SHA-256 of the sealing
	// certificate in use.
	// +optional
	SealingCertificateFingerprint string `json:"sealingCertificateFingerprint,omitempty"`
}

// Destination is a workload cluster (or anything else) that pulls its
// desired state from a folder of a state store.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,categories=promised
// +kubebuilder:printcolumn:name="Store",type=string,JSONPath=`.spec.stateStoreRef.name`
// +kubebuilder:printcolumn:name="Path",type=string,JSONPath=`.spec.path`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
type Destination struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   DestinationSpec   `json:"spec,omitempty"`
	Status DestinationStatus `json:"status,omitempty"`
}

// DestinationList is a list of Destinations.
// +kubebuilder:object:root=true
type DestinationList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Destination `json:"items"`
}
