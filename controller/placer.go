package controller

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"promised.dev/promised/api/v1alpha1"
	"promised.dev/promised/controller/scheduling"
	"promised.dev/promised/pipelines"
	"promised.dev/promised/statestore"
)

// Placer connects workflow output to destinations and the state store:
// scheduling, reading what was written before, and writing.
type Placer struct {
	Client  client.Reader
	Stores  *Stores
	Sealing *Sealing
}

// writeTimeout bounds how long a reconcile waits for the state store.
const writeTimeout = 20 * time.Second

// placement maps each output group ("<pipeline>" or "<pipeline>/<folder>")
// to the destination it is placed on.
type placement map[string]string

func (p placement) groups() map[string]string { return map[string]string(p) }

func (p placement) destinations() []string {
	seen := map[string]bool{}
	var out []string
	for _, d := range p {
		if !seen[d] {
			seen[d] = true
			out = append(out, d)
		}
	}
	sort.Strings(out)
	return out
}

func (p placement) summary() string {
	if len(p) == 0 {
		return "no destination (empty output)"
	}
	return strings.Join(p.destinations(), ", ")
}

// destinations lists the Destinations that are not being deleted.
func (pl *Placer) destinations(ctx context.Context) (map[string]*v1alpha1.Destination, []scheduling.Destination, error) {
	list := &v1alpha1.DestinationList{}
	if err := pl.Client.List(ctx, list); err != nil {
		return nil, nil, fmt.Errorf("listing destinations: %w", err)
	}
	byName := map[string]*v1alpha1.Destination{}
	var sched []scheduling.Destination
	for i := range list.Items {
		d := &list.Items[i]
		if !d.DeletionTimestamp.IsZero() {
			continue
		}
		byName[d.Name] = d
		labels := map[string]string{scheduling.DestinationNameLabel: d.Name}
		for k, v := range d.Labels {
			labels[k] = v
		}
		sched = append(sched, scheduling.Destination{Name: d.Name, Labels: labels, Strict: d.Spec.StrictMatchLabels})
	}
	return byName, sched, nil
}

// outputGroups splits a result into placement groups with their selectors:
// the promise's selectors always apply; a pipeline's selectors without a
// directory apply to the rest of its output.
func outputGroups(p *v1alpha1.Promise, res *pipelines.Result) ([]scheduling.Group, map[string]map[string][]byte) {
	base := make([]map[string]string, 0, len(p.Spec.DestinationSelectors))
	for _, s := range p.Spec.DestinationSelectors {
		base = append(base, s.MatchLabels)
	}
	var groups []scheduling.Group
	files := map[string]map[string][]byte{}
	for _, out := range res.Pipelines {
		rest := scheduling.Group{Directory: out.Name, Selectors: append([]map[string]string{}, base...)}
		dirs := map[string]bool{}
		for _, s := range out.Selectors {
			if s.Directory == "" {
				rest.Selectors = append(rest.Selectors, s.MatchLabels)
				continue
			}
			dirs[s.Directory] = true
			groups = append(groups, scheduling.Group{Directory: out.Name + "/" + s.Directory, Selectors: append(append([]map[string]string{}, base...), s.MatchLabels)})
		}
		for name, data := range out.Files {
			group := out.Name
			if dir, _, ok := strings.Cut(name, "/"); ok && dirs[dir] {
				group = out.Name + "/" + dir
			}
			if files[group] == nil {
				files[group] = map[string][]byte{}
			}
			files[group][out.Name+"/"+name] = data
		}
		groups = append(groups, rest)
	}
	// A group without files needs no destination.
	kept := groups[:0]
	for _, g := range groups {
		if len(files[g.Directory]) > 0 {
			kept = append(kept, g)
		}
	}
	return kept, files
}

// Schedule places a request's output, keeping previous placements that
// still match.
func (pl *Placer) Schedule(ctx context.Context, obj *unstructured.Unstructured, p *v1alpha1.Promise, res *pipelines.Result, previous map[string]string) (placement, error) {
	_, dests, err := pl.destinations(ctx)
	if err != nil {
		return nil, err
	}
	groups, _ := outputGroups(p, res)
	got, err := scheduling.One(string(obj.GetUID()), groups, dests, previous)
	if err != nil {
		return nil, err
	}
	return placement(got), nil
}

// target is one destination's folder for a request or a promise.
type target struct {
	store Store
	dir   string
	fp    statestore.Filepath
}

func (pl *Placer) target(ctx context.Context, d *v1alpha1.Destination, dirOf func(storePath, destPath string) (string, error)) (target, error) {
	if d.Spec.StateStoreRef.Kind != "" && d.Spec.StateStoreRef.Kind != "GitStateStore" {
		return target{}, fmt.Errorf("destination %q: state store kind %q is not supported", d.Name, d.Spec.StateStoreRef.Kind)
	}
	store, err := pl.Stores.Get(ctx, d.Spec.StateStoreRef.Name)
	if err != nil {
		return target{}, fmt.Errorf("destination %q: %w", d.Name, err)
	}
	destPath := d.Spec.Path
	if destPath == "" {
		destPath = d.Name
	}
	dir, err := dirOf(store.Path, destPath)
	if err != nil {
		return target{}, fmt.Errorf("destination %q: %w", d.Name, err)
	}
	return target{store: store, dir: dir, fp: statestore.Filepath{Mode: statestore.FilepathMode(d.Spec.Filepath.Mode)}}, nil
}

func requestDir(obj *unstructured.Unstructured, promise string) func(string, string) (string, error) {
	return func(storePath, destPath string) (string, error) {
		return statestore.ResourceDir(storePath, destPath, obj.GetNamespace(), promise, obj.GetName())
	}
}

// ReadRequest returns what the request's workflow wrote last time, keyed
// "<pipeline>/<path>", from each destination it was placed on.
func (pl *Placer) ReadRequest(ctx context.Context, obj *unstructured.Unstructured, promise string, previous map[string]string) (map[string][]byte, error) {
	byName, _, err := pl.destinations(ctx)
	if err != nil {
		return nil, err
	}
	out := map[string][]byte{}
	for _, name := range placement(previous).destinations() {
		d, ok := byName[name]
		if !ok {
			continue
		}
		t, err := pl.target(ctx, d, requestDir(obj, promise))
		if err != nil {
			return nil, err
		}
		if t.fp.Mode == statestore.FilepathAggregatedYAML {
			// One aggregated file cannot be split back into the
			// pipelines' files; such stages see no previous output.
			continue
		}
		files, err := t.store.Writer.Read(ctx, t.dir)
		if err != nil {
			return nil, err
		}
		for k, v := range files {
			out[k] = v
		}
	}
	return out, nil
}

// WriteRequest writes each destination's share of the output and removes
// the request's folder from destinations it no longer uses, in one commit
// per store.
func (pl *Placer) WriteRequest(ctx context.Context, obj *unstructured.Unstructured, p *v1alpha1.Promise, res *pipelines.Result, previous, next map[string]string) (string, bool, error) {
	_, files := outputGroups(p, res)
	perDest := map[string]map[string][]byte{}
	for group, dest := range next {
		if perDest[dest] == nil {
			perDest[dest] = map[string][]byte{}
		}
		for k, v := range files[group] {
			perDest[dest][k] = v
		}
	}
	for _, dest := range placement(previous).destinations() {
		if _, still := perDest[dest]; !still {
			perDest[dest] = nil
		}
	}
	return pl.write(ctx, perDest, requestDir(obj, p.Name))
}

// DeleteRequest removes the request's folder from every destination it
// was placed on.
func (pl *Placer) DeleteRequest(ctx context.Context, obj *unstructured.Unstructured, promise string, previous map[string]string) error {
	perDest := map[string]map[string][]byte{}
	for _, dest := range placement(previous).destinations() {
		perDest[dest] = nil
	}
	_, _, err := pl.write(ctx, perDest, requestDir(obj, promise))
	return err
}

// write applies per-destination folder contents (nil removes the folder),
// grouping the changes by store so each store makes at most one commit.
func (pl *Placer) write(ctx context.Context, perDest map[string]map[string][]byte, dirOf func(string, string) (string, error)) (string, bool, error) {
	byName, _, err := pl.destinations(ctx)
	if err != nil {
		return "", false, err
	}
	type batch struct {
		store   Store
		changes []statestore.Change
	}
	batches := map[string]*batch{}
	names := make([]string, 0, len(perDest))
	for n := range perDest {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		d, ok := byName[name]
		if !ok {
			// A deleted destination's folder is left for its own cleanup.
			continue
		}
		t, err := pl.target(ctx, d, dirOf)
		if err != nil {
			return "", false, err
		}
		var c statestore.Change
		if files := perDest[name]; files == nil {
			c = statestore.Change{Dir: t.dir, Delete: true}
		} else if c, err = statestore.OutputChange(t.dir, t.fp, files); err != nil {
			return "", false, fmt.Errorf("destination %q: %w", name, err)
		}
		key := d.Spec.StateStoreRef.Name
		if batches[key] == nil {
			batches[key] = &batch{store: t.store}
		}
		batches[key].changes = append(batches[key].changes, c)
	}
	keys := make([]string, 0, len(batches))
	for k := range batches {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var commit string
	changed := false
	for _, k := range keys {
		// A store that is down makes the writer retry for a long while; a
		// reconcile gives up sooner so the request's status says why, and
		// tries again (the writer drops a write whose caller gave up).
		wctx, cancel := context.WithTimeoutCause(ctx, writeTimeout, fmt.Errorf("the store did not accept the write within %s: is the Git server reachable?", writeTimeout))
		res, err := batches[k].store.Writer.Write(wctx, batches[k].changes...)
		cause := context.Cause(wctx)
		cancel()
		if err != nil {
			if cause != nil && ctx.Err() == nil {
				err = cause
			}
			pl.Stores.Recheck(k)
			return "", false, fmt.Errorf("writing to GitStateStore %q: %w", k, err)
		}
		if commit == "" {
			commit = res.Commit
		}
		changed = changed || res.Changed
	}
	return commit, changed, nil
}

func dependenciesDir(promise string) func(string, string) (string, error) {
	return func(storePath, destPath string) (string, error) {
		return statestore.DependenciesDir(storePath, destPath, promise)
	}
}

// WriteDependencies writes a promise's dependencies (deps, placed by the
// promise's selectors) and its promise-workflow output (res, placed by the
// promise's and the pipelines' selectors) to every matching destination,
// and removes them from previous destinations that no longer match. It
// returns the destinations written.
func (pl *Placer) WriteDependencies(ctx context.Context, p *v1alpha1.Promise, deps map[string][]byte, res *pipelines.Result, previous []string) ([]string, error) {
	_, dests, err := pl.destinations(ctx)
	if err != nil {
		return nil, err
	}
	base := scheduling.Group{Directory: dependenciesFile}
	for _, s := range p.Spec.DestinationSelectors {
		base.Selectors = append(base.Selectors, s.MatchLabels)
	}
	groups := []scheduling.Group{}
	files := map[string]map[string][]byte{}
	if len(deps) > 0 {
		groups = append(groups, base)
		files[base.Directory] = deps
	}
	if res != nil {
		g, f := outputGroups(p, res)
		groups = append(groups, g...)
		for k, v := range f {
			files[k] = v
		}
	}
	perDest := map[string]map[string][]byte{}
	for group, names := range scheduling.All(groups, dests) {
		for _, name := range names {
			if perDest[name] == nil {
				perDest[name] = map[string][]byte{}
			}
			for k, v := range files[group] {
				perDest[name][k] = v
			}
		}
	}
	written := make([]string, 0, len(perDest))
	for name := range perDest {
		written = append(written, name)
	}
	sort.Strings(written)
	for _, name := range previous {
		if _, ok := perDest[name]; !ok {
			perDest[name] = nil
		}
	}
	if _, _, err := pl.write(ctx, perDest, dependenciesDir(p.Name)); err != nil {
		return nil, err
	}
	return written, nil
}

// DeleteDependencies removes a promise's folder from the destinations it
// was written to.
func (pl *Placer) DeleteDependencies(ctx context.Context, promise string, previous []string) error {
	perDest := map[string]map[string][]byte{}
	for _, name := range previous {
		perDest[name] = nil
	}
	_, _, err := pl.write(ctx, perDest, dependenciesDir(promise))
	return err
}
