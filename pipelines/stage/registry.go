package stage

import (
	"fmt"
	"sort"
	"strings"
)

// Version is the version of the stages compiled into this binary. A
// pipeline runs a built-in stage in-process only when its image tag equals
// it; any other tag names code this binary does not hold.
const Version = "v0.1.0"

// ImageRepository prefixes the image of every built-in stage.
const ImageRepository = "promised.dev/stage/"

// Image returns the image reference of the built-in stage name at Version.
func Image(name string) string { return ImageRepository + name + ":" + Version }

// Registry maps built-in stage names to their code.
type Registry struct {
	stages map[string]Func
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry { return &Registry{stages: map[string]Func{}} }

// Register adds a stage; registering a name twice is a programming error
// reported when the binary starts.
func (r *Registry) Register(name string, f Func) error {
	if _, dup := r.stages[name]; dup {
		return fmt.Errorf("stage %q registered twice", name)
	}
	r.stages[name] = f
	return nil
}

// Lookup returns the stage an image reference names, when that image is a
// built-in stage at this binary's version.
func (r *Registry) Lookup(image string) (Func, bool) {
	name, ok := BuiltinName(image)
	if !ok {
		return nil, false
	}
	f, ok := r.stages[name]
	return f, ok
}

// ByName returns a stage by its bare name (for `promised stage run NAME`).
func (r *Registry) ByName(name string) (Func, bool) {
	f, ok := r.stages[name]
	return f, ok
}

// Names lists the registered stages, sorted.
func (r *Registry) Names() []string {
	out := make([]string, 0, len(r.stages))
	for n := range r.stages {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// BuiltinName returns the stage name of a built-in image reference at this
// binary's version.
func BuiltinName(image string) (string, bool) {
	rest, ok := strings.CutPrefix(image, ImageRepository)
	if !ok {
		return "", false
	}
	name, tag, ok := strings.Cut(rest, ":")
	if !ok || tag != Version || name == "" {
		return "", false
	}
	return name, true
}
