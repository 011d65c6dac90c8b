package pipelines_test

import (
	"context"
	"testing"

	"promised.dev/promised/api/v1alpha1"
	"promised.dev/promised/pipelines"
	"promised.dev/promised/pipelines/contract"
	"promised.dev/promised/pipelines/stage"
)

// BenchmarkInProcessStage measures what the engine adds around a stage that
// writes one object: the workspace, the input object, collecting and
// validating output, reading metadata. Compare with the 6 to 8 s of a
// Kubernetes Job.
func BenchmarkInProcessStage(b *testing.B) {
	e := engineWith(b, map[string]stage.Func{
		"one": func(_ context.Context, c *stage.Context) error {
			return c.WriteFile("cm.yaml", []byte(configMap("a")))
		},
	})
	w := pipelines.Workflow{
		PromiseName: "team", Type: contract.TypeResource, Action: contract.ActionConfigure,
		Pipelines: []v1alpha1.Pipeline{pipeline("p", stage.Image("one"))}, Object: request(),
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := e.Run(context.Background(), w); err != nil {
			b.Fatal(err)
		}
	}
}
