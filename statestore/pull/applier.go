// Package pull is promised's built-in puller: it reads one destination's
// folder from the state store and applies it to a cluster with server-side
// apply, pruning what left the folder. It is what `promised sync` runs and
// what `promised up` runs in-process for each local destination. At scale,
// Flux or Argo CD do this job (see `promised destination manifests`).
//
// An Applier owns an inventory per destination (a ConfigMap in
// promised-system) listing what it applied, and labels every object it
// applies with promised.dev/managed-by=sync. Prune deletes only objects the
// inventory says sync created, checked against their UID, and a CRD or a
// namespace only when nothing sync did not create would go with it, so it
// never deletes what it did not create.
//
// The package is named pull, not sync, so that importers can still use the
// standard library's sync package unaliased.
package pull

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/go-logr/logr"
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
var ErrEmptySource = errors.New("the folder holds no objects while the inventory lists some; nothing was applied or pruned")

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
	// discovery is the mapper's cache, also used to find what a namespace
	// can hold before pruning it.
	discovery discovery.CachedDiscoveryInterface

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
	cached := memory.NewMemCacheClient(dc)
	return &Applier{
		opts:          opts,
		inventoryName: InventoryName(opts.Destination),
		log:           opts.Logger.WithValues("destination", opts.Destination),
		dyn:           dyn,
		kube:          kube,
		mapper:        restmapper.NewDeferredDiscoveryRESTMapper(cached),
		discovery:     cached,
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
