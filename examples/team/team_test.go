package team_test

import (
	"context"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"promised.dev/promised/api/v1alpha1"
	"promised.dev/promised/examples/team"
	"promised.dev/promised/pipelines/contract"
	"promised.dev/promised/pipelines/local"
	"promised.dev/promised/pipelines/stage"
)

func TestParseLabels(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    map[string]any
		wantErr string
	}{
		{in: "", want: map[string]any{}},
		{in: " , ", want: map[string]any{}},
		{in: "a=b", want: map[string]any{"a": "b"}},
		{in: "example.com/cost-centre=platform, tier=", want: map[string]any{"example.com/cost-centre": "platform", "tier": ""}},
		{in: "novalue", wantErr: `"novalue" is not key=value`},
		{in: "bad key=x", wantErr: `label key "bad key"`},
		{in: "k=not valid", wantErr: `label "k" value "not valid"`},
	} {
		got, err := team.ParseLabels(tc.in)
		if tc.wantErr != "" {
			require.ErrorContains(t, err, tc.wantErr, tc.in)
			continue
		}
		require.NoError(t, err, tc.in)
		require.Equal(t, tc.want, got, tc.in)
	}
}

// TestLabelsFromThePipelineEnv renders the example request with TEAM_LABELS
// set on the pipeline's container, as a platform team would in
// promise.yaml: every team's namespace gets the labels.
func TestLabelsFromThePipelineEnv(t *testing.T) {
	p, err := local.LoadPromise(".")
	require.NoError(t, err)
	c := &p.Spec.Workflows.Resource.Configure[0].Spec.Containers[0]
	c.Env = append(c.Env, v1alpha1.EnvVar{Name: team.EnvLabels, Value: "example.promised.dev/cost-centre=platform"})
	obj, err := local.LoadObject("testdata/basic/request.yaml")
	require.NoError(t, err)
	reg := stage.NewRegistry()
	require.NoError(t, reg.Register(team.StageName, team.Render))
	e, err := local.NewEngine(local.Options{Registry: reg, Runtime: local.RuntimeInProcess})
	require.NoError(t, err)
	res, err := local.Render(context.Background(), e, local.Request{Promise: p, Type: contract.TypeResource, Action: contract.ActionConfigure, Object: obj})
	require.NoError(t, err)
	ns := string(res.Files()["render/namespace.yaml"])
	require.Contains(t, ns, "example.promised.dev/cost-centre: platform")
	require.Contains(t, ns, "example.promised.dev/team: payments")
	// The label goes on the Namespace only.
	require.Equal(t, 1, strings.Count(ns, "cost-centre"))

	c.Env[len(c.Env)-1].Value = "not a label"
	_, err = local.Render(context.Background(), e, local.Request{Promise: p, Type: contract.TypeResource, Action: contract.ActionConfigure, Object: obj})
	require.ErrorContains(t, err, "TEAM_LABELS")
}
