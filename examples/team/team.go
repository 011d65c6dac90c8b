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

	"promised.dev/promised/pipelines/stage"
	"promised.dev/promised/pipelines/ytt"
)

//go:embed all:templates
var templates embed.FS

// StageName is the built-in stage's name; its image is stage.Image(StageName).
const StageName = "team-render"

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
	tpl, err := fs.Sub(templates, "templates")
	if err != nil {
		return fmt.Errorf("opening templates: %w", err)
	}
	files, err := ytt.Render(ctx, tpl, map[string]any{"name": obj.GetName(), "spec": spec})
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
