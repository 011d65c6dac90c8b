// Package controller is the orchestrator: a controller-runtime manager that
// installs each Promise's API, runs its workflows for every request,
// places the output on destinations and writes it to the state store.
package controller

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"promised.dev/promised/api/v1alpha1"
	"promised.dev/promised/pipelines"
	"promised.dev/promised/pipelines/ledger"
	"promised.dev/promised/pipelines/stage"
)

// Options configure the controller.
type Options struct {
	// Registry holds the stages that run in-process.
	Registry *stage.Registry
	// JobRunner runs pipelines whose images are not built in (or that ask
	// for runtime: job); without one such pipelines fail with a clear
	// condition.
	JobRunner pipelines.PipelineRunner
	// StateDir holds the state stores' clones.
	StateDir string
	// PlatformKey (at least 32 random bytes, kept secret) derives the keys
	// that fingerprint sealed secrets; see PlatformKeyFromSecret.
	PlatformKey []byte
	// PlatformNamespace holds the controller's own objects: the ledger
	// entries of promise workflows.
	PlatformNamespace string
	// MaxConcurrentReconciles per request kind; DefaultConcurrency when 0.
	MaxConcurrentReconciles int
	// CommitInterval is the shortest time between two commits to one
	// state store (statestore.GitConfig.CommitInterval); zero commits as
	// fast as pushes go. `promised controller` uses DefaultCommitInterval.
	CommitInterval time.Duration
	// MetricsAddr serves /metrics; "0" disables it.
	MetricsAddr string
	// ProbeAddr serves /healthz and /readyz; "" disables them.
	ProbeAddr string
	// PprofAddr serves net/http/pprof's /debug/pprof/ endpoints; "" or
	// "0" disables them. Profiles hold no secrets but can be expensive, so
	// bind it to loopback.
	PprofAddr string
	// LeaderElection makes one replica active at a time.
	LeaderElection          bool
	LeaderElectionNamespace string
}

// DefaultConcurrency is the default number of requests of one kind
// reconciled at once. Pipelines mostly wait on the state store, whose
// group commit gets better the more writes arrive together, so it is well
// above the CPU count.
func DefaultConcurrency() int { return 32 * runtime.NumCPU() }

// DefaultCommitInterval is the controller's default CommitInterval. It
// made the 530 commits of 10,000 requests created at once 160, and the 216
// of a promise change re-rendering 7,300 requests 64 (make bench-10k); a
// write to an idle store does not wait, and none waits longer than this.
const DefaultCommitInterval = time.Second

// Scheme returns a scheme with everything the controller reads and writes.
func Scheme() (*apiruntime.Scheme, error) {
	s := apiruntime.NewScheme()
	for _, add := range []func(*apiruntime.Scheme) error{clientgoscheme.AddToScheme, apiextensionsv1.AddToScheme, v1alpha1.AddToScheme} {
		if err := add(s); err != nil {
			return nil, fmt.Errorf("building the scheme: %w", err)
		}
	}
	return s, nil
}

// NewManager returns a manager running the controller against cfg.
func NewManager(cfg *rest.Config, opts Options) (manager.Manager, error) {
	scheme, err := Scheme()
	if err != nil {
		return nil, err
	}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                  scheme,
		Metrics:                 metricsserver.Options{BindAddress: opts.MetricsAddr},
		HealthProbeBindAddress:  opts.ProbeAddr,
		PprofBindAddress:        opts.PprofAddr,
		LeaderElection:          opts.LeaderElection,
		LeaderElectionID:        "promised-controller",
		LeaderElectionNamespace: opts.LeaderElectionNamespace,
		// Requests are unstructured; without this every read of one would
		// go to the apiserver instead of the informer cache.
		Client: client.Options{Cache: &client.CacheOptions{Unstructured: true}},
		// Nothing here reads managedFields (patches are merge patches of
		// what was read, and an update without managedFields keeps the
		// stored ones), and they were a large share of each cached request:
		// the cache of 10,000 requests is most of the controller's heap.
		Cache: cache.Options{DefaultTransform: cache.TransformStripManagedFields()},
	})
	if err != nil {
		return nil, fmt.Errorf("creating the manager: %w", err)
	}
	if err := Setup(mgr, opts); err != nil {
		return nil, err
	}
	return mgr, nil
}

// Setup registers the controller's reconcilers with mgr.
func Setup(mgr manager.Manager, opts Options) error {
	if opts.Registry == nil {
		opts.Registry = stage.NewRegistry()
	}
	if opts.MaxConcurrentReconciles == 0 {
		opts.MaxConcurrentReconciles = DefaultConcurrency()
	}
	stores := &Stores{Client: mgr.GetClient(), Secrets: mgr.GetAPIReader(), Dir: opts.StateDir, CommitInterval: opts.CommitInterval, Logger: mgr.GetLogger().WithName("statestore")}
	// Sealing certificates: read past the cache, remembered briefly (see
	// recentReader).
	certs := newRecentReader(mgr.GetAPIReader(), DefaultSecretRecheck)
	places := &Placer{Client: mgr.GetClient(), Stores: stores, Sealing: &Sealing{Reader: certs, PlatformKey: opts.PlatformKey}}
	objects := &promiseObjects{client: mgr.GetClient()}
	engine := NewEngine(pipelines.InProcess{
		Registry: opts.Registry,
		// The ledger reads past the cache: deciding on a stale entry is
		// how a second credential gets minted.
		Ledger:  &ledger.Kubernetes{Client: mgr.GetClient(), Reader: mgr.GetAPIReader(), Namespace: opts.PlatformNamespace},
		Objects: objects,
		// Read fresh: a changed platform Secret (a new server URL, new
		// admin credentials) must reach the very next run, a delete
		// workflow's included.
		Secrets: platformSecrets{reader: mgr.GetAPIReader()},
	}, opts.JobRunner)
	runs := NewRunBook()
	recorder := mgr.GetEventRecorder("promised")
	nudge := newNudger()

	kinds := NewKinds(mgr, controller.Options{MaxConcurrentReconciles: opts.MaxConcurrentReconciles}, func(promise string, gvk schema.GroupVersionKind) reconcile.Reconciler {
		return &RequestReconciler{
			Client: mgr.GetClient(), Promise: promise, GVK: gvk, Engine: engine, Places: places,
			Recorder: recorder, Runs: runs, OnChange: func() { nudge.mark(promise) },
		}
	})
	objects.kinds = kinds
	closeStores := manager.RunnableFunc(func(ctx context.Context) error {
		<-ctx.Done()
		return stores.Close()
	})
	for _, r := range []manager.Runnable{kinds, nudge, closeStores} {
		if err := mgr.Add(r); err != nil {
			return fmt.Errorf("adding a runnable: %w", err)
		}
	}

	promises := &PromiseReconciler{Client: mgr.GetClient(), Reader: mgr.GetAPIReader(), Engine: engine, Places: places, Kinds: kinds, Runs: runs, Recorder: recorder}
	crdToPromise := handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
		if name := o.GetLabels()[LabelPromise]; name != "" {
			return []reconcile.Request{{NamespacedName: client.ObjectKey{Name: name}}}
		}
		return nil
	})
	err := ctrl.NewControllerManagedBy(mgr).
		Named("promise").
		For(&v1alpha1.Promise{}, builder.WithPredicates(predicate.Or(predicate.GenerationChangedPredicate{}, deletionStarted()))).
		Watches(&apiextensionsv1.CustomResourceDefinition{}, crdToPromise).
		WatchesRawSource(source.Channel(nudge.events, &handler.EnqueueRequestForObject{})).
		Complete(promises)
	if err != nil {
		return fmt.Errorf("creating the promise controller: %w", err)
	}

	dests := &DestinationReconciler{
		Client: mgr.GetClient(), Places: places, Kinds: kinds, Runs: runs, Started: time.Now(),
		OnChange: func(ctx context.Context) { nudge.markAll(ctx, mgr.GetClient()) },
	}
	if err := ctrl.NewControllerManagedBy(mgr).Named("destination").For(&v1alpha1.Destination{}, builder.WithPredicates(predicate.Or[client.Object](predicate.GenerationChangedPredicate{}, predicate.LabelChangedPredicate{}, deletionStarted()))).Complete(dests); err != nil {
		return fmt.Errorf("creating the destination controller: %w", err)
	}
	return nil
}

func deletionStarted() predicate.Predicate {
	return predicate.Funcs{UpdateFunc: func(e event.UpdateEvent) bool {
		return e.ObjectNew.GetDeletionTimestamp() != nil && e.ObjectOld.GetDeletionTimestamp() == nil
	}}
}

// NewEngine returns the controller's engine: a pipeline whose every image
// is a stage built into this binary at this version runs in-process;
// anything else, or runtime: job, goes to the Job runner.
func NewEngine(builtin pipelines.InProcess, jobs pipelines.PipelineRunner) *pipelines.Engine {
	reg := builtin.Registry
	inproc := pipelines.Sequential{Pick: func(v1alpha1.Container) (pipelines.ContainerRunner, error) {
		return builtin, nil
	}}
	return &pipelines.Engine{Choose: func(p v1alpha1.Pipeline) (pipelines.PipelineRunner, error) {
		builtIn := p.Spec.Runtime != v1alpha1.RuntimeJob
		foreign := ""
		for _, c := range p.Spec.Containers {
			if _, ok := reg.Lookup(c.Image); !ok {
				builtIn, foreign = false, c.Image
			}
		}
		if builtIn {
			return inproc, nil
		}
		if jobs == nil {
			if foreign == "" {
				return nil, fmt.Errorf("the pipeline asks for runtime: job and no Job runner is configured")
			}
			return nil, fmt.Errorf("image %s is not a stage built into this controller (at %s) and no Job runner is configured", foreign, stage.Version)
		}
		return jobs, nil
	}}
}

// nudger coalesces "this promise's request counts may have changed" into
// at most one promise reconcile per promise per interval.
type nudger struct {
	events chan event.GenericEvent
	mu     sync.Mutex
	dirty  map[string]bool
}

func newNudger() *nudger {
	return &nudger{events: make(chan event.GenericEvent, 256), dirty: map[string]bool{}}
}

func (n *nudger) mark(promise string) {
	n.mu.Lock()
	n.dirty[promise] = true
	n.mu.Unlock()
}

func (n *nudger) markAll(ctx context.Context, c client.Reader) {
	list := &v1alpha1.PromiseList{}
	if err := c.List(ctx, list); err != nil {
		return
	}
	for _, p := range list.Items {
		n.mark(p.Name)
	}
}

// Start implements manager.Runnable.
func (n *nudger) Start(ctx context.Context) error {
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		n.mu.Lock()
		names := n.dirty
		n.dirty = map[string]bool{}
		n.mu.Unlock()
		for name := range names {
			p := &v1alpha1.Promise{}
			p.Name = name
			select {
			case n.events <- event.GenericEvent{Object: p}:
			case <-ctx.Done():
				return nil
			}
		}
	}
}
