package apiaggregator_test

import (
	"context"
	"flag"
	"testing"

	"github.com/stretchr/testify/require"

	"promised.dev/promised/pipelines/local"
	"promised.dev/promised/pipelines/stage"
	"promised.dev/promised/promises/apiaggregator"
)

var update = flag.Bool("update", false, "rewrite the test cases' expected/ folders from this run")

// registry holds this package's stages, as cmd/builtin will.
func registry(t *testing.T) *stage.Registry {
	t.Helper()
	reg := stage.NewRegistry()
	for name, f := range apiaggregator.Stages() {
		require.NoError(t, reg.Register(name, f))
	}
	return reg
}

// TestCases runs both promises' `promised test` cases: each request through
// the promise's schema and pipeline, with the case's objects/ folder as the
// platform's other requests.
func TestCases(t *testing.T) {
	for _, dir := range []string{"aggregator", "target"} {
		t.Run(dir, func(t *testing.T) {
			results, err := local.RunCases(context.Background(), local.Options{Registry: registry(t), Runtime: local.RuntimeInProcess}, dir, *update)
			require.NoError(t, err)
			for _, r := range results {
				t.Run(r.Name, func(t *testing.T) {
					if !r.Passed() {
						t.Errorf("case %s/%s differs from its expectation (go test -run TestCases -update rewrites it):\n%s", dir, r.Name, r.Diff)
					}
				})
			}
		})
	}
}
