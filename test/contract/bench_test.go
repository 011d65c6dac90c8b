package contract_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"promised.dev/promised/cmd/builtin"
	"promised.dev/promised/pipelines/contract"
	"promised.dev/promised/pipelines/local"
)

// BenchmarkRenderTeamRequest is one request of the example promise end to
// end in-process: schema check and defaults, workspace, ytt render of three
// objects, output validation and snapshot.
func BenchmarkRenderTeamRequest(b *testing.B) {
	reg, err := builtin.Registry()
	require.NoError(b, err)
	e, err := local.NewEngine(local.Options{Registry: reg, Runtime: local.RuntimeInProcess})
	require.NoError(b, err)
	p, err := local.LoadPromise("../../examples/team")
	require.NoError(b, err)
	req, err := local.LoadObject("../../examples/team/testdata/basic/request.yaml")
	require.NoError(b, err)
	b.ReportAllocs()
	for b.Loop() {
		res, err := local.Render(context.Background(), e, local.Request{Promise: p, Type: contract.TypeResource, Action: contract.ActionConfigure, Object: req})
		if err != nil || len(res.Files()) != 1 {
			b.Fatalf("render: %v", err)
		}
	}
}
