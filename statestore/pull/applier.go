// Package pull is promised's built-in puller: it reads one destination's
// folder from the state store and applies it to a cluster with server-side
// apply, pruning what left the folder. It is what `promised sync` runs and
// what `promised up` runs in-process for each local destination. At scale,
// Flux or Argo CD do this job (see `promised destination manifests`).
//
// An Applier owns an inventory per destination (a ConfigMap in
// promised-system) listing what it applied, and labels every object it
// applies with promised.dev/managed-by=sync. Prune deletes only objects the
// inventory says sync created, checked against their UID, so it never
// deletes what it did not create.
//
// The package is named pull, not sync, so that importers can still use the
// standard library's sync package unaliased.
package pull

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/go-logr/logr"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
)

const (
	// DefaultFieldManager is the server-side apply field manager.
	DefaultFieldManager = "promised"
	// DefaultNamespace is given to namespaced objects whose manifest has no
	// namespace.
	DefaultNamespace = "default"
)

// ErrEmptySource is returned (wrapped) by Sync when the folder holds no
// objects but the inventory does. Git cannot hold an empty folder, so a
// mistyped path or branch looks exactly like a destination whose last
// object was removed; like Flux, which fails on a missing path, sync
// refuses to prune everything on that evidence unless told to
// (Options.AllowEmpty).
var ErrEmptySource = errors.New("the folder holds no objects while the inventory lists some; nothing was applied or pruned (allow an empty folder to prune everything)")

// RetryPolicy bounds how often, within one sync, an object is tried again
// after a failure that may pass: its kind not served yet, its namespace not
// there yet, a conflict, an overloaded or unreachable apiserver. Failures
// that will not pass (the apiserver found the object invalid, access
// denied) are not retried.
type RetryPolicy struct {
	// Attempts in all, the first included; 5 when zero.
	Attempts int
	// Backoff is the wait before the second attempt, doubled before each
	// further one up to MaxBackoff; 500ms and 8s when zero.
	Backoff    time.Duration
	MaxBackoff time.Duration
}

// Options configure an Applier.
type Options struct {
	// Destination names what is synced; it names the inventory
	// (InventoryName). Required.
	Destination string
	// InventoryNamespace holds the inventory; DefaultInventoryNamespace
	// when empty. It is created when missing.
	InventoryNamespace string
	// FieldManager for server-side apply; DefaultFieldManager when empty.
	FieldManager string
	// DefaultNamespace for namespaced objects without one; "default" when
	// empty.
	DefaultNamespace string
	// AllowEmpty lets a folder without objects prune everything the
	// inventory lists (see ErrEmptySource).
	AllowEmpty bool
	// Retry bounds retries of failed objects within one sync.
	Retry RetryPolicy
	// EstablishTimeout bounds the wait for an applied CRD to be
	// Established; 60s when zero.
	EstablishTimeout time.Duration
	// Logger receives one line per object handled; discarded when zero.
	Logger logr.Logger
}

func (o *Options) setDefaults() {
	if o.InventoryNamespace == "" {
		o.InventoryNamespace = DefaultInventoryNamespace
	}
	if o.FieldManager == "" {
		o.FieldManager = DefaultFieldManager
	}
	if o.DefaultNamespace == "" {
		o.DefaultNamespace = DefaultNamespace
	}
	if o.Retry.Attempts <= 0 {
		o.Retry.Attempts = 5
	}
	if o.Retry.Backoff <= 0 {
		o.Retry.Backoff = 500 * time.Millisecond
	}
	if o.Retry.MaxBackoff <= 0 {
		o.Retry.MaxBackoff = 8 * time.Second
	}
	if o.EstablishTimeout <= 0 {
		o.EstablishTimeout = 60 * time.Second
	}
}

// Applier applies a destination's folder to one cluster. It is safe for
// concurrent use; syncs of one Applier run one at a time.
type Applier struct {
	opts          Options
	inventoryName string
	log           logr.Logger
	dyn           dynamic.Interface
	kube          kubernetes.Interface
	// mapper caches discovery; it is reset when CRDs change and before
	// each retry, because a kind that was unknown may be served now.
	mapper *restmapper.DeferredDiscoveryRESTMapper

	mu sync.Mutex
}

// NewApplier returns an Applier for the cluster cfg connects to.
func NewApplier(cfg *rest.Config, opts Options) (*Applier, error) {
	if opts.Destination == "" {
		return nil, errors.New("pull: Options.Destination is required (it names the inventory)")
	}
	opts.setDefaults()
	cfg = rest.CopyConfig(cfg)
	// client-go's default of 5 queries a second would make a folder of a
	// hundred objects (a read and an apply each) take forty seconds.
	if cfg.QPS == 0 {
		cfg.QPS, cfg.Burst = 50, 100
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("pull: dynamic client: %w", err)
	}
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("pull: clientset: %w", err)
	}
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("pull: discovery client: %w", err)
	}
	return &Applier{
		opts:          opts,
		inventoryName: InventoryName(opts.Destination),
		log:           opts.Logger.WithValues("destination", opts.Destination),
		dyn:           dyn,
		kube:          kube,
		mapper:        restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc)),
	}, nil
}

// Destination is the name given in Options.
func (a *Applier) Destination() string { return a.opts.Destination }

// Sync makes the cluster hold what files hold: it applies every object
// (CRDs first, waiting until they are Established, then namespaces, then
// the rest), retries what failed for a reason that may pass, and prunes
// what the inventory lists but files no longer hold. files is a folder's
// content keyed by relative path, as statestore.Writer.Read returns it;
// only .yaml and .yml files are read.
//
// One object failing does not stop the others: the Report says what
// happened to each, and Report.Err is non-nil when anything failed. The
// error is for failures of the sync as a whole (the inventory cannot be
// read or written, ErrEmptySource, the context ended).
func (a *Applier) Sync(ctx context.Context, files map[string][]byte) (Report, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	rep := Report{Destination: a.opts.Destination}
	inv, err := loadInventory(ctx, a.kube, a.opts.InventoryNamespace, a.inventoryName)
	if err != nil {
		return rep, fmt.Errorf("destination %s: %w", a.opts.Destination, err)
	}
	in := decodeFiles(files)
	if len(in.manifests) == 0 && len(in.failures) == 0 && len(inv.entries) > 0 && !a.opts.AllowEmpty {
		return rep, fmt.Errorf("destination %s (inventory %s/%s lists %d objects): %w", a.opts.Destination, inv.namespace, inv.name, len(inv.entries), ErrEmptySource)
	}

	run := newRun(a, inv, in)
	run.applyAll(ctx)
	if err := ctx.Err(); err != nil {
		run.holdPrune("the sync was interrupted")
	} else {
		run.prune(ctx)
	}
	// What was created must be recorded even when the caller gave up
	// (Ctrl-C): an object missing from the inventory is never pruned.
	storeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	storeErr := inv.store(storeCtx, a.kube, a.opts.Destination, run.nextInventory())
	rep.Objects, rep.Notes = run.results(), run.notes
	if storeErr != nil {
		return rep, fmt.Errorf("destination %s: %w", a.opts.Destination, storeErr)
	}
	if err := ctx.Err(); err != nil {
		return rep, fmt.Errorf("destination %s: sync interrupted: %w", a.opts.Destination, err)
	}
	return rep, nil
}

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
		it.fail(err.Error(), isRetryable(ctx, err))
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

// holdPrune keeps every inventory entry that is not in the folder, without
// deleting anything.
func (r *run) holdPrune(why string) {
	desired := r.desiredKeys()
	held := 0
	for k, e := range r.inv.entries {
		if !desired[k] {
			r.carried[k] = e
			held++
		}
	}
	if held > 0 {
		r.notes = append(r.notes, fmt.Sprintf("prune held back for %d object(s): %s", held, why))
	}
}

func (r *run) desiredKeys() map[string]bool {
	keys := map[string]bool{}
	for _, it := range r.items {
		keys[it.ref.key()] = true
	}
	return keys
}

// prune deletes what the inventory lists and the folder no longer holds,
// when sync created it: CRDs last, because deleting a CRD deletes every
// object of its kind, and namespaces after what lives in them.
func (r *run) prune(ctx context.Context) {
	if n := len(r.parseFailures); n > 0 {
		r.holdPrune(fmt.Sprintf("%d document(s) could not be read, so what left the folder is not known", n))
		return
	}
	desired := r.desiredKeys()
	var gone []inventoryEntry
	for k, e := range r.inv.entries {
		switch {
		case desired[k]:
		case r.unmapped[e.GroupKind()]:
			// An object of this kind in the folder could not be mapped, so
			// its namespace (and so its identity) is not settled: it may be
			// this very entry.
			r.carried[k] = e
		default:
			gone = append(gone, e)
		}
	}
	sort.Slice(gone, func(i, j int) bool {
		pi, pj := phaseOf(gone[i].GroupKind()), phaseOf(gone[j].GroupKind())
		if pi != pj {
			return pi > pj
		}
		return gone[i].key() < gone[j].key()
	})
	for _, e := range gone {
		res, keep := r.pruneOne(ctx, e)
		if keep {
			r.carried[e.key()] = e
		}
		r.pruned = append(r.pruned, res)
		lg := r.a.log.V(1).WithValues("object", e.ObjectRef.String(), "action", res.Action)
		if res.Reason != "" {
			lg = lg.WithValues("reason", res.Reason)
		}
		lg.Info("pruned object")
	}
}

// pruneOne deletes one object if sync created it. keep says whether its
// inventory entry stays (the delete failed and is tried on the next sync).
func (r *run) pruneOne(ctx context.Context, e inventoryEntry) (res ObjectResult, keep bool) {
	res = ObjectResult{Object: e.ObjectRef, Action: ActionPruned}
	gv, err := schema.ParseGroupVersion(e.APIVersion)
	if err != nil {
		res.Action, res.Reason = ActionFailed, fmt.Sprintf("inventory entry has apiVersion %q: %v", e.APIVersion, err)
		return res, true
	}
	mapping, err := r.a.mapper.RESTMapping(e.GroupKind(), gv.Version)
	if meta.IsNoMatchError(err) {
		// No such kind is served: no such object can exist.
		res.Reason = "already gone (its kind is no longer served)"
		return res, false
	}
	if err != nil {
		res.Action, res.Reason = ActionFailed, fmt.Sprintf("finding the resource of %s: %v", e.GroupKind(), err)
		return res, true
	}
	var ri dynamic.ResourceInterface = r.a.dyn.Resource(mapping.Resource)
	if e.Namespace != "" {
		ri = r.a.dyn.Resource(mapping.Resource).Namespace(e.Namespace)
	}
	var live *unstructured.Unstructured
	err = r.retry(ctx, func() error {
		var err error
		live, err = ri.Get(ctx, e.Name, metav1.GetOptions{})
		return err
	})
	switch {
	case apierrors.IsNotFound(err):
		res.Reason = "already gone"
		return res, false
	case err != nil:
		res.Action, res.Reason = ActionFailed, fmt.Sprintf("reading the live object: %v", err)
		return res, true
	}
	if reason := notOurs(e, live); reason != "" {
		res.Action, res.Reason = ActionKept, reason
		return res, false
	}
	if live.GetDeletionTimestamp() != nil {
		res.Reason = "already being deleted"
		return res, false
	}
	// The UID precondition makes the check above and the delete one step:
	// an object re-created in between is not deleted.
	uid := live.GetUID()
	background := metav1.DeletePropagationBackground
	err = r.retry(ctx, func() error {
		return ri.Delete(ctx, e.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}, PropagationPolicy: &background})
	})
	switch {
	case err == nil:
		return res, false
	case apierrors.IsNotFound(err):
		res.Reason = "already gone"
		return res, false
	case apierrors.IsConflict(err):
		res.Action, res.Reason = ActionKept, "re-created outside sync while it was being pruned"
		return res, false
	default:
		res.Action, res.Reason = ActionFailed, fmt.Sprintf("deleting: %v", err)
		return res, true
	}
}

// notOurs says why prune must leave live alone, or "" when sync created it
// and still manages it.
func notOurs(e inventoryEntry, live *unstructured.Unstructured) string {
	switch {
	case e.UID == "":
		return "not deleted: it existed before sync first applied it"
	case live.GetUID() != e.UID:
		return "not deleted: it was re-created outside sync (its UID changed)"
	case live.GetLabels()[LabelManagedBy] != ManagedBy:
		return "not deleted: its " + LabelManagedBy + "=" + ManagedBy + " label was removed"
	}
	return ""
}

// retry runs fn until it succeeds, fails for good, or Options.Retry is
// spent.
func (r *run) retry(ctx context.Context, fn func() error) error {
	backoff := r.a.opts.Retry.Backoff
	for attempt := 1; ; attempt++ {
		err := fn()
		if err == nil || !isRetryable(ctx, err) || apierrors.IsNotFound(err) || apierrors.IsConflict(err) || attempt >= r.a.opts.Retry.Attempts {
			return err
		}
		if !sleep(ctx, backoff) {
			return err
		}
		backoff = min(2*backoff, r.a.opts.Retry.MaxBackoff)
	}
}

// nextInventory is what the inventory lists after this sync: every object
// of the folder that is in the cluster, objects of the folder that failed
// but were created before (so a later removal still prunes them), and
// entries whose prune failed or was held back.
func (r *run) nextInventory() map[string]inventoryEntry {
	next := map[string]inventoryEntry{}
	for k, e := range r.carried {
		next[k] = e
	}
	for _, it := range r.items {
		if it.duplicate {
			continue
		}
		key := it.ref.key()
		old, had := r.inv.entries[key]
		if !it.mapped || !it.exists {
			if had {
				next[key] = old
			}
			continue
		}
		e := inventoryEntry{ObjectRef: it.ref}
		switch {
		case it.created:
			e.UID = it.uid
		case had && old.UID != "" && old.UID == it.uidBefore:
			e.UID = it.uid
		}
		// Otherwise the object existed before sync applied it, or was
		// re-created by someone else: sync manages it but will not delete it.
		next[key] = e
	}
	return next
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

// isRetryable says whether err may pass on its own: the apiserver busy,
// unreachable or conflicting, or something not there yet (a namespace
// applied in this same sync, a kind whose CRD was just applied). An object
// the apiserver found invalid, or access denied, will fail the same way
// again.
func isRetryable(ctx context.Context, err error) bool {
	if ctx.Err() != nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	if meta.IsNoMatchError(err) {
		return true
	}
	switch {
	case apierrors.IsConflict(err), apierrors.IsNotFound(err), apierrors.IsServerTimeout(err), apierrors.IsTimeout(err),
		apierrors.IsTooManyRequests(err), apierrors.IsInternalError(err), apierrors.IsServiceUnavailable(err),
		apierrors.IsUnexpectedServerError(err):
		return true
	}
	var status apierrors.APIStatus
	// Any other answer from the apiserver is its verdict; no answer at all
	// (connection refused, reset) may pass.
	return !errors.As(err, &status)
}

// sleep waits d, returning false when ctx ends first.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
