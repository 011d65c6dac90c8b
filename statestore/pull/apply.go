package pull

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
)

// Apply phases: CRDs must be served before their objects can be applied,
// and namespaces must exist before what lives in them.
const (
	phaseCRD = iota
	phaseNamespace
	phaseOther
)

var (
	crdKind       = schema.GroupKind{Group: "apiextensions.k8s.io", Kind: "CustomResourceDefinition"}
	namespaceKind = schema.GroupKind{Kind: "Namespace"}
	crdResource   = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}
)

func phaseOf(gk schema.GroupKind) int {
	switch gk {
	case crdKind:
		return phaseCRD
	case namespaceKind:
		return phaseNamespace
	}
	return phaseOther
}

// item is one object of the folder on its way to the cluster.
type item struct {
	m     manifest
	gk    schema.GroupKind
	phase int
	// ref is the object as written until it is mapped, then with its
	// namespace settled (defaulted, or dropped for cluster-scoped kinds).
	ref    ObjectRef
	mapped bool
	// duplicate: an earlier document defines the same object.
	duplicate bool

	// Outcome of the last attempt.
	action    Action
	reason    string
	retryable bool
	// exists: the object is in the cluster (the apply went through).
	exists bool
	uid    types.UID
	// created: the object did not exist before this sync applied it.
	created bool
	// uidBefore is the live object's UID before the apply.
	uidBefore types.UID
}

func (it *item) fail(reason string, retryable bool) {
	it.action, it.reason, it.retryable = ActionFailed, reason, retryable
}

// run is one Sync.
type run struct {
	a     *Applier
	inv   *inventory
	items []*item
	// parseFailures are documents that could not be read.
	parseFailures []ObjectResult
	// unmapped are kinds some object of the folder has that the cluster
	// does not serve: those objects' final refs are unknown, so prune
	// leaves every inventory entry of these kinds alone.
	unmapped map[schema.GroupKind]bool
	pruned   []ObjectResult
	// carried are inventory entries kept as they were (their prune failed
	// or was held back).
	carried map[string]inventoryEntry
	notes   []string
}

func newRun(a *Applier, inv *inventory, in decoded) *run {
	r := &run{a: a, inv: inv, unmapped: map[schema.GroupKind]bool{}, carried: map[string]inventoryEntry{}}
	for _, f := range in.failures {
		r.parseFailures = append(r.parseFailures, ObjectResult{File: fmt.Sprintf("%s#%d", f.file, f.doc), Action: ActionFailed, Reason: f.reason})
	}
	for _, name := range in.skipped {
		r.notes = append(r.notes, fmt.Sprintf("skipped %s: not a .yaml or .yml file", name))
	}
	seen := map[string]*item{}
	for _, m := range in.manifests {
		gk := m.obj.GroupVersionKind().GroupKind()
		it := &item{m: m, gk: gk, phase: phaseOf(gk), ref: ObjectRef{
			APIVersion: m.obj.GetAPIVersion(), Kind: m.obj.GetKind(), Namespace: m.obj.GetNamespace(), Name: m.obj.GetName(),
		}}
		if first, dup := seen[it.ref.key()]; dup {
			// Two definitions of one object would fight on every sync;
			// the first (in path order) wins, so the outcome is stable.
			it.duplicate = true
			it.fail(fmt.Sprintf("defined again: %s already defines it and is applied instead", first.m.source()), false)
		} else {
			seen[it.ref.key()] = it
		}
		r.items = append(r.items, it)
	}
	// Phase order, keeping path order within a phase.
	sort.SliceStable(r.items, func(i, j int) bool { return r.items[i].phase < r.items[j].phase })
	return r
}

// applyAll applies every item, then retries those that failed for a
// reason that may pass, resetting discovery each time, within
// Options.Retry.
func (r *run) applyAll(ctx context.Context) {
	pending := make([]*item, 0, len(r.items))
	for _, it := range r.items {
		if it.action == "" {
			pending = append(pending, it)
		}
	}
	backoff := r.a.opts.Retry.Backoff
	for attempt := 1; len(pending) > 0; attempt++ {
		r.applyPhases(ctx, pending)
		var again []*item
		for _, it := range pending {
			if it.action == ActionFailed && it.retryable {
				again = append(again, it)
			}
		}
		if len(again) == 0 || attempt >= r.a.opts.Retry.Attempts {
			return
		}
		r.a.log.Info("retrying objects that failed", "objects", len(again), "attempt", attempt+1, "after", backoff.String())
		if !sleep(ctx, backoff) {
			return
		}
		backoff = min(2*backoff, r.a.opts.Retry.MaxBackoff)
		r.a.mapper.Reset()
		pending = again
	}
}

// applyPhases applies items (in phase order), waiting for CRDs to be
// Established before going on.
func (r *run) applyPhases(ctx context.Context, items []*item) {
	crdChanged := false
	for i, it := range items {
		if i > 0 && items[i-1].phase == phaseCRD && it.phase != phaseCRD {
			r.settleCRDs(ctx, items[:i], crdChanged)
		}
		if ctx.Err() != nil {
			it.fail(fmt.Sprintf("not applied: %v", ctx.Err()), false)
			continue
		}
		r.applyOne(ctx, it)
		if it.phase == phaseCRD && it.action == ActionApplied {
			crdChanged = true
		}
	}
	if n := len(items); n > 0 && items[n-1].phase == phaseCRD {
		r.settleCRDs(ctx, items, crdChanged)
	}
}

// settleCRDs waits until the applied CRDs are Established and, when any
// changed, drops the discovery cache so their kinds are found.
func (r *run) settleCRDs(ctx context.Context, items []*item, changed bool) {
	for _, it := range items {
		if it.phase != phaseCRD || !it.exists || it.action == ActionFailed {
			continue
		}
		if err := r.waitEstablished(ctx, it.ref.Name); err != nil {
			it.fail(err.Error(), false)
			r.log(it)
		}
	}
	if changed {
		r.a.mapper.Reset()
	}
}

func (r *run) waitEstablished(ctx context.Context, name string) error {
	var last string
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, r.a.opts.EstablishTimeout, true, func(ctx context.Context) (bool, error) {
		crd, err := r.a.dyn.Resource(crdResource).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			last = err.Error()
			return false, nil
		}
		conds, _, _ := unstructured.NestedSlice(crd.Object, "status", "conditions")
		for _, c := range conds {
			m, _ := c.(map[string]any)
			switch {
			case m["type"] == "Established" && m["status"] == "True":
				return true, nil
			case m["type"] == "NamesAccepted" && m["status"] == "False":
				// Another CRD holds these names; waiting will not help.
				return false, fmt.Errorf("CRD names not accepted: %v", m["message"])
			}
		}
		last = "no Established condition yet"
		return false, nil
	})
	if err != nil {
		if last != "" && wait.Interrupted(err) {
			return fmt.Errorf("CRD not Established after %s: %s", r.a.opts.EstablishTimeout, last)
		}
		return fmt.Errorf("waiting for the CRD to be Established: %w", err)
	}
	return nil
}

// applyOne server-side applies one object and says whether anything
// changed. Reading the object first costs a request, but it is how the
// outcome is known: an apply that changes nothing leaves the
// resourceVersion as it was (the apiserver does not even write to etcd),
// and how the inventory knows whether sync created the object.
func (r *run) applyOne(ctx context.Context, it *item) {
	it.action, it.reason, it.retryable = "", "", false
	mapping, err := r.a.mapper.RESTMapping(it.gk, it.m.obj.GroupVersionKind().Version)
	if err != nil {
		if meta.IsNoMatchError(err) {
			r.unmapped[it.gk] = true
			it.fail(fmt.Sprintf("the cluster does not serve %s (is its CRD applied?)", it.m.obj.GroupVersionKind()), true)
		} else {
			it.fail(fmt.Sprintf("finding the resource of %s: %v", it.m.obj.GroupVersionKind(), err), isRetryable(ctx, err))
		}
		r.log(it)
		return
	}
	delete(r.unmapped, it.gk)
	ns := it.m.obj.GetNamespace()
	if mapping.Scope.Name() == meta.RESTScopeNameNamespace {
		if ns == "" {
			ns = r.a.opts.DefaultNamespace
		}
	} else {
		ns = ""
	}
	it.ref.Namespace, it.mapped = ns, true
	obj := prepare(it.m.obj, ns)

	var ri dynamic.ResourceInterface = r.a.dyn.Resource(mapping.Resource)
	if ns != "" {
		ri = r.a.dyn.Resource(mapping.Resource).Namespace(ns)
	}
	live, err := ri.Get(ctx, it.ref.Name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		live = nil
	case err != nil:
		it.fail(fmt.Sprintf("reading the live object: %v", err), isRetryable(ctx, err))
		r.log(it)
		return
	}
	// Force: the folder is the desired state. A field someone changed by
	// hand (kubectl edit) is taken back, as Flux and Argo CD do, instead
	// of failing the object on a field-manager conflict.
	out, err := ri.Apply(ctx, it.ref.Name, obj, metav1.ApplyOptions{FieldManager: r.a.opts.FieldManager, Force: true})
	if err != nil {
		if missingNamespace(err) && !r.createsNamespace(ns) {
			// Waiting cannot help: nothing in this sync will create it.
			it.fail(fmt.Sprintf("namespace %q does not exist and the folder does not create it", ns), false)
		} else {
			it.fail(err.Error(), isRetryable(ctx, err))
		}
		r.log(it)
		return
	}
	it.exists, it.uid = true, out.GetUID()
	it.created = live == nil
	it.action = ActionApplied
	if live != nil {
		it.uidBefore = live.GetUID()
		if live.GetResourceVersion() == out.GetResourceVersion() {
			it.action = ActionUnchanged
		}
	}
	r.log(it)
}

// missingNamespace says whether err is the apiserver refusing an object
// because its namespace does not exist.
func missingNamespace(err error) bool {
	var status apierrors.APIStatus
	if !apierrors.IsNotFound(err) || !errors.As(err, &status) {
		return false
	}
	d := status.Status().Details
	return d != nil && d.Kind == "namespaces"
}

// createsNamespace says whether the folder holds Namespace ns.
func (r *run) createsNamespace(ns string) bool {
	for _, it := range r.items {
		if it.gk == namespaceKind && it.ref.Name == ns && !it.duplicate {
			return true
		}
	}
	return false
}

// prepare returns the object as sync applies it: in its settled
// namespace, labelled as sync's, without the server-owned metadata an
// exported manifest may carry (managedFields makes an apply fail, and a
// resourceVersion would turn it into a compare-and-swap that fails as soon
// as anything else writes the object).
func prepare(in *unstructured.Unstructured, ns string) *unstructured.Unstructured {
	obj := in.DeepCopy()
	obj.SetNamespace(ns)
	labels := obj.GetLabels()
	if labels == nil {
		labels = map[string]string{}
	}
	labels[LabelManagedBy] = ManagedBy
	obj.SetLabels(labels)
	for _, f := range []string{"managedFields", "resourceVersion", "uid", "creationTimestamp", "generation", "selfLink", "deletionTimestamp", "deletionGracePeriodSeconds"} {
		unstructured.RemoveNestedField(obj.Object, "metadata", f)
	}
	return obj
}

// results lists the outcome of every document and object, in the order
// they were handled.
func (r *run) results() []ObjectResult {
	out := append([]ObjectResult{}, r.parseFailures...)
	for _, it := range r.items {
		out = append(out, ObjectResult{Object: it.ref, File: it.m.source(), Action: it.action, Reason: it.reason})
	}
	return append(out, r.pruned...)
}

// log records one object's outcome at V(1): the Report carries the same,
// and a CLI prints the report rather than a second copy in its logs.
func (r *run) log(it *item) {
	lg := r.a.log.V(1).WithValues("object", it.ref.String(), "file", it.m.source(), "action", it.action)
	if it.action == ActionFailed {
		lg = lg.WithValues("reason", it.reason, "willRetry", it.retryable)
	}
	lg.Info("applied object")
}
