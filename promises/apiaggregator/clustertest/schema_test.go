package clustertest

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

const validTarget = `
apiVersion: gateway.promised.dev/v1alpha1
kind: ApiAggregatorTarget
metadata: {name: schema-check, namespace: default}
spec:
  aggregator: {name: public}
  routes:
    - path: {type: PathPrefix, value: /orders}
      methods: [GET]
      headers: [{name: X-Version, value: "2"}]
  backend: {name: orders, port: 8080}
`

const validAggregator = `
apiVersion: gateway.promised.dev/v1alpha1
kind: ApiAggregator
metadata: {name: schema-check, namespace: default}
spec:
  hostnames: [api.example.com]
  gateway: {dedicated: {gatewayClassName: eg}}
`

// TestSchemaRefusesBadInput checks that the apiserver itself, through the
// CRDs the controller installed from the promises, refuses bad requests
// and names the field at fault, before any pipeline runs.
func TestSchemaRefusesBadInput(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name   string
		base   string
		change func(spec map[string]any)
		// want are substrings of the apiserver's error.
		want []string
	}{
		{"valid target", validTarget, func(map[string]any) {}, nil},
		{"valid aggregator", validAggregator, func(map[string]any) {}, nil},
		{"a path without a leading slash", validTarget, func(s map[string]any) {
			route(s)["path"] = map[string]any{"type": "PathPrefix", "value": "orders"}
		}, []string{"spec.routes[0].path", "value must be an absolute path and start with '/'"}},
		{"a regular expression path", validTarget, func(s map[string]any) {
			route(s)["path"] = map[string]any{"type": "RegularExpression", "value": "/orders/[0-9]+"}
		}, []string{"spec.routes[0].path.type", `Unsupported value: "RegularExpression"`}},
		{"a path with a dot segment", validTarget, func(s map[string]any) {
			route(s)["path"] = map[string]any{"value": "/a/../b"}
		}, []string{"spec.routes[0].path", "must not contain '/../'"}},
		{"a backend port that is not a number", validTarget, func(s map[string]any) {
			s["backend"].(map[string]any)["port"] = "http"
		}, []string{"spec.backend.port", "must be of type integer"}},
		{"a backend port out of range", validTarget, func(s map[string]any) {
			s["backend"].(map[string]any)["port"] = 65536
		}, []string{"spec.backend.port", "less than or equal to 65535"}},
		{"a target splitting to itself", validTarget, func(s map[string]any) {
			s["secondaryBackend"] = map[string]any{"name": "orders", "port": 8080, "weight": 10}
		}, []string{"spec.secondaryBackend", "must not point at the same Service port as backend"}},
		{"a rewrite on an exact path", validTarget, func(s map[string]any) {
			route(s)["path"] = map[string]any{"type": "Exact", "value": "/orders"}
			route(s)["rewrite"] = map[string]any{"replacePrefixMatch": "/"}
		}, []string{"spec.routes[0].rewrite", "needs a PathPrefix path"}},
		{"a regular expression header", validTarget, func(s map[string]any) {
			route(s)["headers"] = []any{map[string]any{"type": "RegularExpression", "name": "x", "value": ".*"}}
		}, []string{"spec.routes[0].headers[0].type", `Unsupported value: "RegularExpression"`}},
		{"a header named twice", validTarget, func(s map[string]any) {
			route(s)["headers"] = []any{map[string]any{"name": "X-A", "value": "1"}, map[string]any{"name": "x-a", "value": "2"}}
		}, []string{"spec.routes[0].headers", "header names must be unique"}},
		{"a backend timeout longer than the request's", validTarget, func(s map[string]any) {
			route(s)["timeouts"] = map[string]any{"request": "1s", "backendRequest": "5s"}
		}, []string{"spec.routes[0].timeouts", "backendRequest timeout cannot be longer than request timeout"}},
		{"a weight above 100", validTarget, func(s map[string]any) {
			s["secondaryBackend"] = map[string]any{"name": "canary", "port": 8080, "weight": 150}
		}, []string{"spec.secondaryBackend.weight", "less than or equal to 100"}},
		{"a wildcard hostname", validAggregator, func(s map[string]any) {
			s["hostnames"] = []any{"*.example.com"}
		}, []string{"spec.hostnames", "wildcard hostnames are not allowed"}},
		{"a hostname that is no DNS name", validAggregator, func(s map[string]any) {
			s["hostnames"] = []any{"API_Example.com"}
		}, []string{"spec.hostnames[0]", "should match"}},
		{"both kinds of gateway", validAggregator, func(s map[string]any) {
			s["gateway"] = map[string]any{"dedicated": map[string]any{"gatewayClassName": "eg"}, "shared": map[string]any{"name": "public", "namespace": "gw"}}
		}, []string{"spec.gateway", "set exactly one of shared and dedicated"}},
		{"namespace names without List", validAggregator, func(s map[string]any) {
			s["targetNamespaces"] = map[string]any{"from": "All", "names": []any{"team-a"}}
		}, []string{"spec.targetNamespaces", "names is required when from is List, and allowed only then"}},
		{"a body size that is not a quantity", validAggregator, func(s map[string]any) {
			s["maxRequestBodySize"] = "10 MB"
		}, []string{"spec.maxRequestBodySize", "should match"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u := object(t, tc.base)
			spec := u.Object["spec"].(map[string]any)
			tc.change(spec)
			err := k8s.Create(ctx, u, client.DryRunAll)
			if tc.want == nil {
				require.NoError(t, err)
				return
			}
			require.True(t, apierrors.IsInvalid(err), "want the apiserver to refuse it, got %v", err)
			for _, w := range tc.want {
				require.Contains(t, err.Error(), w)
			}
		})
	}
	t.Run("a name too long for the objects named after it", func(t *testing.T) {
		u := object(t, validTarget)
		u.SetName(strings.Repeat("a", 64))
		err := k8s.Create(ctx, u, client.DryRunAll)
		require.True(t, apierrors.IsInvalid(err), "got %v", err)
		require.Contains(t, err.Error(), "metadata.name may have at most 63 characters")
	})
}

// TestTestdataAgreesWithTheSchema creates every test case's request with
// the apiserver (dry run): the cases that render must be accepted, and the
// cases that fail for a reason the schema can see must be refused by it.
func TestTestdataAgreesWithTheSchema(t *testing.T) {
	ctx := context.Background()
	for _, dir := range []string{aggregatorDir, targetDir} {
		cases, err := filepath.Glob(filepath.Join(dir, "testdata", "*", "request.yaml"))
		require.NoError(t, err)
		require.NotEmpty(t, cases)
		for _, p := range cases {
			name := filepath.Base(filepath.Dir(p))
			t.Run(filepath.Base(dir)+"/"+name, func(t *testing.T) {
				data, err := os.ReadFile(p)
				require.NoError(t, err)
				u := object(t, string(data))
				// Test cases pin their creation time; the apiserver sets its own.
				// A namespace of its own keeps the dry run clear of the
				// end-to-end test's requests of the same names.
				u.SetCreationTimestamp(metaZero)
				u.SetNamespace("testdata-check")
				ensureNamespace(t, u.GetNamespace())
				err = k8s.Create(ctx, u, client.DryRunAll)
				switch name {
				case "wildcard-refused", "both-gateways":
					require.True(t, apierrors.IsInvalid(err), "the schema should refuse %s, got %v", name, err)
				default:
					// The other failing cases (conflicts, waiting, a refused
					// namespace) depend on other requests: valid alone.
					require.NoError(t, err)
				}
			})
		}
	}
}
