// Package contract_test proves the pipeline contract is the same in every
// runner: one stage run in-process, as a subprocess and as a container
// image built here gives byte-identical output.
package contract_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"promised.dev/promised/api/v1alpha1"
	"promised.dev/promised/cmd/builtin"
	"promised.dev/promised/examples/team"
	"promised.dev/promised/pipelines/contract"
	"promised.dev/promised/pipelines/local"
	"promised.dev/promised/pipelines/stage"
	"promised.dev/promised/test/contract/probe"
)

// stageBinary builds stagebin statically, as it would go into a FROM
// scratch image.
func stageBinary(t *testing.T) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "stagebin")
	cmd := exec.Command("go", "build", "-o", out, "./stagebin")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	b, err := cmd.CombinedOutput()
	require.NoError(t, err, "building stagebin: %s", b)
	return out
}

// buildImage builds a FROM scratch image named tag around bin, with the
// stage name as the entrypoint's argument.
func buildImage(t *testing.T, bin, tag, name string) {
	t.Helper()
	if _, err := exec.LookPath("docker"); err != nil {
		t.Fatalf("the contract test needs the docker CLI and a running engine: install docker (apt-get install docker.io) and start it")
	}
	dir := t.TempDir()
	data, err := os.ReadFile(bin)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "stagebin"), data, 0o755))
	dockerfile := fmt.Sprintf("FROM scratch\nCOPY stagebin /stagebin\nUSER 65532:65532\nENTRYPOINT [\"/stagebin\", %q]\n", name)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(dockerfile), 0o644))
	out, err := exec.Command("docker", "build", "-q", "-t", tag, dir).CombinedOutput()
	require.NoError(t, err, "docker build %s: %s", tag, out)
}

func probePromise(t testing.TB) *v1alpha1.Promise {
	p, err := local.LoadPromise("../../examples/team")
	require.NoError(t, err)
	first := v1alpha1.Container{Name: "first", Image: stage.Image(probe.Name), Env: []v1alpha1.EnvVar{{Name: "PROBE_ROLE", Value: "first"}}}
	second := v1alpha1.Container{Name: "second", Image: stage.Image(probe.Name), Env: []v1alpha1.EnvVar{{Name: "PROBE_ROLE", Value: "second"}}}
	p.Spec.Workflows.Resource.Configure = []v1alpha1.Pipeline{
		{Metadata: v1alpha1.PipelineMetadata{Name: "one"}, Spec: v1alpha1.PipelineSpec{Containers: []v1alpha1.Container{first, second}}},
		{Metadata: v1alpha1.PipelineMetadata{Name: "two"}, Spec: v1alpha1.PipelineSpec{Containers: []v1alpha1.Container{first}}},
	}
	return p
}

func TestSameOutputInEveryRunner(t *testing.T) {
	bin := stageBinary(t)
	buildImage(t, bin, stage.Image(probe.Name), probe.Name)
	buildImage(t, bin, stage.Image(team.StageName), team.StageName)
	reg, err := builtin.Registry()
	require.NoError(t, err)
	require.NoError(t, reg.Register(probe.Name, probe.Stage))
	req, err := local.LoadObject("../../examples/team/testdata/basic/request.yaml")
	require.NoError(t, err)
	teamPromise, err := local.LoadPromise("../../examples/team")
	require.NoError(t, err)
	previous := map[string][]byte{"two/first.yaml": []byte("kept from last time\n")}

	for _, p := range []*v1alpha1.Promise{probePromise(t), teamPromise} {
		snapshots := map[local.Runtime]map[string][]byte{}
		for _, rt := range []local.Runtime{local.RuntimeInProcess, local.RuntimeExec, local.RuntimeDocker} {
			e, err := local.NewEngine(local.Options{Registry: reg, Runtime: rt, StageCommand: []string{bin}})
			require.NoError(t, err)
			res, err := local.Render(context.Background(), e, local.Request{
				Promise: p, Type: contract.TypeResource, Action: contract.ActionConfigure, Object: req, Previous: previous,
			})
			require.NoError(t, err, "runtime %s", rt)
			snapshots[rt], err = local.Snapshot(p, res)
			require.NoError(t, err)
		}
		require.NotEmpty(t, snapshots[local.RuntimeInProcess])
		require.Equal(t, snapshots[local.RuntimeInProcess], snapshots[local.RuntimeExec], "exec differs from in-process")
		require.Equal(t, snapshots[local.RuntimeInProcess], snapshots[local.RuntimeDocker], "docker differs from in-process")
	}
}

func TestProbeSeesTheWholeContract(t *testing.T) {
	reg := stage.NewRegistry()
	require.NoError(t, reg.Register(probe.Name, probe.Stage))
	e, err := local.NewEngine(local.Options{Registry: reg, Runtime: local.RuntimeInProcess})
	require.NoError(t, err)
	req, err := local.LoadObject("../../examples/team/testdata/basic/request.yaml")
	require.NoError(t, err)
	res, err := local.Render(context.Background(), e, local.Request{
		Promise: probePromise(t), Type: contract.TypeResource, Action: contract.ActionConfigure, Object: req,
		Previous: map[string][]byte{"two/first.yaml": []byte("kept")},
	})
	require.NoError(t, err)
	files := res.Files()
	two := string(files["two/nested/first.yaml"])
	for _, want := range []string{
		"KRATIX_OBJECT_NAME: payments", "KRATIX_OBJECT_NAMESPACE: default", "KRATIX_OBJECT_KIND: Team",
		"KRATIX_OBJECT_GROUP: example.promised.dev", "KRATIX_OBJECT_VERSION: v1", "KRATIX_PIPELINE_NAME: two",
		"KRATIX_PROMISE_NAME: team", "KRATIX_WORKFLOW_ACTION: configure", "KRATIX_WORKFLOW_TYPE: resource",
		"previous: kept", "status.seen: one/second", "spec.owner: alice@example.com", "role: first",
	} {
		require.Contains(t, two, want)
	}
	require.Contains(t, string(files["one/nested/first.yaml"]), "previous: none")
	require.Contains(t, string(files["one/nested/second.yaml"]), "role: second")
	require.Equal(t, "two/first", res.Status["seen"])
	require.Equal(t, "nested", res.Pipelines[0].Selectors[0].Directory)
	require.True(t, strings.HasPrefix(string(files["one/first.yaml"]), "apiVersion: v1"))
}
