package apiaggregator

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"time"

	"sigs.k8s.io/yaml"

	"promised.dev/promised/pipelines/contract"
	"promised.dev/promised/pipelines/stage"
	"promised.dev/promised/pipelines/ytt"
)

// The built-in stages' names; their images are stage.Image(name).
const (
	// StageAggregator renders an ApiAggregator.
	StageAggregator = "apiaggregator-render"
	// StageTarget renders an ApiAggregatorTarget.
	StageTarget = "apiaggregatortarget-render"
)

// Stages returns the stages of both promises by name, for the registry of
// built-in stages.
func Stages() map[string]stage.Func {
	return map[string]stage.Func{
		StageAggregator: RenderAggregator,
		StageTarget:     RenderTarget,
	}
}

// EnvImplementation names the stage variable (set in the promise's
// pipeline, container env) that chooses which Gateway API implementation's
// own policies are rendered for settings the Gateway API has no field for,
// such as the maximum request body size. It is a platform decision, not a
// developer's, so it lives in the promise rather than in the request.
const EnvImplementation = "APIAGGREGATOR_IMPLEMENTATION"

// Implementation is a value of EnvImplementation.
type Implementation string

// Implementations whose policies the stages can render.
const (
	// ImplementationNone renders portable Gateway API objects only (the
	// default): implementation-specific settings are reported in the
	// request's status.warnings as not enforced.
	ImplementationNone Implementation = "none"
	// ImplementationEnvoyGateway also renders Envoy Gateway policies
	// (gateway.envoyproxy.io/v1alpha1).
	ImplementationEnvoyGateway Implementation = "envoy-gateway"
)

func implementationFrom(getenv func(string) string) (Implementation, error) {
	switch v := Implementation(getenv(EnvImplementation)); v {
	case "", ImplementationNone:
		return ImplementationNone, nil
	case ImplementationEnvoyGateway:
		return v, nil
	default:
		return "", fmt.Errorf("%s is %q: want %q or %q (set it in the promise's pipeline container env)", EnvImplementation, v, ImplementationNone, ImplementationEnvoyGateway)
	}
}

// LabelDestination is the label a destination selector uses to name one
// destination. Stages cannot see destinations' labels, only the names in a
// request's status.destinations, so a target follows its aggregator by
// selecting this label with the aggregator's destination name. The
// controller is expected to give every Destination this label with its own
// name (see README); until it does, label Destinations with it yourself.
const LabelDestination = "platform.promised.dev/destination"

// retryWaiting is how soon a target waiting for its aggregator asks to run
// again (workflow-control.yaml retryAfter).
const retryWaiting = 15 * time.Second

//go:embed all:templates
var templates embed.FS

// RenderAggregator is the ApiAggregator's configure stage: it renders the
// dedicated Gateway (or the ListenerSet attaching the hostnames to a
// shared Gateway), the default route when there is a default backend, the
// ReferenceGrants those need, and the chosen implementation's policies.
func RenderAggregator(ctx context.Context, c *stage.Context) error {
	if c.Env.Action == contract.ActionDelete {
		// The controller removes the output itself; nothing outside the
		// state store needs cleaning.
		return nil
	}
	obj, err := c.Object()
	if err != nil {
		return err
	}
	a, err := ParseAggregator(obj)
	if err != nil {
		return err
	}
	if errs := ValidateAggregator(a); len(errs) > 0 {
		return fmt.Errorf("%s %s is invalid: %w", KindAggregator, a.Ref, errs.ToAggregate())
	}
	impl, err := implementationFrom(c.Getenv)
	if err != nil {
		return err
	}
	if err := renderInto(ctx, c, buildAggregator(a, impl)); err != nil {
		return err
	}
	scheme := "http"
	if a.Spec.TLS != nil {
		scheme = "https"
	}
	urls := make([]any, 0, len(a.Spec.Hostnames))
	for _, h := range a.Spec.Hostnames {
		urls = append(urls, scheme+"://"+h+"/")
	}
	parent := Attachment(a)
	// Every key is written on every run: the controller merges status.yaml
	// over the previous status, so a key left out would keep a stale value.
	return c.SetStatus(map[string]any{
		"urls":     urls,
		"attachTo": map[string]any{"group": parent.Group, "kind": parent.Kind, "name": parent.Name, "namespace": parent.Namespace},
		"warnings": aggregatorWarnings(a, impl),
	})
}

func aggregatorWarnings(a Aggregator, impl Implementation) []any {
	warnings := []any{}
	if a.Spec.MaxRequestBodySize != "" && impl == ImplementationNone {
		warnings = append(warnings, fmt.Sprintf("spec.maxRequestBodySize %s is not enforced: the Gateway API has no field for it and this platform renders no implementation policy (%s=%s in the promise's pipeline)", a.Spec.MaxRequestBodySize, EnvImplementation, ImplementationNone))
	}
	return warnings
}

// WaitingError is returned by the target stage while its aggregator cannot
// be joined yet: it does not exist, is being deleted, is invalid, or has
// not been placed on a destination. It is retried; nothing is written.
type WaitingError struct {
	Aggregator Ref
	Why        string
}

// Error says what the target waits for and why, for its Ready condition.
func (e *WaitingError) Error() string {
	return fmt.Sprintf("waiting for %s %s: %s", KindAggregator, e.Aggregator, e.Why)
}

// RenderTarget is the ApiAggregatorTarget's configure stage: it finds the
// aggregator and every target of it through stage.Objects, refuses the
// target when it may not have its paths (Admit), and otherwise renders an
// HTTPRoute bound to the aggregator's hostnames and parent plus the
// ReferenceGrants its backends need, placed on the aggregator's
// destination.
func RenderTarget(ctx context.Context, c *stage.Context) error {
	if c.Env.Action == contract.ActionDelete {
		return nil
	}
	obj, err := c.Object()
	if err != nil {
		return err
	}
	t, err := ParseTarget(obj)
	if err != nil {
		return err
	}
	if errs := ValidateTarget(t); len(errs) > 0 {
		return fmt.Errorf("%s %s is invalid: %w", KindTarget, t.Ref, errs.ToAggregate())
	}
	objects, err := c.Objects()
	if err != nil {
		return fmt.Errorf("the %s stage reads its aggregator and the other targets: %w", StageTarget, err)
	}
	a, err := findAggregator(ctx, objects, t.AggregatorRef())
	if err != nil {
		var w *WaitingError
		if errors.As(err, &w) {
			if werr := writeRetry(c, w); werr != nil {
				return fmt.Errorf("%w (and writing %s: %w)", err, contract.WorkflowControlFile, werr)
			}
		}
		return err
	}
	targets, err := listTargets(ctx, objects, t)
	if err != nil {
		return err
	}
	v, judged := Admit(a, targets)[t.Ref]
	switch {
	case !judged:
		// Admit leaves out targets being deleted; the controller runs the
		// delete workflow for those, so this is only a misconfigured
		// pipeline calling the stage on deletion.
		return fmt.Errorf("%s %s is being deleted and claims no path", KindTarget, t.Ref)
	case !v.Admitted:
		return fmt.Errorf("%s %s is refused: %s", KindTarget, t.Ref, v.Reason)
	}
	dest := a.Destinations[0]
	sel := map[string]string{LabelDestination: dest}
	if err := contract.CheckLabels(sel); err != nil {
		return fmt.Errorf("%s %s is on destination %q, whose name cannot be selected by label: %w", KindAggregator, a.Ref, dest, err)
	}
	if err := renderInto(ctx, c, buildTarget(t, a)); err != nil {
		return err
	}
	if err := c.AddDestinationSelector(contract.Selector{MatchLabels: sel}); err != nil {
		return err
	}
	routes := make([]any, 0, len(t.Spec.Routes))
	for _, r := range t.Spec.Routes {
		routes = append(routes, describeRoute(r))
	}
	hostnames := make([]any, 0, len(a.Spec.Hostnames))
	for _, h := range a.Spec.Hostnames {
		hostnames = append(hostnames, h)
	}
	return c.SetStatus(map[string]any{
		"aggregator": a.Ref.String(),
		"hostnames":  hostnames,
		"routes":     routes,
	})
}

// findAggregator returns the aggregator ref names, or a *WaitingError when
// it cannot be joined yet.
func findAggregator(ctx context.Context, objects stage.Objects, ref Ref) (Aggregator, error) {
	list, err := objects.List(ctx, APIVersion, KindAggregator)
	if err != nil {
		return Aggregator{}, fmt.Errorf("listing %s objects: %w", KindAggregator, err)
	}
	for i := range list {
		u := &list[i]
		if u.GetNamespace() != ref.Namespace || u.GetName() != ref.Name {
			continue
		}
		a, err := ParseAggregator(u)
		if err != nil {
			return a, &WaitingError{Aggregator: ref, Why: "it cannot be read: " + err.Error()}
		}
		invalid := ValidateAggregator(a)
		switch {
		case a.Deleting:
			return a, &WaitingError{Aggregator: ref, Why: "it is being deleted"}
		case len(invalid) > 0:
			return a, &WaitingError{Aggregator: ref, Why: "it is invalid: " + invalid.ToAggregate().Error()}
		case len(a.Destinations) == 0:
			return a, &WaitingError{Aggregator: ref, Why: "it has not been placed on a destination yet"}
		case len(a.Destinations) > 1:
			return a, fmt.Errorf("%s %s is placed on several destinations (%v); its targets can follow only one", KindAggregator, ref, a.Destinations)
		}
		return a, nil
	}
	return Aggregator{}, &WaitingError{Aggregator: ref, Why: "it does not exist"}
}

// listTargets returns every target on the platform, with self taken from
// the input object: the platform's copy may be older than the spec this
// run renders, and a local run's objects folder need not hold it at all.
func listTargets(ctx context.Context, objects stage.Objects, self Target) ([]Target, error) {
	list, err := objects.List(ctx, APIVersion, KindTarget)
	if err != nil {
		return nil, fmt.Errorf("listing %s objects: %w", KindTarget, err)
	}
	out := make([]Target, 0, len(list)+1)
	for i := range list {
		if t := parsedTargets.get(&list[i]); t.Ref != self.Ref {
			out = append(out, t)
		}
	}
	parsedTargets.prune(list)
	return append(out, self), nil
}

// writeRetry writes workflow-control.yaml asking for a run after
// retryWaiting, with the reason as its message.
func writeRetry(c *stage.Context, w *WaitingError) error {
	data, err := yaml.Marshal(map[string]any{"retryAfter": retryWaiting.String(), "message": w.Error()})
	if err != nil {
		return fmt.Errorf("marshalling %s: %w", contract.WorkflowControlFile, err)
	}
	dir := c.Workspace.Metadata()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("creating %s: %w", dir, err)
	}
	if err := os.WriteFile(filepath.Join(dir, contract.WorkflowControlFile), data, 0o644); err != nil {
		return fmt.Errorf("writing %s: %w", contract.WorkflowControlFile, err)
	}
	return nil
}

// renderInto renders the templates with model as data values and writes
// every file they produced to the output folder.
func renderInto(ctx context.Context, c *stage.Context, model any) error {
	files, err := render(ctx, model)
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
	return nil
}

// render evaluates the templates with a model (aggregatorModel or
// targetModel) as data values. Both promises share one template folder so
// that the HTTPRoute layout exists once; each template renders only for
// its kind of model.
func render(ctx context.Context, model any) (map[string][]byte, error) {
	tpl, err := fs.Sub(templates, "templates")
	if err != nil {
		return nil, fmt.Errorf("opening templates: %w", err)
	}
	// The model goes through JSON so that ytt sees the lowerCamel keys the
	// struct tags give, and only maps, lists and scalars.
	data, err := json.Marshal(model)
	if err != nil {
		return nil, fmt.Errorf("encoding the render model: %w", err)
	}
	values := map[string]any{}
	if err := json.Unmarshal(data, &values); err != nil {
		return nil, fmt.Errorf("decoding the render model: %w", err)
	}
	return ytt.Render(ctx, tpl, values)
}
