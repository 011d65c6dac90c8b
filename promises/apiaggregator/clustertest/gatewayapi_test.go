package clustertest

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"promised.dev/promised/pipelines/contract"
	"promised.dev/promised/pipelines/local"
	"promised.dev/promised/pipelines/stage"
	"promised.dev/promised/promises/apiaggregator"
)

// TestRenderedObjectsAreAcceptedByTheGatewayAPI renders every test case of
// both promises, with and without the Envoy Gateway option, and
// server-side applies every Gateway API object to an apiserver serving the
// Gateway API's own standard-channel CRDs: any object their schemas or CEL
// rules refuse fails the test.
func TestRenderedObjectsAreAcceptedByTheGatewayAPI(t *testing.T) {
	ctx := context.Background()
	reg := stage.NewRegistry()
	for name, f := range apiaggregator.Stages() {
		require.NoError(t, reg.Register(name, f))
	}
	applied := 0
	for _, impl := range []apiaggregator.Implementation{apiaggregator.ImplementationNone, apiaggregator.ImplementationEnvoyGateway} {
		for _, dir := range []string{aggregatorDir, targetDir} {
			p, err := local.LoadPromise(dir)
			require.NoError(t, err)
			for i := range p.Spec.Workflows.Resource.Configure {
				for j := range p.Spec.Workflows.Resource.Configure[i].Spec.Containers {
					c := &p.Spec.Workflows.Resource.Configure[i].Spec.Containers[j]
					for k := range c.Env {
						if c.Env[k].Name == apiaggregator.EnvImplementation {
							c.Env[k].Value = string(impl)
						}
					}
				}
			}
			cases, err := filepath.Glob(filepath.Join(dir, "testdata", "*"))
			require.NoError(t, err)
			for _, caseDir := range cases {
				if _, err := os.Stat(filepath.Join(caseDir, local.CaseError)); err == nil {
					continue
				}
				t.Run(string(impl)+"/"+filepath.Base(dir)+"/"+filepath.Base(caseDir), func(t *testing.T) {
					opts := local.Options{Registry: reg, Runtime: local.RuntimeInProcess}
					if objs := filepath.Join(caseDir, local.CaseObjects); exists(objs) {
						fo, err := local.LoadFolderObjects(objs)
						require.NoError(t, err)
						opts.Objects = fo
					}
					e, err := local.NewEngine(opts)
					require.NoError(t, err)
					req, err := local.LoadObject(filepath.Join(caseDir, local.CaseRequest))
					require.NoError(t, err)
					res, err := local.Render(ctx, e, local.Request{Promise: p, Type: contract.TypeResource, Action: contract.ActionConfigure, Object: req})
					require.NoError(t, err)
					for name, data := range res.Files() {
						for _, u := range documents(t, data) {
							if isEnvoyGateway(u) {
								continue
							}
							ensureNamespace(t, u.GetNamespace())
							require.NoError(t, apply(ctx, u), "%s: %s %s/%s refused by the Gateway API's schema", name, u.GetKind(), u.GetNamespace(), u.GetName())
							applied++
						}
					}
				})
			}
		}
	}
	require.Greater(t, applied, 20, "the sweep applied too few objects to mean anything")
}

// TestTheGatewayAPISchemaIsJudging is the control for the test above: the
// very HTTPRoute the target stage avoids rendering (a prefix rewrite in a
// rule with two matches) is refused, so acceptance means something.
func TestTheGatewayAPISchemaIsJudging(t *testing.T) {
	ensureNamespace(t, "control")
	u := object(t, `
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: rewrite-two-matches, namespace: control}
spec:
  parentRefs: [{name: gw}]
  rules:
  - matches:
    - path: {type: PathPrefix, value: /payments}
      method: GET
    - path: {type: PathPrefix, value: /payments}
      method: PUT
    filters:
    - type: URLRewrite
      urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /}}
    backendRefs: [{name: payments, port: 80}]
`)
	err := apply(context.Background(), u)
	require.True(t, apierrors.IsInvalid(err), "got %v", err)
	require.Contains(t, err.Error(), "When using URLRewrite filter with path.replacePrefixMatch, exactly one PathPrefix match must be specified")
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
