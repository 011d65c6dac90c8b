package apiaggregator

import (
	"fmt"
	"slices"
	"sort"
	"strings"
)

// Verdict is the admission decision for one target.
type Verdict struct {
	// Admitted is true when the target's routes may be rendered.
	Admitted bool
	// Reason says why a target is refused, naming the field at fault.
	Reason string
	// ConflictsWith is the target that holds a path this one claims.
	ConflictsWith *Ref
}

// claim is one request shape a route answers for. Two claims with the same
// key on one aggregator would make Gateway API fall back to route age to
// pick a winner, which the developers involved cannot see; Admit refuses
// the later one instead, so the conflict shows in its status.
type claim struct {
	key   string
	desc  string
	route int
}

// claimsOf lists what a target's routes answer for. An Exact path is owned
// whole: two teams may not split one exact resource by method or header.
// A PathPrefix is owned per method and header set, which are exactly the
// cases Gateway API's precedence rules cannot tell apart: a prefix that is
// longer, or a match with a method or more headers, wins by specificity
// and is not a conflict.
func claimsOf(spec TargetSpec) []claim {
	var out []claim
	for i, r := range spec.Routes {
		if pathType(r.Path) == PathExact {
			out = append(out, claim{key: "Exact\x00" + r.Path.Value, desc: "Exact path " + r.Path.Value, route: i})
			continue
		}
		prefix := normalPrefix(r.Path.Value)
		hdrs := headerKey(r.Headers)
		methods := r.Methods
		if len(methods) == 0 {
			methods = []string{""}
		}
		for _, m := range methods {
			out = append(out, claim{key: "PathPrefix\x00" + prefix + "\x00" + m + "\x00" + hdrs, desc: describePrefix(prefix, m, r.Headers), route: i})
		}
	}
	return out
}

// normalPrefix drops a trailing slash: Gateway API matches prefixes element
// by element and ignores a trailing "/", so /orders and /orders/ are one
// prefix.
func normalPrefix(v string) string {
	if len(v) > 1 {
		return strings.TrimSuffix(v, "/")
	}
	return v
}

func headerKey(hs []HeaderMatch) string {
	parts := make([]string, 0, len(hs))
	for _, h := range hs {
		parts = append(parts, strings.ToLower(h.Name)+"="+h.Value)
	}
	sort.Strings(parts)
	return strings.Join(parts, "\x00")
}

func describePrefix(prefix, method string, hs []HeaderMatch) string {
	s := "PathPrefix " + prefix
	if method == "" {
		s += " for any method"
	} else {
		s += " for " + method
	}
	if len(hs) > 0 {
		parts := make([]string, 0, len(hs))
		for _, h := range hs {
			parts = append(parts, h.Name+": "+h.Value)
		}
		sort.Strings(parts)
		s += " with headers " + strings.Join(parts, ", ")
	}
	return s
}

// NamespaceAllowed reports whether targets in namespace ns may attach to a.
// The aggregator's own namespace is always allowed: its default route
// lives there.
func NamespaceAllowed(a Aggregator, ns string) bool {
	switch a.Spec.TargetNamespaces.From {
	case FromAll:
		return true
	case FromList:
		return ns == a.Ref.Namespace || slices.Contains(a.Spec.TargetNamespaces.Names, ns)
	default:
		return ns == a.Ref.Namespace
	}
}

// Admit decides which targets of aggregator a may have their routes
// rendered. targets may hold targets of any aggregator; only those that
// reference a and are not being deleted take part.
//
// Targets are considered oldest first (creation time, then namespace/name,
// the order Gateway API itself uses to break ties between routes), and a
// target is admitted when it is valid, comes from an allowed namespace and
// claims nothing an admitted target already holds. A refused target claims
// nothing, so a target refused for one path does not block a third target
// that wants another of its paths. Every target's stage evaluates the same
// function over the same objects, so they agree without coordinating.
func Admit(a Aggregator, targets []Target) map[Ref]Verdict {
	mine := make([]Target, 0, len(targets))
	for _, t := range targets {
		if !t.Deleting && t.AggregatorRef() == a.Ref {
			mine = append(mine, t)
		}
	}
	sort.SliceStable(mine, func(i, j int) bool { return olderFirst(mine[i], mine[j]) })

	held := map[string]Ref{}
	// The aggregator's default route holds PathPrefix / for any method
	// and no header; it is older than any target's route, so Gateway API
	// would give it a target's identical claim.
	var defaultKey string
	if a.Spec.DefaultBackend != nil {
		defaultKey = "PathPrefix\x00/\x00\x00"
	}
	out := make(map[Ref]Verdict, len(mine))
	for _, t := range mine {
		out[t.Ref] = admitOne(a, t, held, defaultKey)
	}
	return out
}

func olderFirst(a, b Target) bool {
	if !a.Created.Equal(b.Created) {
		return a.Created.Before(b.Created)
	}
	if a.Ref.Namespace != b.Ref.Namespace {
		return a.Ref.Namespace < b.Ref.Namespace
	}
	return a.Ref.Name < b.Ref.Name
}

// admitOne judges one target and, when it is admitted, records its claims
// in held.
func admitOne(a Aggregator, t Target, held map[string]Ref, defaultKey string) Verdict {
	if t.ParseError != nil {
		return Verdict{Reason: t.ParseError.Error()}
	}
	j := t.judged
	if j == nil {
		j = judge(t)
	}
	if j.invalid != "" {
		return Verdict{Reason: j.invalid}
	}
	if !NamespaceAllowed(a, t.Ref.Namespace) {
		return Verdict{Reason: fmt.Sprintf("namespace %q is not allowed to attach to %s %s (its spec.targetNamespaces %s)", t.Ref.Namespace, KindAggregator, a.Ref, describeNamespaces(a))}
	}
	claims := j.claims
	own := map[string]int{}
	for _, c := range claims {
		if c.key == defaultKey {
			return Verdict{Reason: fmt.Sprintf("spec.routes[%d]: %s is the default route of %s %s (its spec.defaultBackend): add a method or a header, or a longer prefix", c.route, c.desc, KindAggregator, a.Ref)}
		}
		if holder, ok := held[c.key]; ok {
			return Verdict{ConflictsWith: &holder, Reason: fmt.Sprintf("spec.routes[%d]: %s is already claimed by %s %s on %s %s; the target created first keeps a path", c.route, c.desc, KindTarget, holder, KindAggregator, a.Ref)}
		}
		if first, ok := own[c.key]; ok && first != c.route {
			return Verdict{Reason: fmt.Sprintf("spec.routes[%d]: %s is already claimed by spec.routes[%d]", c.route, c.desc, first)}
		}
		own[c.key] = c.route
	}
	for _, c := range claims {
		held[c.key] = t.Ref
	}
	return Verdict{Admitted: true}
}

func describeNamespaces(a Aggregator) string {
	switch a.Spec.TargetNamespaces.From {
	case FromAll:
		return "allow all namespaces"
	case FromList:
		return fmt.Sprintf("allow %s and %s", a.Ref.Namespace, strings.Join(a.Spec.TargetNamespaces.Names, ", "))
	default:
		return "allow only its own namespace " + a.Ref.Namespace
	}
}
