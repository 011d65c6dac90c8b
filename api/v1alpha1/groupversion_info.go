// Package v1alpha1 holds the platform.promised.dev/v1alpha1 API: Promise,
// Destination and GitStateStore. The shapes follow Kratix's
// platform.kratix.io/v1alpha1 so that a Kratix Promise converts with little
// more than a change of group.
//
// +kubebuilder:object:generate=true
// +groupName=platform.promised.dev
package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// Group is the API group of every promised type.
const Group = "platform.promised.dev"

var (
	// GroupVersion is the group and version of this package's types.
	GroupVersion = schema.GroupVersion{Group: Group, Version: "v1alpha1"}

	// SchemeBuilder registers this package's types with a runtime.Scheme.
	SchemeBuilder = runtime.NewSchemeBuilder(addKnownTypes)

	// AddToScheme adds this package's types to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

func addKnownTypes(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion,
		&Promise{}, &PromiseList{},
		&Destination{}, &DestinationList{},
		&GitStateStore{}, &GitStateStoreList{},
	)
	metav1.AddToGroupVersion(s, GroupVersion)
	return nil
}
