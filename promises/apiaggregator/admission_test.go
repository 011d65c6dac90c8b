package apiaggregator

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

var t0 = time.Date(2026, 1, 1, 9, 0, 0, 0, time.UTC)

func testAggregator() Aggregator {
	return Aggregator{
		Ref: Ref{Namespace: "platform", Name: "api"},
		Spec: AggregatorSpec{
			Hostnames:        []string{"api.example.com"},
			Gateway:          GatewayChoice{Dedicated: &DedicatedGateway{GatewayClassName: "eg"}},
			TargetNamespaces: TargetNamespaces{From: FromAll},
		},
		Destinations: []string{"edge"},
	}
}

// target returns a target of platform/api created minutes after t0.
func target(ns, name string, minutes int, routes ...Route) Target {
	return Target{
		Ref:     Ref{Namespace: ns, Name: name},
		Created: t0.Add(time.Duration(minutes) * time.Minute),
		Spec: TargetSpec{
			Aggregator: AggregatorRef{Name: "api", Namespace: "platform"},
			Routes:     routes,
			Backend:    Backend{Name: name, Port: 80},
		},
	}
}

func prefix(v string, methods ...string) Route {
	return Route{Path: PathMatch{Type: PathPrefix, Value: v}, Methods: methods}
}

func exact(v string, methods ...string) Route {
	return Route{Path: PathMatch{Type: PathExact, Value: v}, Methods: methods}
}

func withHeaders(r Route, hs ...HeaderMatch) Route {
	r.Headers = hs
	return r
}

func TestAdmit(t *testing.T) {
	type want struct {
		admitted      bool
		conflictsWith string
		reason        string
	}
	for _, tc := range []struct {
		name    string
		agg     func(*Aggregator)
		targets []Target
		want    map[string]want
	}{
		{
			name:    "the older target keeps a prefix, whatever the list order",
			targets: []Target{target("b", "late", 5, prefix("/orders")), target("a", "early", 1, prefix("/orders"))},
			want:    map[string]want{"a/early": {admitted: true}, "b/late": {conflictsWith: "a/early", reason: "spec.routes[0]: PathPrefix /orders for any method is already claimed by ApiAggregatorTarget a/early"}},
		},
		{
			name:    "same creation second: namespace then name decide, as Gateway API does",
			targets: []Target{target("b", "a", 1, prefix("/x")), target("a", "z", 1, prefix("/x"))},
			want:    map[string]want{"a/z": {admitted: true}, "b/a": {conflictsWith: "a/z"}},
		},
		{
			name:    "a trailing slash names the same prefix",
			targets: []Target{target("a", "one", 1, prefix("/orders/")), target("a", "two", 2, prefix("/orders"))},
			want:    map[string]want{"a/one": {admitted: true}, "a/two": {conflictsWith: "a/one"}},
		},
		{
			name:    "an exact path is owned whole, whatever the methods",
			targets: []Target{target("a", "one", 1, exact("/health", "GET")), target("a", "two", 2, exact("/health", "POST"))},
			want:    map[string]want{"a/one": {admitted: true}, "a/two": {conflictsWith: "a/one", reason: "Exact path /health"}},
		},
		{
			name:    "a prefix is split by method",
			targets: []Target{target("a", "reads", 1, prefix("/orders", "GET")), target("a", "writes", 2, prefix("/orders", "POST", "PUT"))},
			want:    map[string]want{"a/reads": {admitted: true}, "a/writes": {admitted: true}},
		},
		{
			name:    "one shared method is a conflict",
			targets: []Target{target("a", "reads", 1, prefix("/orders", "GET")), target("a", "both", 2, prefix("/orders", "POST", "GET"))},
			want:    map[string]want{"a/reads": {admitted: true}, "a/both": {conflictsWith: "a/reads", reason: "PathPrefix /orders for GET"}},
		},
		{
			name: "a method or a header is more specific than none: Gateway API precedence, not a conflict",
			targets: []Target{
				target("a", "all", 1, prefix("/orders")),
				target("a", "get", 2, prefix("/orders", "GET")),
				target("a", "v2", 3, withHeaders(prefix("/orders"), HeaderMatch{Name: "X-Version", Value: "2"})),
			},
			want: map[string]want{"a/all": {admitted: true}, "a/get": {admitted: true}, "a/v2": {admitted: true}},
		},
		{
			name: "header names compare without case, values with",
			targets: []Target{
				target("a", "v2", 1, withHeaders(prefix("/orders"), HeaderMatch{Name: "X-Version", Value: "2"})),
				target("a", "v2-again", 2, withHeaders(prefix("/orders"), HeaderMatch{Name: "x-version", Value: "2"})),
				target("a", "v3", 3, withHeaders(prefix("/orders"), HeaderMatch{Name: "x-version", Value: "3"})),
			},
			want: map[string]want{"a/v2": {admitted: true}, "a/v2-again": {conflictsWith: "a/v2", reason: "with headers x-version: 2"}, "a/v3": {admitted: true}},
		},
		{
			name: "a refused target claims nothing, so a third one may take its other paths",
			targets: []Target{
				target("a", "first", 1, prefix("/orders")),
				target("a", "second", 2, prefix("/reports"), prefix("/orders")),
				target("a", "third", 3, prefix("/reports")),
			},
			want: map[string]want{"a/first": {admitted: true}, "a/second": {conflictsWith: "a/first", reason: "spec.routes[1]"}, "a/third": {admitted: true}},
		},
		{
			name: "a target being deleted gives its paths up",
			targets: func() []Target {
				gone := target("a", "gone", 1, prefix("/orders"))
				gone.Deleting = true
				return []Target{gone, target("a", "next", 2, prefix("/orders"))}
			}(),
			want: map[string]want{"a/next": {admitted: true}},
		},
		{
			name: "targets of other aggregators do not take part",
			targets: func() []Target {
				other := target("a", "elsewhere", 1, prefix("/orders"))
				other.Spec.Aggregator = AggregatorRef{Name: "internal"}
				return []Target{other, target("a", "here", 2, prefix("/orders"))}
			}(),
			want: map[string]want{"a/here": {admitted: true}},
		},
		{
			name:    "a target may not repeat itself",
			targets: []Target{target("a", "twice", 1, prefix("/orders", "GET"), prefix("/orders/", "GET"))},
			want:    map[string]want{"a/twice": {reason: "spec.routes[1]: PathPrefix /orders for GET is already claimed by spec.routes[0]"}},
		},
		{
			name: "namespaces outside targetNamespaces are refused",
			agg: func(a *Aggregator) {
				a.Spec.TargetNamespaces = TargetNamespaces{From: FromList, Names: []string{"team-a"}}
			},
			targets: []Target{target("team-b", "x", 1, prefix("/x")), target("team-a", "y", 2, prefix("/x")), target("platform", "z", 3, prefix("/z"))},
			want: map[string]want{
				"team-b/x":   {reason: `namespace "team-b" is not allowed to attach to ApiAggregator platform/api (its spec.targetNamespaces allow platform and team-a)`},
				"team-a/y":   {admitted: true},
				"platform/z": {admitted: true},
			},
		},
		{
			name:    "Same allows only the aggregator's namespace",
			agg:     func(a *Aggregator) { a.Spec.TargetNamespaces = TargetNamespaces{} },
			targets: []Target{target("team-a", "x", 1, prefix("/x")), target("platform", "y", 2, prefix("/y"))},
			want:    map[string]want{"team-a/x": {reason: "allow only its own namespace platform"}, "platform/y": {admitted: true}},
		},
		{
			name:    "the default route holds / for any method",
			agg:     func(a *Aggregator) { a.Spec.DefaultBackend = &Backend{Name: "not-found", Port: 80} },
			targets: []Target{target("a", "root", 1, prefix("/")), target("a", "root-get", 2, prefix("/", "GET"))},
			want:    map[string]want{"a/root": {reason: "is the default route of ApiAggregator platform/api"}, "a/root-get": {admitted: true}},
		},
		{
			name: "an invalid target is refused and claims nothing",
			targets: func() []Target {
				bad := target("a", "bad", 1, prefix("/orders"), prefix("no-slash"))
				return []Target{bad, target("a", "good", 2, prefix("/orders"))}
			}(),
			want: map[string]want{"a/bad": {reason: "spec.routes[1].path.value"}, "a/good": {admitted: true}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			agg := testAggregator()
			if tc.agg != nil {
				tc.agg(&agg)
			}
			got := Admit(agg, tc.targets)
			require.Len(t, got, len(tc.want))
			for ref, w := range tc.want {
				ns, name, _ := cut(ref)
				v, ok := got[Ref{Namespace: ns, Name: name}]
				require.True(t, ok, "no verdict for %s", ref)
				require.Equal(t, w.admitted, v.Admitted, "%s: %s", ref, v.Reason)
				if w.conflictsWith != "" {
					require.NotNil(t, v.ConflictsWith, ref)
					require.Equal(t, w.conflictsWith, v.ConflictsWith.String(), ref)
				}
				require.Contains(t, v.Reason, w.reason, ref)
			}
		})
	}
}

// TestAdmitIsOrderIndependent checks what lets every target's stage decide
// alone: the verdicts do not depend on the order the objects are listed in.
func TestAdmitIsOrderIndependent(t *testing.T) {
	targets := []Target{
		target("a", "one", 3, prefix("/x", "GET"), exact("/y")),
		target("b", "two", 1, prefix("/x")),
		target("c", "three", 2, exact("/y"), prefix("/x", "GET")),
		target("a", "four", 2, prefix("/z")),
	}
	want := Admit(testAggregator(), targets)
	for i := 0; i < len(targets); i++ {
		rotated := append(append([]Target{}, targets[i:]...), targets[:i]...)
		require.Equal(t, want, Admit(testAggregator(), rotated))
	}
	require.True(t, want[Ref{"b", "two"}].Admitted)
	require.True(t, want[Ref{"c", "three"}].Admitted)
	require.False(t, want[Ref{"a", "one"}].Admitted)
	require.True(t, want[Ref{"a", "four"}].Admitted)
}

func cut(ref string) (string, string, bool) {
	for i := range ref {
		if ref[i] == '/' {
			return ref[:i], ref[i+1:], true
		}
	}
	return "", ref, false
}
