package pipelines_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"promised.dev/promised/api/v1alpha1"
	"promised.dev/promised/pipelines"
	"promised.dev/promised/pipelines/contract"
	"promised.dev/promised/pipelines/stage"
	"promised.dev/promised/pipelines/validate"
)

func request() *unstructured.Unstructured {
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "example.promised.dev/v1",
		"kind":       "Team",
		"metadata":   map[string]any{"name": "payments", "namespace": "default"},
		"spec":       map[string]any{"owner": "alice@example.com"},
	}}
	return u
}

func pipeline(name string, images ...string) v1alpha1.Pipeline {
	p := v1alpha1.Pipeline{Metadata: v1alpha1.PipelineMetadata{Name: name}}
	for i, img := range images {
		p.Spec.Containers = append(p.Spec.Containers, v1alpha1.Container{Name: "c" + string(rune('0'+i)), Image: img})
	}
	return p
}

func engineWith(t testing.TB, stages map[string]stage.Func) *pipelines.Engine {
	t.Helper()
	reg := stage.NewRegistry()
	for n, f := range stages {
		require.NoError(t, reg.Register(n, f))
	}
	seq := pipelines.Sequential{Pick: func(v1alpha1.Container) (pipelines.ContainerRunner, error) {
		return pipelines.InProcess{Registry: reg}, nil
	}}
	return &pipelines.Engine{Choose: func(v1alpha1.Pipeline) (pipelines.PipelineRunner, error) { return seq, nil }}
}

func configMap(name string) string {
	return "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: " + name + "\n"
}

func TestPipelinesRunInOrderAndShareStatus(t *testing.T) {
	var order []string
	e := engineWith(t, map[string]stage.Func{
		"first": func(_ context.Context, c *stage.Context) error {
			order = append(order, c.Env.PipelineName+"/first")
			require.NoError(t, c.WriteFile("a.yaml", []byte(configMap("a"))))
			return c.SetStatus(map[string]any{"step": "one", "conditions": []any{map[string]any{"type": "A", "status": "True"}}})
		},
		"second": func(_ context.Context, c *stage.Context) error {
			order = append(order, c.Env.PipelineName+"/second")
			// The previous container's output is visible within a pipeline,
			// and only there: each pipeline starts with an empty output.
			_, err := c.ReadOutput("a.yaml")
			if (err == nil) != (c.Env.PipelineName == "p1") {
				return fmt.Errorf("pipeline %s: reading the first container's output: %v", c.Env.PipelineName, err)
			}
			obj, err := c.Object()
			if err != nil {
				return err
			}
			seen, _, _ := unstructured.NestedString(obj.Object, "status", "step")
			return c.SetStatus(map[string]any{"seenStep": seen, "conditions": []any{map[string]any{"type": "B", "status": "True"}}})
		},
	})
	res, err := e.Run(context.Background(), pipelines.Workflow{
		PromiseName: "team", Type: contract.TypeResource, Action: contract.ActionConfigure,
		Pipelines: []v1alpha1.Pipeline{
			pipeline("p1", stage.Image("first"), stage.Image("second")),
			pipeline("p2", stage.Image("second")),
		},
		Object: request(),
	})
	require.NoError(t, err)
	require.Equal(t, []string{"p1/first", "p1/second", "p2/second"}, order)
	require.Equal(t, "one", res.Status["step"])
	require.Equal(t, "one", res.Status["seenStep"], "status written by p1 must be in p2's input object")
	require.Len(t, res.Status["conditions"], 2, "conditions merge by type")
	require.Equal(t, map[string][]byte{"p1/a.yaml": []byte(configMap("a"))}, res.Files())
}

func TestEnvironmentAndPrevious(t *testing.T) {
	var got contract.Env
	var prev []byte
	e := engineWith(t, map[string]stage.Func{
		"probe": func(_ context.Context, c *stage.Context) error {
			got = c.Env
			var err error
			prev, err = c.Previous("secret.yaml")
			return err
		},
	})
	_, err := e.Run(context.Background(), pipelines.Workflow{
		PromiseName: "team", Type: contract.TypeResource, Action: contract.ActionDelete,
		Pipelines: []v1alpha1.Pipeline{pipeline("cleanup", stage.Image("probe"))},
		Object:    request(),
		Previous:  map[string][]byte{"cleanup/secret.yaml": []byte("sealed"), "other/x.yaml": []byte("not mine")},
	})
	require.NoError(t, err)
	require.Equal(t, contract.Env{
		Action: contract.ActionDelete, Type: contract.TypeResource, PromiseName: "team", PipelineName: "cleanup",
		ObjectKind: "Team", ObjectGroup: "example.promised.dev", ObjectVersion: "v1", ObjectName: "payments", ObjectNamespace: "default",
	}, got)
	require.Equal(t, "sealed", string(prev))
}

func TestSuspendEndsTheWorkflow(t *testing.T) {
	ran := 0
	e := engineWith(t, map[string]stage.Func{
		"suspend": func(_ context.Context, c *stage.Context) error {
			ran++
			return os.WriteFile(filepath.Join(c.Workspace.Metadata(), contract.WorkflowControlFile), []byte("suspend: true\nmessage: waiting for approval\n"), 0o644)
		},
	})
	res, err := e.Run(context.Background(), pipelines.Workflow{
		PromiseName: "team", Type: contract.TypeResource, Action: contract.ActionConfigure,
		Pipelines: []v1alpha1.Pipeline{pipeline("a", stage.Image("suspend")), pipeline("b", stage.Image("suspend"))},
		Object:    request(),
	})
	require.NoError(t, err)
	require.Equal(t, 1, ran)
	require.True(t, res.Control.Suspend)
	require.Equal(t, "waiting for approval", res.Control.Message)
}

func TestFailuresNamePromisePipelineAndContainer(t *testing.T) {
	hang := func(ctx context.Context, _ *stage.Context) error { select {} }
	e := engineWith(t, map[string]stage.Func{
		"fail":  func(context.Context, *stage.Context) error { return errors.New("the database said no") },
		"panic": func(context.Context, *stage.Context) error { panic("boom") },
		"hang":  hang,
		"bad-output": func(_ context.Context, c *stage.Context) error {
			return c.WriteFile("secret.yaml", []byte("apiVersion: v1\nkind: Secret\nmetadata:\n  name: s\nstringData:\n  password: hunter2\n"))
		},
		"bad-selector": func(_ context.Context, c *stage.Context) error {
			return os.WriteFile(filepath.Join(c.Workspace.Metadata(), contract.SelectorsFile), []byte("- matchLabels: {\"bad key!\": x}\n"), 0o644)
		},
	})
	timeout := pipeline("slow", stage.Image("hang"))
	timeout.Spec.Timeout = &metav1.Duration{Duration: 50 * time.Millisecond}
	for name, tc := range map[string]struct {
		p    v1alpha1.Pipeline
		want []string
	}{
		"stage error":   {pipeline("p", stage.Image("fail")), []string{`promise "team"`, `pipeline "p"`, `container "c0"`, "the database said no"}},
		"panic":         {pipeline("p", stage.Image("panic")), []string{`container "c0"`, "stage panicked: boom"}},
		"timeout":       {timeout, []string{`pipeline "slow"`, "timed out after 50ms"}},
		"unknown image": {pipeline("p", "ghcr.io/acme/thing:v1"), []string{"ghcr.io/acme/thing:v1 is not a stage built into this binary"}},
		"old version":   {pipeline("p", stage.ImageRepository+"fail:v0.0.1"), []string{"is not a stage built into this binary"}},
		"plaintext":     {pipeline("p", stage.Image("bad-output")), []string{`pipeline "p"`, `output file "secret.yaml"`, string(validate.RuleSecret)}},
		"selectors":     {pipeline("p", stage.Image("bad-selector")), []string{"destination-selectors.yaml", `label key "bad key!"`}},
	} {
		t.Run(name, func(t *testing.T) {
			res, err := e.Run(context.Background(), pipelines.Workflow{
				PromiseName: "team", Type: contract.TypeResource, Action: contract.ActionConfigure,
				Pipelines: []v1alpha1.Pipeline{tc.p}, Object: request(),
			})
			require.Error(t, err)
			require.Nil(t, res, "a failed run returns no output at all")
			for _, w := range tc.want {
				require.Contains(t, err.Error(), w)
			}
			require.NotContains(t, err.Error(), "hunter2")
		})
	}
}

func TestExecRunner(t *testing.T) {
	ws := contract.Workspace{Root: t.TempDir()}
	require.NoError(t, ws.Create())
	run := func(argv []string, timeout time.Duration) error {
		p := v1alpha1.Pipeline{Metadata: v1alpha1.PipelineMetadata{Name: "p"}, Spec: v1alpha1.PipelineSpec{
			Timeout:    &metav1.Duration{Duration: timeout},
			Containers: []v1alpha1.Container{{Name: "c", Image: "local/cmd"}},
		}}
		seq := pipelines.Sequential{Pick: func(v1alpha1.Container) (pipelines.ContainerRunner, error) {
			return pipelines.Exec{Resolve: func(string) ([]string, bool) { return argv, true }}, nil
		}}
		return seq.RunPipeline(context.Background(), p, ws, contract.Env{PipelineName: "p"})
	}
	err := run([]string{"sh", "-c", "echo the template is broken >&2; exit 3"}, time.Minute)
	require.ErrorContains(t, err, "exit status 3: the template is broken")

	start := time.Now()
	err = run([]string{"sh", "-c", "sleep 30 & sleep 30"}, 200*time.Millisecond)
	require.ErrorContains(t, err, "timed out after 200ms")
	require.Less(t, time.Since(start), 10*time.Second, "the whole process group is killed")

	require.NoError(t, run([]string{"sh", "-c", `test "$KRATIX_PIPELINE_NAME" = p && echo ok > "$PROMISED_KRATIX_ROOT/output/x"`}, time.Minute))
	data, err := os.ReadFile(filepath.Join(ws.Output(), "x"))
	require.NoError(t, err)
	require.Equal(t, "ok", strings.TrimSpace(string(data)))
}

func TestMergeStatus(t *testing.T) {
	base := map[string]any{"a": 1, "conditions": []any{map[string]any{"type": "X", "status": "False"}, map[string]any{"type": "Y"}}}
	out := contract.MergeStatus(base, map[string]any{"a": 2, "b": 3, "conditions": []any{map[string]any{"type": "X", "status": "True"}, map[string]any{"type": "Z"}}})
	require.Equal(t, map[string]any{"a": 2, "b": 3, "conditions": []any{
		map[string]any{"type": "X", "status": "True"}, map[string]any{"type": "Y"}, map[string]any{"type": "Z"},
	}}, out)
	require.Equal(t, 1, base["a"], "inputs are not modified")
}
