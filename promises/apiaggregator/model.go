package apiaggregator

import (
	"fmt"
	"slices"
	"strings"
)

// The model is what the ytt templates receive as data values: every
// decision already taken in Go, so the templates only lay out Gateway API
// YAML. Field names are the templates' vocabulary.

// Labels every rendered object carries, so that a destination's operator
// can find what an aggregator or a target produced.
const (
	// LabelManagedBy is "promised" on every rendered object.
	LabelManagedBy = "app.kubernetes.io/managed-by"
	// LabelAggregator is the name of the aggregator an object serves.
	LabelAggregator = Group + "/aggregator"
	// LabelAggregatorNamespace is that aggregator's namespace.
	LabelAggregatorNamespace = Group + "/aggregator-namespace"
	// LabelTarget is the name of the target that rendered an object.
	LabelTarget = Group + "/target"
	// LabelTargetNamespace is that target's namespace.
	LabelTargetNamespace = Group + "/target-namespace"
)

// gatewayGroup is the API group of every Gateway API object rendered.
const gatewayGroup = "gateway.networking.k8s.io"

// ParentRef is what target routes attach to: the aggregator's Gateway, or
// the ListenerSet that carries its listeners on a shared Gateway.
type ParentRef struct {
	Group     string `json:"group"`
	Kind      string `json:"kind"`
	Name      string `json:"name"`
	Namespace string `json:"namespace"`
}

// Attachment returns the parent a's targets attach their routes to. Both
// stages derive it from a's spec with this one function, so a target never
// needs the aggregator's output.
func Attachment(a Aggregator) ParentRef {
	kind := "Gateway"
	if a.Spec.Gateway.Shared != nil {
		kind = "ListenerSet"
	}
	return ParentRef{Group: gatewayGroup, Kind: kind, Name: a.Ref.Name, Namespace: a.Ref.Namespace}
}

type listener struct {
	Name     string `json:"name"`
	Hostname string `json:"hostname"`
	Port     int32  `json:"port"`
	Protocol string `json:"protocol"`
}

type allowedRoutes struct {
	// From is Gateway API's Same, All or Selector.
	From string `json:"policy"`
	// Namespaces are matched by kubernetes.io/metadata.name for Selector.
	Namespaces []string `json:"namespaces"`
}

type grantTo struct {
	Group string `json:"group"`
	Kind  string `json:"kind"`
	Name  string `json:"name"`
}

type referenceGrant struct {
	Name          string            `json:"name"`
	Labels        map[string]string `json:"labels"`
	Namespace     string            `json:"namespace"`
	FromGroup     string            `json:"fromGroup"`
	FromKind      string            `json:"fromKind"`
	FromNamespace string            `json:"fromNamespace"`
	To            []grantTo         `json:"to"`
}

type backendRef struct {
	Name string `json:"name"`
	// Namespace is empty when the Service is in the route's namespace.
	Namespace string `json:"namespace"`
	Port      int32  `json:"port"`
	// Weight is nil for a single backend (Gateway API's default of 1).
	Weight *int32 `json:"weight"`
}

type header struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

type match struct {
	PathType  string   `json:"pathType"`
	PathValue string   `json:"pathValue"`
	Method    string   `json:"method"`
	Headers   []header `json:"headers"`
}

type rule struct {
	Matches       []match      `json:"matches"`
	RewritePrefix string       `json:"rewritePrefix"`
	Backends      []backendRef `json:"backends"`
	Timeouts      *timeouts    `json:"timeouts"`
}

// timeouts keeps both keys even when empty, so templates can test them.
type timeouts struct {
	Request        string `json:"request"`
	BackendRequest string `json:"backendRequest"`
}

func timeoutsOf(t *Timeouts) *timeouts {
	if t == nil {
		return nil
	}
	return &timeouts{Request: t.Request, BackendRequest: t.BackendRequest}
}

type httpRoute struct {
	Name      string            `json:"name"`
	Namespace string            `json:"namespace"`
	Labels    map[string]string `json:"labels"`
	Parent    ParentRef         `json:"parent"`
	Hostnames []string          `json:"hostnames"`
	Rules     []rule            `json:"rules"`
}

type envoyModel struct {
	PolicyName string `json:"policyName"`
	// BodyLimit is RequestBuffer.limit, a resource quantity.
	BodyLimit string `json:"bodyLimit"`
}

// Kinds of model; every template starts by checking which one it got,
// since both promises render from one template folder.
const (
	modelAggregator = "aggregator"
	modelTarget     = "target"
)

type aggregatorModel struct {
	Kind      string            `json:"kind"`
	Name      string            `json:"name"`
	Namespace string            `json:"namespace"`
	Labels    map[string]string `json:"labels"`
	Parent    ParentRef         `json:"parent"`
	// Mode is "dedicated" or "shared".
	Mode             string           `json:"mode"`
	GatewayClassName string           `json:"gatewayClassName"`
	SharedGateway    *SharedGateway   `json:"sharedGateway"`
	Listeners        []listener       `json:"listeners"`
	Certificate      *SecretRef       `json:"certificate"`
	AllowedRoutes    allowedRoutes    `json:"allowedRoutes"`
	ReferenceGrants  []referenceGrant `json:"referenceGrants"`
	DefaultRoute     *httpRoute       `json:"defaultRoute"`
	Envoy            *envoyModel      `json:"envoy"`
}

type targetModel struct {
	Kind            string           `json:"kind"`
	Route           httpRoute        `json:"route"`
	ReferenceGrants []referenceGrant `json:"referenceGrants"`
}

func aggregatorLabels(a Aggregator) map[string]string {
	return map[string]string{LabelManagedBy: "promised", LabelAggregator: a.Ref.Name, LabelAggregatorNamespace: a.Ref.Namespace}
}

// buildAggregator computes what an aggregator renders. impl is the
// implementation whose policies are rendered (ImplementationNone for
// none).
func buildAggregator(a Aggregator, impl Implementation) aggregatorModel {
	s := a.Spec
	parent := Attachment(a)
	m := aggregatorModel{Kind: modelAggregator, Name: a.Ref.Name, Namespace: a.Ref.Namespace, Labels: aggregatorLabels(a), Parent: parent, ReferenceGrants: []referenceGrant{}}
	if s.Gateway.Shared != nil {
		m.Mode, m.SharedGateway = "shared", s.Gateway.Shared
	} else {
		m.Mode, m.GatewayClassName = "dedicated", s.Gateway.Dedicated.GatewayClassName
	}

	port, protocol := int32(80), "HTTP"
	if s.TLS != nil {
		port, protocol = 443, "HTTPS"
		cert := s.TLS.CertificateRef
		if cert.Namespace == "" {
			cert.Namespace = a.Ref.Namespace
		}
		m.Certificate = &cert
		if cert.Namespace != a.Ref.Namespace {
			// A listener may read a Secret of another namespace only
			// with that namespace's consent. ReferenceGrants are not
			// inherited from a Gateway by its ListenerSets, so the grant
			// names whichever object holds the listeners.
			m.ReferenceGrants = append(m.ReferenceGrants, referenceGrant{
				Name: grantName("apiaggregator", a.Ref, "tls"), Namespace: cert.Namespace, Labels: m.Labels,
				FromGroup: gatewayGroup, FromKind: parent.Kind, FromNamespace: a.Ref.Namespace,
				To: []grantTo{{Group: "", Kind: "Secret", Name: cert.Name}},
			})
		}
	}
	for _, h := range s.Hostnames {
		// One listener per hostname, named after it: hostnames are unique
		// DNS names, so the names are unique and stable when the list is
		// reordered.
		m.Listeners = append(m.Listeners, listener{Name: h, Hostname: h, Port: port, Protocol: protocol})
	}

	switch s.TargetNamespaces.From {
	case FromAll:
		m.AllowedRoutes = allowedRoutes{From: "All"}
	case FromList:
		names := append([]string{a.Ref.Namespace}, s.TargetNamespaces.Names...)
		slices.Sort(names)
		m.AllowedRoutes = allowedRoutes{From: "Selector", Namespaces: slices.Compact(names)}
	default:
		m.AllowedRoutes = allowedRoutes{From: "Same"}
	}

	if b := s.DefaultBackend; b != nil {
		route := httpRoute{
			Name: a.Ref.Name + "-default", Namespace: a.Ref.Namespace, Labels: aggregatorLabels(a),
			Parent: parent, Hostnames: s.Hostnames,
			Rules: []rule{{
				Matches:  []match{{PathType: PathPrefix, PathValue: "/"}},
				Backends: []backendRef{routeBackend(*b, a.Ref.Namespace, nil)},
				Timeouts: timeoutsOf(s.DefaultTimeouts),
			}},
		}
		m.DefaultRoute = &route
		m.ReferenceGrants = append(m.ReferenceGrants, serviceGrants(grantName("apiaggregator", a.Ref, "backend"), m.Labels, a.Ref.Namespace, []Backend{*b})...)
	}

	if impl == ImplementationEnvoyGateway && s.MaxRequestBodySize != "" {
		m.Envoy = &envoyModel{PolicyName: a.Ref.Name + "-limits", BodyLimit: s.MaxRequestBodySize}
	}
	return m
}

// buildTarget computes what an admitted target renders on aggregator a.
func buildTarget(t Target, a Aggregator) targetModel {
	labels := map[string]string{
		LabelManagedBy: "promised", LabelAggregator: a.Ref.Name, LabelAggregatorNamespace: a.Ref.Namespace,
		LabelTarget: t.Ref.Name, LabelTargetNamespace: t.Ref.Namespace,
	}
	backends := []Backend{t.Spec.Backend}
	var primaryWeight, secondaryWeight *int32
	if sb := t.Spec.SecondaryBackend; sb != nil {
		backends = append(backends, sb.Backend)
		w, rest := sb.Weight, 100-sb.Weight
		primaryWeight, secondaryWeight = &rest, &w
	}
	refs := []backendRef{routeBackend(t.Spec.Backend, t.Ref.Namespace, primaryWeight)}
	if sb := t.Spec.SecondaryBackend; sb != nil {
		refs = append(refs, routeBackend(sb.Backend, t.Ref.Namespace, secondaryWeight))
	}

	var rules []rule
	for _, r := range t.Spec.Routes {
		timeouts := r.Timeouts
		if timeouts == nil {
			// Route timeouts replace the defaults whole: mixing a route's
			// request timeout with a default backendRequest could make
			// backendRequest longer than request, which Gateway API refuses.
			timeouts = a.Spec.DefaultTimeouts
		}
		for _, ms := range ruleMatches(r) {
			ru := rule{Matches: ms, Backends: refs, Timeouts: timeoutsOf(timeouts)}
			if r.Rewrite != nil {
				ru.RewritePrefix = r.Rewrite.ReplacePrefixMatch
			}
			rules = append(rules, ru)
		}
	}
	return targetModel{
		Kind: modelTarget,
		Route: httpRoute{
			Name: t.Ref.Name, Namespace: t.Ref.Namespace, Labels: labels,
			Parent: Attachment(a), Hostnames: a.Spec.Hostnames, Rules: rules,
		},
		ReferenceGrants: serviceGrants(grantName("apiaggregatortarget", t.Ref, ""), labels, t.Ref.Namespace, backends),
	}
}

// ruleMatches splits a route into the match lists of its HTTPRoute rules:
// one rule with a match per method, except that a route with a prefix
// rewrite needs a rule per method, because Gateway API allows
// replacePrefixMatch only in a rule with exactly one PathPrefix match.
func ruleMatches(r Route) [][]match {
	hs := []header{}
	for _, h := range r.Headers {
		hs = append(hs, header{Name: h.Name, Value: h.Value})
	}
	base := match{PathType: pathType(r.Path), PathValue: r.Path.Value, Headers: hs}
	if len(r.Methods) == 0 {
		return [][]match{{base}}
	}
	all := make([]match, 0, len(r.Methods))
	for _, m := range r.Methods {
		mm := base
		mm.Method = m
		all = append(all, mm)
	}
	if r.Rewrite == nil {
		return [][]match{all}
	}
	out := make([][]match, 0, len(all))
	for _, m := range all {
		out = append(out, []match{m})
	}
	return out
}

// ruleCount returns how many HTTPRoute rules and matches routes render to.
func ruleCount(routes []Route) (rules, matches int) {
	for _, r := range routes {
		for _, ms := range ruleMatches(r) {
			rules++
			matches += len(ms)
		}
	}
	return rules, matches
}

func routeBackend(b Backend, routeNamespace string, weight *int32) backendRef {
	ref := backendRef{Name: b.Name, Port: b.Port, Weight: weight}
	if b.Namespace != "" && b.Namespace != routeNamespace {
		ref.Namespace = b.Namespace
	}
	return ref
}

// serviceGrants returns, for each namespace other than the route's that
// holds one of backends, a ReferenceGrant letting HTTPRoutes of the
// route's namespace reach exactly those Services.
func serviceGrants(name string, labels map[string]string, routeNamespace string, backends []Backend) []referenceGrant {
	byNamespace := map[string][]grantTo{}
	var namespaces []string
	for _, b := range backends {
		ns := b.Namespace
		if ns == "" || ns == routeNamespace {
			continue
		}
		if _, ok := byNamespace[ns]; !ok {
			namespaces = append(namespaces, ns)
		}
		to := grantTo{Group: "", Kind: "Service", Name: b.Name}
		if !slices.Contains(byNamespace[ns], to) {
			byNamespace[ns] = append(byNamespace[ns], to)
		}
	}
	slices.Sort(namespaces)
	out := []referenceGrant{}
	for _, ns := range namespaces {
		out = append(out, referenceGrant{
			Name: name, Namespace: ns, Labels: labels,
			FromGroup: gatewayGroup, FromKind: "HTTPRoute", FromNamespace: routeNamespace,
			To: byNamespace[ns],
		})
	}
	return out
}

// grantName names a ReferenceGrant after the request that needs it. A dot
// separates namespace and name: namespaces hold no dots, so two requests
// never share a grant name.
func grantName(prefix string, r Ref, suffix string) string {
	parts := []string{prefix, r.Namespace, r.Name}
	if suffix != "" {
		parts = append(parts, suffix)
	}
	return strings.Join(parts, ".")
}

// describeRoute is a route as a status line shows it.
func describeRoute(r Route) string {
	s := fmt.Sprintf("%s %s", pathType(r.Path), r.Path.Value)
	if len(r.Methods) > 0 {
		s += " (" + strings.Join(r.Methods, ", ") + ")"
	}
	if r.Rewrite != nil {
		s += " -> " + r.Rewrite.ReplacePrefixMatch
	}
	return s
}
