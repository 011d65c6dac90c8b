package apiaggregator

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// The stage's own checks, which stand in for the schema's CEL rules in
// local runs: each bad input is refused with a message naming its field.
func TestValidateTarget(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(*Target)
		want   string
	}{
		{"valid", func(*Target) {}, ""},
		{"path without a leading slash", func(t *Target) { t.Spec.Routes[0].Path.Value = "orders" }, `spec.routes[0].path.value: Invalid value: "orders": must start with /`},
		{"regular expression paths", func(t *Target) { t.Spec.Routes[0].Path.Type = "RegularExpression" }, `spec.routes[0].path.type: Unsupported value: "RegularExpression"`},
		{"a dot segment", func(t *Target) { t.Spec.Routes[0].Path.Value = "/a/../b" }, `spec.routes[0].path.value: Invalid value: "/a/../b": must not contain "/../"`},
		{"a space in the path", func(t *Target) { t.Spec.Routes[0].Path.Value = "/a b" }, "spec.routes[0].path.value"},
		{"a rewrite on an exact path", func(t *Target) {
			t.Spec.Routes[0].Path.Type = PathExact
			t.Spec.Routes[0].Rewrite = &Rewrite{ReplacePrefixMatch: "/"}
		}, "spec.routes[0].rewrite.replacePrefixMatch: Invalid value: \"/\": a prefix rewrite needs a PathPrefix path"},
		{"regular expression headers", func(t *Target) {
			t.Spec.Routes[0].Headers = []HeaderMatch{{Type: "RegularExpression", Name: "x", Value: ".*"}}
		}, `spec.routes[0].headers[0].type: Unsupported value: "RegularExpression"`},
		{"the same header twice", func(t *Target) {
			t.Spec.Routes[0].Headers = []HeaderMatch{{Name: "X-A", Value: "1"}, {Name: "x-a", Value: "2"}}
		}, `spec.routes[0].headers[1].name: Duplicate value: "x-a"`},
		{"an unknown method", func(t *Target) { t.Spec.Routes[0].Methods = []string{"FETCH"} }, `spec.routes[0].methods[0]: Unsupported value: "FETCH"`},
		{"a port out of range", func(t *Target) { t.Spec.Backend.Port = 70000 }, "spec.backend.port: Invalid value: 70000"},
		{"no port", func(t *Target) { t.Spec.Backend.Port = 0 }, "spec.backend.port"},
		{"a Service name that is not a DNS label", func(t *Target) { t.Spec.Backend.Name = "Orders" }, "spec.backend.name"},
		{"a split to the same Service port", func(t *Target) {
			t.Spec.SecondaryBackend = &WeightedBackend{Backend: Backend{Name: "orders", Namespace: "team-a", Port: 8080}, Weight: 10}
		}, "spec.secondaryBackend: Invalid value: \"orders\": must not point at the same Service port as spec.backend"},
		{"a weight above 100", func(t *Target) {
			t.Spec.SecondaryBackend = &WeightedBackend{Backend: Backend{Name: "canary", Port: 8080}, Weight: 101}
		}, "spec.secondaryBackend.weight"},
		{"a backend timeout longer than the request's", func(t *Target) {
			t.Spec.Routes[0].Timeouts = &Timeouts{Request: "1s", BackendRequest: "2s"}
		}, "spec.routes[0].timeouts.backendRequest: Invalid value: \"2s\": must not be longer than request"},
		{"a duration Go accepts but Gateway API does not", func(t *Target) {
			t.Spec.Routes[0].Timeouts = &Timeouts{Request: "1.5s"}
		}, "spec.routes[0].timeouts.request"},
		{"more rules than one HTTPRoute holds", func(t *Target) {
			all := []string{"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}
			t.Spec.Routes = []Route{
				{Path: PathMatch{Value: "/a"}, Rewrite: &Rewrite{ReplacePrefixMatch: "/"}, Methods: all},
				{Path: PathMatch{Value: "/b"}, Rewrite: &Rewrite{ReplacePrefixMatch: "/"}, Methods: all},
			}
		}, "spec.routes: Invalid value: 2: the routes need 18 HTTPRoute rules and Gateway API allows 16"},
		{"no routes", func(t *Target) { t.Spec.Routes = nil }, "spec.routes: Required value"},
		{"no aggregator", func(t *Target) { t.Spec.Aggregator.Name = "" }, "spec.aggregator.name: Required value"},
		{"a long name", func(t *Target) { t.Ref.Name = string(make([]byte, 64)) }, "metadata.name: Too long"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tg := target("team-a", "orders", 1, prefix("/orders", "GET"))
			tg.Spec.Backend = Backend{Name: "orders", Port: 8080}
			tc.change(&tg)
			errs := ValidateTarget(tg)
			if tc.want == "" {
				require.Empty(t, errs)
				return
			}
			require.NotEmpty(t, errs)
			require.Contains(t, errs.ToAggregate().Error(), tc.want)
		})
	}
}

func TestValidateAggregator(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(*Aggregator)
		want   string
	}{
		{"valid", func(*Aggregator) {}, ""},
		{"a wildcard hostname", func(a *Aggregator) { a.Spec.Hostnames = []string{"*.example.com"} }, `spec.hostnames[0]: Invalid value: "*.example.com": wildcard hostnames are not allowed`},
		{"a hostname with capitals", func(a *Aggregator) { a.Spec.Hostnames = []string{"API.example.com"} }, "spec.hostnames[0]"},
		{"the same hostname twice", func(a *Aggregator) { a.Spec.Hostnames = []string{"a.example.com", "a.example.com"} }, `spec.hostnames[1]: Duplicate value`},
		{"no hostname", func(a *Aggregator) { a.Spec.Hostnames = nil }, "spec.hostnames: Required value"},
		{"both gateways", func(a *Aggregator) {
			a.Spec.Gateway.Shared = &SharedGateway{Name: "public", Namespace: "gw"}
		}, "spec.gateway: Invalid value: \"\": set exactly one of shared and dedicated"},
		{"no gateway", func(a *Aggregator) { a.Spec.Gateway = GatewayChoice{} }, "spec.gateway"},
		{"names without List", func(a *Aggregator) { a.Spec.TargetNamespaces = TargetNamespaces{From: FromAll, Names: []string{"x"}} }, "spec.targetNamespaces.names: Forbidden"},
		{"List without names", func(a *Aggregator) { a.Spec.TargetNamespaces = TargetNamespaces{From: FromList} }, "spec.targetNamespaces.names: Required value"},
		{"a body size that is not a quantity", func(a *Aggregator) { a.Spec.MaxRequestBodySize = "ten megs" }, "spec.maxRequestBodySize"},
		{"a default backend without port", func(a *Aggregator) { a.Spec.DefaultBackend = &Backend{Name: "nf"} }, "spec.defaultBackend.port"},
		{"default timeouts out of order", func(a *Aggregator) {
			a.Spec.DefaultTimeouts = &Timeouts{Request: "1s", BackendRequest: "1m"}
		}, "spec.defaultTimeouts.backendRequest"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := testAggregator()
			tc.change(&a)
			errs := ValidateAggregator(a)
			if tc.want == "" {
				require.Empty(t, errs)
				return
			}
			require.NotEmpty(t, errs)
			require.Contains(t, errs.ToAggregate().Error(), tc.want)
		})
	}
}
