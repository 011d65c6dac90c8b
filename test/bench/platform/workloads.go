package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"promised.dev/promised/api/v1alpha1"
	"promised.dev/promised/cmd/builtin"
	"promised.dev/promised/pipelines/apischema"
	"promised.dev/promised/pipelines/local"
	"promised.dev/promised/pipelines/stage"
	"promised.dev/promised/test/liveplatform"
)

// workload is one promise's share of the benchmark: how to prepare the
// platform for it, what its requests look like, and what Promise change
// alters their output.
type workload struct {
	// name is the promise whose requests are measured.
	name string
	// dirs are the promise folders to install, in order (relative to the
	// repository root); the last one is the measured promise.
	dirs []string
	// promise is the measured promise as loaded; gvr its requests.
	promise *v1alpha1.Promise
	gvr     schema.GroupVersionResource
	kind    string
	// setup prepares the platform before the promises are installed
	// (platform Secrets, servers); nil when nothing is needed.
	setup func(ctx context.Context, p *platform) error
	// prepare runs once the promises are Ready and before the probe
	// (platform objects the requests refer to).
	prepare func(ctx context.Context, p *platform) error
	// request returns request i of this workload in namespace ns.
	request func(i int, ns string) (*unstructured.Unstructured, error)
	// change alters the promise so that the output of the requests
	// affected() selects changes, and says what it did; nil when no
	// promise-level change alters this promise's output.
	change   func(ctx context.Context, p *platform) (string, error)
	affected func(u *unstructured.Unstructured) bool
	// allocate tells the workload how many requests it will make.
	allocate func(n int)
	// limit caps this workload's requests (0: none).
	limit int
	// note says something about the workload in the report.
	note string
	// close releases what setup started.
	close func()
}

// candidates lists the workloads whose promise folders exist: the example
// team promise always, and every shipped promise the benchmark knows.
func candidates(o options) []*workload {
	all := []*workload{teamWorkload(o.root)}
	for _, w := range []*workload{natsWorkload(o), databaseWorkload(o), apiAggregatorWorkload(o)} {
		if w != nil {
			all = append(all, w)
		}
	}
	if len(o.only) == 0 {
		return all
	}
	var kept []*workload
	for _, w := range all {
		if o.only[w.name] {
			kept = append(kept, w)
		}
	}
	return kept
}

// load reads the workload's promises and checks that every image of their
// configure workflows is a stage built into promised: anything else would
// need the Job runner, which the benchmark does not measure.
func (w *workload) load(root string) error {
	reg, err := builtin.Registry()
	if err != nil {
		return err
	}
	for _, d := range w.dirs {
		p, err := local.LoadPromise(filepath.Join(root, d))
		if err != nil {
			return err
		}
		var missing []string
		for _, pl := range append(append([]v1alpha1.Pipeline{}, p.Spec.Workflows.Resource.Configure...), p.Spec.Workflows.Promise.Configure...) {
			for _, c := range pl.Spec.Containers {
				if _, ok := reg.Lookup(c.Image); !ok {
					missing = append(missing, c.Image)
				}
			}
		}
		if len(missing) > 0 {
			return fmt.Errorf("promise %s: not built into promised at %s (cmd/builtin): %s", p.Name, stage.Version, strings.Join(missing, ", "))
		}
		w.promise = p
	}
	crd, err := apischema.CRD(w.promise)
	if err != nil {
		return err
	}
	w.kind = crd.Spec.Names.Kind
	for _, v := range crd.Spec.Versions {
		if v.Storage {
			w.gvr = schema.GroupVersionResource{Group: crd.Spec.Group, Version: v.Name, Resource: crd.Spec.Names.Plural}
		}
	}
	return nil
}

// install applies the workload's promises and waits until each is Ready.
func (w *workload) install(ctx context.Context, p *platform) error {
	for _, d := range w.dirs {
		if err := p.InstallPromise(ctx, d); err != nil {
			return err
		}
	}
	return nil
}

// probe creates one request, waits for it to be Ready and deletes it: a
// promise whose requests cannot become Ready on this platform is left out
// of the run rather than failing it.
func (w *workload) probe(ctx context.Context, p *platform) error {
	u, err := w.request(0, benchNamespaces[0])
	if err != nil {
		return err
	}
	u.SetName("probe-" + u.GetName())
	// A probe must not take a name the run's request 0 uses on a
	// server (the shared plan's database).
	if db, ok, _ := unstructured.NestedString(u.Object, "spec", "databaseName"); ok {
		_ = unstructured.SetNestedField(u.Object, "probe_"+db, "spec", "databaseName")
	}
	res := p.Dynamic.Resource(w.gvr).Namespace(u.GetNamespace())
	if _, err := res.Create(ctx, u, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("creating a probe request: %w", err)
	}
	var last *unstructured.Unstructured
	err = p.Poll(ctx, 90*time.Second, 100*time.Millisecond, "a probe "+w.kind+" Ready", func() (bool, error) {
		got, err := res.Get(ctx, u.GetName(), metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		last = got
		return liveplatform.RequestReady(got), nil
	})
	if err != nil {
		if last != nil {
			conds, _, _ := unstructured.NestedSlice(last.Object, "status", "conditions")
			err = fmt.Errorf("%w: %s", err, readyMessage(conds))
		}
		return err
	}
	if err := res.Delete(ctx, u.GetName(), metav1.DeleteOptions{}); err != nil {
		return err
	}
	err = p.Poll(ctx, 90*time.Second, 100*time.Millisecond, "the probe "+w.kind+" deleted", func() (bool, error) {
		got, err := res.Get(ctx, u.GetName(), metav1.GetOptions{})
		if err == nil {
			last = got
		}
		return apierrors.IsNotFound(err), nil
	})
	if err != nil && last != nil {
		conds, _, _ := unstructured.NestedSlice(last.Object, "status", "conditions")
		err = fmt.Errorf("%w: %s", err, readyMessage(conds))
	}
	return err
}

func readyMessage(conds []any) string {
	for _, c := range conds {
		if m, ok := c.(map[string]any); ok && m["type"] == "Ready" {
			return fmt.Sprintf("Ready=%v: %v", m["status"], m["message"])
		}
	}
	return "no Ready condition"
}

// benchNamespaces spread the requests, as many teams' namespaces would.
var benchNamespaces = func() []string {
	out := make([]string, 10)
	for i := range out {
		out[i] = fmt.Sprintf("bench-%d", i)
	}
	return out
}()

// examples reads a promise's valid example requests: testdata cases with
// an expected/ folder (those with error.txt are refused by design).
func examples(root, dir string) ([]*unstructured.Unstructured, error) {
	cases, _ := filepath.Glob(filepath.Join(root, dir, "testdata", "*", "request.yaml"))
	sort.Strings(cases)
	var out []*unstructured.Unstructured
	for _, c := range cases {
		if _, err := os.Stat(filepath.Join(filepath.Dir(c), "expected")); err != nil {
			continue
		}
		u, err := local.LoadObject(c)
		if err != nil {
			return nil, err
		}
		out = append(out, u)
	}
	return out, nil
}

// fromExample returns a copy of example i (round robin) named name in ns,
// without anything the apiserver sets.
func fromExample(ex []*unstructured.Unstructured, i int, name, ns string) *unstructured.Unstructured {
	src := ex[i%len(ex)]
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": src.GetAPIVersion(), "kind": src.GetKind(),
		"metadata": map[string]any{"name": name, "namespace": ns},
	}}
	if spec, ok := src.Object["spec"]; ok {
		u.Object["spec"] = runtimeDeepCopy(spec)
	}
	return u
}

func runtimeDeepCopy(v any) any {
	return (&unstructured.Unstructured{Object: map[string]any{"v": v}}).DeepCopy().Object["v"]
}

// setContainerEnv sets (or adds) a variable on a container of a promise's
// configure pipeline.
func setContainerEnv(p *v1alpha1.Promise, container, name, value string) error {
	for i := range p.Spec.Workflows.Resource.Configure {
		for j := range p.Spec.Workflows.Resource.Configure[i].Spec.Containers {
			c := &p.Spec.Workflows.Resource.Configure[i].Spec.Containers[j]
			if c.Name != container {
				continue
			}
			for k := range c.Env {
				if c.Env[k].Name == name {
					c.Env[k].Value = value
					return nil
				}
			}
			c.Env = append(c.Env, v1alpha1.EnvVar{Name: name, Value: value})
			return nil
		}
	}
	return fmt.Errorf("promise %s has no configure container %q", p.Name, container)
}

// updatePromise reads the promise, applies f and writes it back.
func updatePromise(ctx context.Context, p *platform, name string, f func(*v1alpha1.Promise) error) error {
	pr := &v1alpha1.Promise{}
	if err := p.Client.Get(ctx, client.ObjectKey{Name: name}, pr); err != nil {
		return err
	}
	if err := f(pr); err != nil {
		return err
	}
	return p.Client.Update(ctx, pr)
}

// teamWorkload is the example promise: one ytt render per request.
func teamWorkload(root string) *workload {
	w := &workload{name: "team", dirs: []string{"examples/team"}}
	var ex []*unstructured.Unstructured
	w.setup = func(context.Context, *platform) error {
		var err error
		ex, err = examples(root, "examples/team")
		if err == nil && len(ex) == 0 {
			err = fmt.Errorf("examples/team has no valid testdata")
		}
		return err
	}
	w.request = func(i int, ns string) (*unstructured.Unstructured, error) {
		u := fromExample(ex, i, fmt.Sprintf("team-%05d", i), ns)
		if err := unstructured.SetNestedField(u.Object, fmt.Sprintf("owner%d@example.com", i), "spec", "owner"); err != nil {
			return nil, err
		}
		return u, nil
	}
	// A new label on every team's namespace: the platform team sets
	// TEAM_LABELS on the render container.
	w.change = func(ctx context.Context, p *platform) (string, error) {
		value := "bench.promised.dev/cost-centre=platform-" + time.Now().Format("150405")
		err := updatePromise(ctx, p, "team", func(pr *v1alpha1.Promise) error {
			return setContainerEnv(pr, "render", "TEAM_LABELS", value)
		})
		return "team: TEAM_LABELS=" + value + " on the render container (a label on every namespace)", err
	}
	w.affected = func(*unstructured.Unstructured) bool { return true }
	return w
}
