package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// GitAuthMethod is how the controller authenticates to a Git remote.
// +kubebuilder:validation:Enum=basicAuth;ssh
type GitAuthMethod string

const (
	// AuthBasic sends a username and token over HTTPS.
	AuthBasic GitAuthMethod = "basicAuth"
	// AuthSSH uses a private key and checks the server against known_hosts.
	AuthSSH GitAuthMethod = "ssh"
)

// GitStateStoreSpec locates a Git repository and the credentials to write it.
type GitStateStoreSpec struct {
	// URL of the repository (https://… or ssh://…); never carries credentials.
	// +kubebuilder:validation:MinLength=1
	URL string `json:"url"`
	// Branch to write; defaults to main.
	// +optional
	// +kubebuilder:default=main
	Branch string `json:"branch,omitempty"`
	// Path is the folder inside the repository all destinations live under.
	// +optional
	Path string `json:"path,omitempty"`
	// AuthMethod selects which keys of the Secret are read.
	// +optional
	// +kubebuilder:default=basicAuth
	AuthMethod GitAuthMethod `json:"authMethod,omitempty"`
	// SecretRef holds username/password (basicAuth) or sshPrivateKey and
	// knownHosts (ssh).
	// +optional
	SecretRef *SecretReference `json:"secretRef,omitempty"`
	// GitAuthor signs the commits.
	// +optional
	GitAuthor GitAuthor `json:"gitAuthor,omitempty"`
}

// SecretReference names a Secret in a namespace.
type SecretReference struct {
	Name      string `json:"name"`
	Namespace string `json:"namespace"`
}

// GitAuthor is the commit author.
type GitAuthor struct {
	// +optional
	Name string `json:"name,omitempty"`
	// +optional
	Email string `json:"email,omitempty"`
}

// GitStateStoreStatus reports whether the store is reachable and writable.
type GitStateStoreStatus struct {
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// Conditions: Ready.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// LastCommit is the newest commit the controller pushed.
	// +optional
	LastCommit string `json:"lastCommit,omitempty"`
}

// GitStateStore is a Git repository destinations pull their state from.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,categories=promised
// +kubebuilder:printcolumn:name="URL",type=string,JSONPath=`.spec.url`
// +kubebuilder:printcolumn:name="Branch",type=string,JSONPath=`.spec.branch`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
type GitStateStore struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   GitStateStoreSpec   `json:"spec,omitempty"`
	Status GitStateStoreStatus `json:"status,omitempty"`
}

// GitStateStoreList is a list of GitStateStores.
// +kubebuilder:object:root=true
type GitStateStoreList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []GitStateStore `json:"items"`
}
