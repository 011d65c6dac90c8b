package imagebuild_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"promised.dev/promised/api/v1alpha1"
	"promised.dev/promised/cmd/imagebuild"
	"promised.dev/promised/pipelines/local"
	"promised.dev/promised/pipelines/stage"
)

func TestStageImageDockerfile(t *testing.T) {
	tpl, err := os.ReadFile(filepath.Join("..", "..", imagebuild.StageDockerfile))
	require.NoError(t, err)
	df, err := imagebuild.StageImageDockerfile(tpl, "team-render")
	require.NoError(t, err)
	require.Contains(t, string(df), `ENTRYPOINT ["/promised-stage", "team-render"]`)
	require.Contains(t, string(df), "ARG BASE="+imagebuild.StageBaseImage)
	require.NotContains(t, string(df), imagebuild.StagePlaceholder)

	for _, bad := range []string{"", "Team", "team_render", "a\"b", "-x", "x-", "a--b", "x\nRUN sh"} {
		_, err := imagebuild.StageImageDockerfile(tpl, bad)
		require.Error(t, err, "stage name %q", bad)
	}
	_, err = imagebuild.StageImageDockerfile([]byte("FROM scratch\n"), "team-render")
	require.ErrorContains(t, err, imagebuild.StagePlaceholder)
}

func TestPromiseStages(t *testing.T) {
	p, err := local.LoadPromise("../../examples/team")
	require.NoError(t, err)
	builtIn, other := imagebuild.PromiseStages(p)
	require.Equal(t, []string{"team-render"}, builtIn)
	require.Empty(t, other)

	container := func(image string) v1alpha1.Container { return v1alpha1.Container{Name: "c", Image: image} }
	pipeline := func(images ...string) v1alpha1.Pipeline {
		var pl v1alpha1.Pipeline
		for _, img := range images {
			pl.Spec.Containers = append(pl.Spec.Containers, container(img))
		}
		return pl
	}
	p.Spec.Workflows.Promise.Configure = []v1alpha1.Pipeline{pipeline(stage.Image("seal"), "ghcr.io/example/kratix-pipeline:v1")}
	p.Spec.Workflows.Resource.Delete = []v1alpha1.Pipeline{pipeline(stage.Image("team-render"), stage.Image("cleanup"))}
	// Another version of a built-in stage is not this tree's to build.
	p.Spec.Workflows.Promise.Delete = []v1alpha1.Pipeline{pipeline("promised.dev/stage/seal:v0.0.9")}
	builtIn, other = imagebuild.PromiseStages(p)
	require.Equal(t, []string{"cleanup", "seal", "team-render"}, builtIn)
	require.Equal(t, []string{"ghcr.io/example/kratix-pipeline:v1", "promised.dev/stage/seal:v0.0.9"}, other)

	reg := stage.NewRegistry()
	require.NoError(t, reg.Register("seal", nil))
	require.Equal(t, []string{"cleanup", "team-render"}, imagebuild.Unregistered(reg, builtIn))
}

func TestFindSource(t *testing.T) {
	root, err := imagebuild.FindSource("../../pipelines/local")
	require.NoError(t, err)
	abs, err := filepath.Abs("../..")
	require.NoError(t, err)
	require.Equal(t, abs, root)

	other := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(other, "go.mod"), []byte("module example.com/other\n"), 0o644))
	_, err = imagebuild.FindSource(other)
	require.ErrorContains(t, err, "not inside the promised.dev/promised source tree")
}
