package natsuser

import (
	"context"
	"flag"
	"testing"

	"github.com/stretchr/testify/require"

	"promised.dev/promised/pipelines/local"
	"promised.dev/promised/pipelines/seal"
	"promised.dev/promised/pipelines/stage"
)

var update = flag.Bool("update", false, "rewrite the expected/ folders of testdata/ from this run")

// TestCases runs testdata/ exactly as `promised test` does: each case with
// a credential ledger of its own, seeded from its ledger/ folder, and the
// seal stage sealing for a throwaway certificate, compared masked.
func TestCases(t *testing.T) {
	reg := stage.NewRegistry()
	for name, f := range Stages() {
		require.NoError(t, reg.Register(name, f))
	}
	require.NoError(t, reg.Register(seal.StageName, seal.Stage))
	results, err := local.RunCases(context.Background(), local.Options{Registry: reg, Runtime: local.RuntimeInProcess}, ".", *update)
	require.NoError(t, err)
	require.NotEmpty(t, results)
	for _, r := range results {
		t.Run(r.Name, func(t *testing.T) {
			require.True(t, r.Passed(), "%s", r.Diff)
		})
	}
}
