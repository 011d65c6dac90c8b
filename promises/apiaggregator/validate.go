package apiaggregator

import (
	"fmt"
	"regexp"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// These checks repeat the promises' CRD schemas. The apiserver enforces the
// schemas (CEL included) before the controller sees a request, but a local
// run (`promised render`, `promised test`) checks only the OpenAPI part,
// and a request that slipped through must fail here, naming its field,
// rather than render a Gateway API object the destination refuses.

// Limits shared with the CRD schemas.
const (
	// maxNameLength bounds request names: rendered objects and label values
	// are named after them, and label values hold at most 63 characters.
	maxNameLength  = 63
	maxHostnames   = 16
	maxRoutes      = 16
	maxPathLength  = 1024
	maxHeaders     = 16
	maxHeaderName  = 256
	maxHeaderValue = 4096
	// maxRules and maxMatches are Gateway API's limits for one HTTPRoute.
	maxRules   = 16
	maxMatches = 128
)

var (
	// pathChars is Gateway API's character rule for Exact and PathPrefix
	// paths (HTTPPathMatch).
	pathChars = regexp.MustCompile(`^(?:[-A-Za-z0-9/._~!$&'()*+,;=:@]|[%][0-9a-fA-F]{2})+$`)
	// durationFormat is GEP-2257's duration, a strict subset of Go's.
	durationFormat = regexp.MustCompile(`^([0-9]{1,5}(h|m|s|ms)){1,4}$`)
	// headerName is Gateway API's HeaderName.
	headerName = regexp.MustCompile("^[A-Za-z0-9!#$%&'*+\\-.^_`|~]+$")
	// quantityFormat is Envoy Gateway's RequestBuffer.limit pattern.
	quantityFormat = regexp.MustCompile(`^[1-9]+[0-9]*([EPTGMK]i|[EPTGMk])?$`)
)

// httpMethods are the methods an HTTPRouteMatch accepts.
var httpMethods = sets.New("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH")

// ValidateAggregator reports every field of an ApiAggregator the stage
// cannot render.
func ValidateAggregator(a Aggregator) field.ErrorList {
	var errs field.ErrorList
	if len(a.Ref.Name) > maxNameLength {
		errs = append(errs, field.TooLong(field.NewPath("metadata", "name"), a.Ref.Name, maxNameLength))
	}
	spec := field.NewPath("spec")
	s := a.Spec
	errs = append(errs, validateHostnames(spec.Child("hostnames"), s.Hostnames)...)

	gw := spec.Child("gateway")
	switch {
	case (s.Gateway.Shared == nil) == (s.Gateway.Dedicated == nil):
		errs = append(errs, field.Invalid(gw, "", "set exactly one of shared and dedicated"))
	case s.Gateway.Shared != nil:
		errs = append(errs, validateSubdomain(gw.Child("shared", "name"), s.Gateway.Shared.Name)...)
		errs = append(errs, validateNamespace(gw.Child("shared", "namespace"), s.Gateway.Shared.Namespace, true)...)
	default:
		errs = append(errs, validateSubdomain(gw.Child("dedicated", "gatewayClassName"), s.Gateway.Dedicated.GatewayClassName)...)
	}
	if s.TLS != nil {
		ref := spec.Child("tls", "certificateRef")
		errs = append(errs, validateSubdomain(ref.Child("name"), s.TLS.CertificateRef.Name)...)
		errs = append(errs, validateNamespace(ref.Child("namespace"), s.TLS.CertificateRef.Namespace, false)...)
	}
	errs = append(errs, validateTimeouts(spec.Child("defaultTimeouts"), s.DefaultTimeouts)...)
	if s.MaxRequestBodySize != "" {
		p := spec.Child("maxRequestBodySize")
		if !quantityFormat.MatchString(s.MaxRequestBodySize) {
			errs = append(errs, field.Invalid(p, s.MaxRequestBodySize, "must be a whole number of bytes with an optional suffix, such as 10Mi or 500k"))
		} else if _, err := resource.ParseQuantity(s.MaxRequestBodySize); err != nil {
			errs = append(errs, field.Invalid(p, s.MaxRequestBodySize, err.Error()))
		}
	}
	tn := spec.Child("targetNamespaces")
	switch s.TargetNamespaces.From {
	case "", FromSame, FromAll:
		if len(s.TargetNamespaces.Names) > 0 {
			errs = append(errs, field.Forbidden(tn.Child("names"), "only allowed when from is List"))
		}
	case FromList:
		if len(s.TargetNamespaces.Names) == 0 {
			errs = append(errs, field.Required(tn.Child("names"), "from: List needs at least one namespace"))
		}
		for i, n := range s.TargetNamespaces.Names {
			errs = append(errs, validateNamespace(tn.Child("names").Index(i), n, true)...)
		}
	default:
		errs = append(errs, field.NotSupported(tn.Child("from"), s.TargetNamespaces.From, []string{FromSame, FromAll, FromList}))
	}
	if s.DefaultBackend != nil {
		errs = append(errs, validateBackend(spec.Child("defaultBackend"), *s.DefaultBackend)...)
	}
	return errs
}

func validateHostnames(p *field.Path, hosts []string) field.ErrorList {
	var errs field.ErrorList
	if len(hosts) == 0 {
		return append(errs, field.Required(p, "at least one hostname"))
	}
	if len(hosts) > maxHostnames {
		errs = append(errs, field.TooMany(p, len(hosts), maxHostnames))
	}
	seen := sets.New[string]()
	for i, h := range hosts {
		if strings.Contains(h, "*") {
			// A wildcard listener on a shared Gateway would also catch
			// every other subdomain nobody else serves, and targets could
			// not tell which hostname a route is reachable on.
			errs = append(errs, field.Invalid(p.Index(i), h, "wildcard hostnames are not allowed: an aggregator serves exact hostnames"))
			continue
		}
		errs = append(errs, validateSubdomain(p.Index(i), h)...)
		if seen.Has(h) {
			errs = append(errs, field.Duplicate(p.Index(i), h))
		}
		seen.Insert(h)
	}
	return errs
}

// ValidateTarget reports every field of an ApiAggregatorTarget the stage
// cannot render.
func ValidateTarget(t Target) field.ErrorList {
	var errs field.ErrorList
	if len(t.Ref.Name) > maxNameLength {
		errs = append(errs, field.TooLong(field.NewPath("metadata", "name"), t.Ref.Name, maxNameLength))
	}
	spec := field.NewPath("spec")
	s := t.Spec
	errs = append(errs, validateSubdomain(spec.Child("aggregator", "name"), s.Aggregator.Name)...)
	if len(s.Aggregator.Name) > maxNameLength {
		errs = append(errs, field.TooLong(spec.Child("aggregator", "name"), s.Aggregator.Name, maxNameLength))
	}
	errs = append(errs, validateNamespace(spec.Child("aggregator", "namespace"), s.Aggregator.Namespace, false)...)

	routes := spec.Child("routes")
	switch {
	case len(s.Routes) == 0:
		errs = append(errs, field.Required(routes, "at least one route"))
	case len(s.Routes) > maxRoutes:
		errs = append(errs, field.TooMany(routes, len(s.Routes), maxRoutes))
	}
	for i, r := range s.Routes {
		errs = append(errs, validateRoute(routes.Index(i), r)...)
	}
	if len(errs) == 0 {
		// Only meaningful once every route is valid on its own.
		rules, matches := ruleCount(s.Routes)
		if rules > maxRules {
			errs = append(errs, field.Invalid(routes, len(s.Routes), fmt.Sprintf("the routes need %d HTTPRoute rules and Gateway API allows %d: a route with a rewrite needs one rule per method", rules, maxRules)))
		}
		if matches > maxMatches {
			errs = append(errs, field.Invalid(routes, len(s.Routes), fmt.Sprintf("the routes need %d HTTPRoute matches (one per method) and Gateway API allows %d", matches, maxMatches)))
		}
	}

	errs = append(errs, validateBackend(spec.Child("backend"), s.Backend)...)
	if sb := s.SecondaryBackend; sb != nil {
		p := spec.Child("secondaryBackend")
		errs = append(errs, validateBackend(p, sb.Backend)...)
		if sb.Weight < 0 || sb.Weight > 100 {
			errs = append(errs, field.Invalid(p.Child("weight"), sb.Weight, "must be a percentage between 0 and 100"))
		}
		if resolve(sb.Backend, t.Ref.Namespace) == resolve(s.Backend, t.Ref.Namespace) {
			errs = append(errs, field.Invalid(p, sb.Name, "must not point at the same Service port as spec.backend: a split to itself is no split"))
		}
	}
	return errs
}

func validateRoute(p *field.Path, r Route) field.ErrorList {
	var errs field.ErrorList
	pp := p.Child("path")
	switch r.Path.Type {
	case "", PathExact, PathPrefix:
	case "RegularExpression":
		errs = append(errs, field.NotSupported(pp.Child("type"), r.Path.Type, []string{PathExact, PathPrefix}))
	default:
		errs = append(errs, field.NotSupported(pp.Child("type"), r.Path.Type, []string{PathExact, PathPrefix}))
	}
	errs = append(errs, validatePath(pp.Child("value"), r.Path.Value)...)
	if r.Rewrite != nil {
		rp := p.Child("rewrite", "replacePrefixMatch")
		if pathType(r.Path) != PathPrefix {
			errs = append(errs, field.Invalid(rp, r.Rewrite.ReplacePrefixMatch, "a prefix rewrite needs a PathPrefix path"))
		}
		if !strings.HasPrefix(r.Rewrite.ReplacePrefixMatch, "/") {
			errs = append(errs, field.Invalid(rp, r.Rewrite.ReplacePrefixMatch, "must start with /"))
		}
		if len(r.Rewrite.ReplacePrefixMatch) > maxPathLength {
			errs = append(errs, field.TooLong(rp, r.Rewrite.ReplacePrefixMatch, maxPathLength))
		}
	}
	seenMethods := sets.New[string]()
	for i, m := range r.Methods {
		mp := p.Child("methods").Index(i)
		if !httpMethods.Has(m) {
			errs = append(errs, field.NotSupported(mp, m, sets.List(httpMethods)))
		}
		if seenMethods.Has(m) {
			errs = append(errs, field.Duplicate(mp, m))
		}
		seenMethods.Insert(m)
	}
	if len(r.Headers) > maxHeaders {
		errs = append(errs, field.TooMany(p.Child("headers"), len(r.Headers), maxHeaders))
	}
	seenHeaders := sets.New[string]()
	for i, h := range r.Headers {
		hp := p.Child("headers").Index(i)
		if h.Type != "" && h.Type != "Exact" {
			errs = append(errs, field.NotSupported(hp.Child("type"), h.Type, []string{"Exact"}))
		}
		switch {
		case h.Name == "":
			errs = append(errs, field.Required(hp.Child("name"), ""))
		case len(h.Name) > maxHeaderName:
			errs = append(errs, field.TooLong(hp.Child("name"), h.Name, maxHeaderName))
		case !headerName.MatchString(h.Name):
			errs = append(errs, field.Invalid(hp.Child("name"), h.Name, "must be an HTTP header name (RFC 7230 token)"))
		}
		// Header names are case-insensitive; Gateway API would silently
		// ignore the second of two equivalent names.
		if lower := strings.ToLower(h.Name); seenHeaders.Has(lower) {
			errs = append(errs, field.Duplicate(hp.Child("name"), h.Name))
		} else {
			seenHeaders.Insert(lower)
		}
		if h.Value == "" {
			errs = append(errs, field.Required(hp.Child("value"), ""))
		} else if len(h.Value) > maxHeaderValue {
			errs = append(errs, field.TooLong(hp.Child("value"), h.Value, maxHeaderValue))
		}
	}
	return append(errs, validateTimeouts(p.Child("timeouts"), r.Timeouts)...)
}

// validatePath applies Gateway API's rules for Exact and PathPrefix values.
func validatePath(p *field.Path, v string) field.ErrorList {
	var errs field.ErrorList
	switch {
	case v == "":
		return append(errs, field.Required(p, "a path such as /orders"))
	case !strings.HasPrefix(v, "/"):
		return append(errs, field.Invalid(p, v, "must start with /"))
	case len(v) > maxPathLength:
		return append(errs, field.TooLong(p, v, maxPathLength))
	}
	for _, bad := range []string{"//", "/./", "/../", "%2f", "%2F", "#"} {
		if strings.Contains(v, bad) {
			errs = append(errs, field.Invalid(p, v, fmt.Sprintf("must not contain %q", bad)))
		}
	}
	for _, bad := range []string{"/..", "/."} {
		if strings.HasSuffix(v, bad) {
			errs = append(errs, field.Invalid(p, v, fmt.Sprintf("must not end with %q", bad)))
		}
	}
	if !pathChars.MatchString(v) {
		errs = append(errs, field.Invalid(p, v, "must contain only URL path characters (RFC 3986 pchar and /)"))
	}
	return errs
}

func validateTimeouts(p *field.Path, t *Timeouts) field.ErrorList {
	if t == nil {
		return nil
	}
	var errs field.ErrorList
	parse := func(name, v string) (time.Duration, bool) {
		if v == "" {
			return 0, false
		}
		if !durationFormat.MatchString(v) {
			errs = append(errs, field.Invalid(p.Child(name), v, "must be a Gateway API duration such as 10s, 1m30s or 500ms"))
			return 0, false
		}
		d, err := time.ParseDuration(v)
		if err != nil {
			errs = append(errs, field.Invalid(p.Child(name), v, err.Error()))
			return 0, false
		}
		return d, true
	}
	req, hasReq := parse("request", t.Request)
	backend, hasBackend := parse("backendRequest", t.BackendRequest)
	// The same rule as HTTPRouteTimeouts: a zero request timeout means
	// "no timeout", so any backend timeout fits inside it.
	if hasReq && hasBackend && req != 0 && backend > req {
		errs = append(errs, field.Invalid(p.Child("backendRequest"), t.BackendRequest, "must not be longer than request"))
	}
	return errs
}

func validateBackend(p *field.Path, b Backend) field.ErrorList {
	var errs field.ErrorList
	if b.Name == "" {
		errs = append(errs, field.Required(p.Child("name"), "a Service name"))
	} else {
		for _, msg := range validation.IsDNS1035Label(b.Name) {
			errs = append(errs, field.Invalid(p.Child("name"), b.Name, msg))
		}
	}
	errs = append(errs, validateNamespace(p.Child("namespace"), b.Namespace, false)...)
	if b.Port < 1 || b.Port > 65535 {
		errs = append(errs, field.Invalid(p.Child("port"), b.Port, "must be a port number between 1 and 65535"))
	}
	return errs
}

func validateSubdomain(p *field.Path, v string) field.ErrorList {
	if v == "" {
		return field.ErrorList{field.Required(p, "")}
	}
	var errs field.ErrorList
	for _, msg := range validation.IsDNS1123Subdomain(v) {
		errs = append(errs, field.Invalid(p, v, msg))
	}
	return errs
}

func validateNamespace(p *field.Path, v string, required bool) field.ErrorList {
	if v == "" {
		if required {
			return field.ErrorList{field.Required(p, "")}
		}
		return nil
	}
	var errs field.ErrorList
	for _, msg := range validation.IsDNS1123Label(v) {
		errs = append(errs, field.Invalid(p, v, msg))
	}
	return errs
}

// resolve gives a backend the referrer's namespace when it names none.
func resolve(b Backend, namespace string) Backend {
	if b.Namespace == "" {
		b.Namespace = namespace
	}
	return b
}

func pathType(m PathMatch) string {
	if m.Type == "" {
		return PathPrefix
	}
	return m.Type
}
