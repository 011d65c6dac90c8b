// Package team is the example promise: a namespace per team with a
// ConfigMap naming its owner and a ResourceQuota. Its stage shows the
// shape every Go stage has: read the request, render, write output and
// status.
package team

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"sort"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"

	"promised.dev/promised/pipelines/stage"
	"promised.dev/promised/pipelines/ytt"
)

//go:embed all:templates
var templates embed.FS

// StageName is the built-in stage's name; its image is stage.Image(StageName).
const StageName = "team-render"

// EnvLabels is the pipeline container's variable holding extra labels for
// every team's namespace, "key=value" pairs separated by commas (for
// example "example.promised.dev/cost-centre=platform"). The platform team
// sets it in promise.yaml; empty adds none.
const EnvLabels = "TEAM_LABELS"

// Render is the team promise's configure stage.
func Render(ctx context.Context, c *stage.Context) error {
	obj, err := c.Object()
	if err != nil {
		return err
	}
	spec, err := c.Spec()
	if err != nil {
		return err
	}
	labels, err := ParseLabels(c.Getenv(EnvLabels))
	if err != nil {
		return err
	}
	tpl, err := fs.Sub(templates, "templates")
	if err != nil {
		return fmt.Errorf("opening templates: %w", err)
	}
	files, err := ytt.Render(ctx, tpl, map[string]any{"name": obj.GetName(), "spec": spec, "labels": labels})
	if err != nil {
		return err
	}
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		if err := c.WriteFile(name, files[name]); err != nil {
			return err
		}
	}
	return c.SetStatus(map[string]any{
		"namespace": "team-" + obj.GetName(),
		"message":   "namespace team-" + obj.GetName() + " is ready for " + fmt.Sprint(spec["owner"]),
	})
}

// ParseLabels reads EnvLabels' value: comma-separated key=value pairs,
// each a valid Kubernetes label. White space around pairs is ignored.
func ParseLabels(v string) (map[string]any, error) {
	out := map[string]any{}
	for _, pair := range strings.Split(v, ",") {
		pair = strings.TrimSpace(pair)
		if pair == "" {
			continue
		}
		k, val, ok := strings.Cut(pair, "=")
		if !ok {
			return nil, fmt.Errorf("%s: %q is not key=value", EnvLabels, pair)
		}
		if errs := validation.IsQualifiedName(k); len(errs) > 0 {
			return nil, fmt.Errorf("%s: label key %q: %s", EnvLabels, k, strings.Join(errs, "; "))
		}
		if errs := validation.IsValidLabelValue(val); len(errs) > 0 {
			return nil, fmt.Errorf("%s: label %q value %q: %s", EnvLabels, k, val, strings.Join(errs, "; "))
		}
		out[k] = val
	}
	return out, nil
}
