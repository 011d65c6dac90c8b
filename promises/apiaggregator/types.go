package apiaggregator

import (
	"encoding/json"
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// The API both promises serve.
const (
	// Group is the API group of ApiAggregator and ApiAggregatorTarget.
	Group = "gateway.promised.dev"
	// Version is the served and stored version of both kinds.
	Version = "v1alpha1"
	// APIVersion is Group/Version, as objects and stage.Objects name it.
	APIVersion = Group + "/" + Version
	// KindAggregator is the kind that declares a hostname and its Gateway.
	KindAggregator = "ApiAggregator"
	// KindTarget is the kind that attaches a team's routes to an aggregator.
	KindTarget = "ApiAggregatorTarget"
)

// Ref names a namespaced object.
type Ref struct {
	Namespace string
	Name      string
}

// String is "namespace/name", as messages and status name objects.
func (r Ref) String() string { return r.Namespace + "/" + r.Name }

// AggregatorSpec is the spec of an ApiAggregator.
type AggregatorSpec struct {
	// Hostnames are the exact DNS names the aggregator serves.
	Hostnames []string `json:"hostnames"`
	// Gateway says where the hostnames are served.
	Gateway GatewayChoice `json:"gateway"`
	// TLS terminates HTTPS with a certificate; without it listeners are
	// plain HTTP.
	TLS *TLS `json:"tls,omitempty"`
	// DefaultTimeouts apply to every target route that sets none.
	DefaultTimeouts *Timeouts `json:"defaultTimeouts,omitempty"`
	// MaxRequestBodySize is a resource quantity ("10Mi"); it is enforced
	// only through an implementation policy (see EnvImplementation).
	MaxRequestBodySize string `json:"maxRequestBodySize,omitempty"`
	// TargetNamespaces are the namespaces targets may come from.
	TargetNamespaces TargetNamespaces `json:"targetNamespaces,omitempty"`
	// DefaultBackend answers every path no target claims.
	DefaultBackend *Backend `json:"defaultBackend,omitempty"`
}

// GatewayChoice is exactly one of a shared Gateway or a dedicated one.
type GatewayChoice struct {
	// Shared attaches the aggregator's listeners to an existing Gateway
	// through a ListenerSet.
	Shared *SharedGateway `json:"shared,omitempty"`
	// Dedicated renders a Gateway of its own.
	Dedicated *DedicatedGateway `json:"dedicated,omitempty"`
}

// SharedGateway references an existing Gateway that allows ListenerSets
// from the aggregator's namespace.
type SharedGateway struct {
	Name      string `json:"name"`
	Namespace string `json:"namespace"`
}

// DedicatedGateway is a Gateway rendered for this aggregator alone.
type DedicatedGateway struct {
	GatewayClassName string `json:"gatewayClassName"`
}

// TLS names the certificate Secret of the HTTPS listeners.
type TLS struct {
	CertificateRef SecretRef `json:"certificateRef"`
}

// SecretRef names a Secret; an empty namespace is the aggregator's.
type SecretRef struct {
	Name      string `json:"name"`
	Namespace string `json:"namespace,omitempty"`
}

// Timeouts are Gateway API HTTPRoute rule timeouts (GEP-2257 durations).
type Timeouts struct {
	Request        string `json:"request,omitempty"`
	BackendRequest string `json:"backendRequest,omitempty"`
}

// Namespace policies of TargetNamespaces.From, after Gateway API's
// allowedRoutes.namespaces.from (List stands for a Selector on the
// namespaces' kubernetes.io/metadata.name label).
const (
	FromSame = "Same"
	FromAll  = "All"
	FromList = "List"
)

// TargetNamespaces says which namespaces may attach targets.
type TargetNamespaces struct {
	// From is Same (the default), All or List.
	From string `json:"from,omitempty"`
	// Names are the namespaces allowed when From is List; the aggregator's
	// own namespace is always allowed.
	Names []string `json:"names,omitempty"`
}

// TargetSpec is the spec of an ApiAggregatorTarget.
type TargetSpec struct {
	// Aggregator is the ApiAggregator the routes join; an empty namespace
	// is the target's.
	Aggregator AggregatorRef `json:"aggregator"`
	// Routes are the paths the backend answers.
	Routes []Route `json:"routes"`
	// Backend is the Service that answers.
	Backend Backend `json:"backend"`
	// SecondaryBackend takes Weight percent of the traffic (canary,
	// blue/green); Backend takes the rest.
	SecondaryBackend *WeightedBackend `json:"secondaryBackend,omitempty"`
}

// AggregatorRef names an ApiAggregator.
type AggregatorRef struct {
	Name      string `json:"name"`
	Namespace string `json:"namespace,omitempty"`
}

// Path match types a route may use. Gateway API's RegularExpression is
// deliberately absent: its dialect is implementation-specific, and two
// regular expressions cannot be compared to decide a conflict.
const (
	PathExact  = "Exact"
	PathPrefix = "PathPrefix"
)

// Route is one path of a target.
type Route struct {
	Path     PathMatch     `json:"path"`
	Rewrite  *Rewrite      `json:"rewrite,omitempty"`
	Methods  []string      `json:"methods,omitempty"`
	Headers  []HeaderMatch `json:"headers,omitempty"`
	Timeouts *Timeouts     `json:"timeouts,omitempty"`
}

// PathMatch is a Gateway API path match restricted to Exact and PathPrefix.
type PathMatch struct {
	Type  string `json:"type,omitempty"`
	Value string `json:"value"`
}

// Rewrite replaces the matched prefix before the request reaches the
// backend.
type Rewrite struct {
	ReplacePrefixMatch string `json:"replacePrefixMatch"`
}

// HeaderMatch is an exact header match.
type HeaderMatch struct {
	// Type is always Exact; it exists so that RegularExpression is refused
	// with a message rather than silently dropped.
	Type  string `json:"type,omitempty"`
	Name  string `json:"name"`
	Value string `json:"value"`
}

// Backend is a Service port; an empty namespace is the referrer's.
type Backend struct {
	Name      string `json:"name"`
	Namespace string `json:"namespace,omitempty"`
	Port      int32  `json:"port"`
}

// WeightedBackend is a Backend with a share of the traffic in percent.
type WeightedBackend struct {
	Backend `json:",inline"`
	Weight  int32 `json:"weight"`
}

// Aggregator is an ApiAggregator as the stages see it.
type Aggregator struct {
	Ref  Ref
	Spec AggregatorSpec
	// Destinations is status.destinations: where the controller placed the
	// aggregator's output.
	Destinations []string
	// Deleting is true once deletion started.
	Deleting bool
}

// Target is an ApiAggregatorTarget as the stages see it.
type Target struct {
	Ref     Ref
	Created time.Time
	Spec    TargetSpec
	// Deleting is true once deletion started: a target on its way out
	// gives its paths up.
	Deleting bool
	// ParseError is set when the spec could not be read; such a target
	// claims nothing.
	ParseError error
	// judged is set on targets from the cache (see targetCache); admission
	// works it out for the others.
	judged *judged
}

// AggregatorRef resolves the target's reference: an empty namespace is
// the target's own.
func (t Target) AggregatorRef() Ref {
	ns := t.Spec.Aggregator.Namespace
	if ns == "" {
		ns = t.Ref.Namespace
	}
	return Ref{Namespace: ns, Name: t.Spec.Aggregator.Name}
}

// ParseAggregator reads an ApiAggregator from an unstructured object.
func ParseAggregator(u *unstructured.Unstructured) (Aggregator, error) {
	a := Aggregator{Ref: Ref{Namespace: u.GetNamespace(), Name: u.GetName()}, Deleting: u.GetDeletionTimestamp() != nil}
	if err := decodeSpec(u, &a.Spec); err != nil {
		return a, fmt.Errorf("%s %s: %w", KindAggregator, a.Ref, err)
	}
	dests, _, err := unstructured.NestedStringSlice(u.Object, "status", "destinations")
	if err != nil {
		return a, fmt.Errorf("%s %s: status.destinations: %w", KindAggregator, a.Ref, err)
	}
	a.Destinations = dests
	return a, nil
}

// ParseTarget reads an ApiAggregatorTarget from an unstructured object.
func ParseTarget(u *unstructured.Unstructured) (Target, error) {
	t := Target{Ref: Ref{Namespace: u.GetNamespace(), Name: u.GetName()}, Created: u.GetCreationTimestamp().Time, Deleting: u.GetDeletionTimestamp() != nil}
	if err := decodeSpec(u, &t.Spec); err != nil {
		return t, fmt.Errorf("%s %s: %w", KindTarget, t.Ref, err)
	}
	return t, nil
}

// decodeSpec goes through JSON because the spec arrives as an unstructured
// map whose numbers may be int64 or float64 depending on who decoded it.
func decodeSpec(u *unstructured.Unstructured, into any) error {
	spec, ok := u.Object["spec"]
	if !ok {
		return fmt.Errorf("spec: Required value")
	}
	data, err := json.Marshal(spec)
	if err != nil {
		return fmt.Errorf("encoding spec: %w", err)
	}
	if err := json.Unmarshal(data, into); err != nil {
		return fmt.Errorf("spec: %w", err)
	}
	return nil
}
