// Package probe is a pipeline stage that reports everything it sees of the
// contract (variables, input object, previous output, status from earlier
// pipelines, files of earlier containers) as output, so that tests can
// prove every runner hands a stage the same world.
package probe

import (
	"context"
	"errors"
	"io/fs"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"promised.dev/promised/pipelines/contract"
	"promised.dev/promised/pipelines/stage"
)

// Name is the probe's stage name.
const Name = "probe"

// Stage is the probe. With PROBE_ROLE=second it also checks that the first
// container's file is there.
func Stage(_ context.Context, c *stage.Context) error {
	obj, err := c.Object()
	if err != nil {
		return err
	}
	data := map[string]any{}
	for k, v := range c.Env.Map() {
		data[k] = v
	}
	data["role"] = c.Getenv("PROBE_ROLE")
	data["spec.owner"], _, _ = unstructured.NestedString(obj.Object, "spec", "owner")
	data["status.seen"], _, _ = unstructured.NestedString(obj.Object, "status", "seen")
	switch prev, err := c.Previous("first.yaml"); {
	case err == nil:
		data["previous"] = string(prev)
	case errors.Is(err, fs.ErrNotExist):
		data["previous"] = "none"
	default:
		return err
	}
	name := "first"
	if c.Getenv("PROBE_ROLE") == "second" {
		name = "second"
		if _, err := c.ReadOutput("first.yaml"); err != nil {
			return err
		}
	}
	cm := map[string]any{
		"apiVersion": "v1", "kind": "ConfigMap",
		"metadata": map[string]any{"name": name + "-" + c.Env.PipelineName},
		"data":     data,
	}
	if err := c.WriteObjects("nested/"+name+".yaml", cm); err != nil {
		return err
	}
	if name == "first" {
		if err := c.WriteFile("first.yaml", []byte("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: marker\n")); err != nil {
			return err
		}
		if err := c.AddDestinationSelector(contract.Selector{Directory: "nested", MatchLabels: map[string]string{"tier": "probe"}}); err != nil {
			return err
		}
	}
	return c.SetStatus(map[string]any{"seen": c.Env.PipelineName + "/" + name})
}
