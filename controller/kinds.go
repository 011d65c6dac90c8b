package controller

import (
	"context"
	"fmt"
	"sync"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"
)

// Kinds runs one request controller per promise, started when the
// promise's API is served and stopped when the promise is gone. They are
// unmanaged controllers with their own context, because a manager cannot
// remove a controller once added.
type Kinds struct {
	mgr        manager.Manager
	options    controller.Options
	reconciler func(promise string, gvk schema.GroupVersionKind) reconcile.Reconciler
	log        logr.Logger

	mu      sync.Mutex
	base    context.Context
	running map[string]*kindController
}

type kindController struct {
	gvk     schema.GroupVersionKind
	cancel  context.CancelFunc
	trigger chan event.GenericEvent
	view    *kindView
}

// stop stops the controller and detaches its view.
func (kc *kindController) stop() {
	kc.cancel()
	kc.view.stop()
}

// NewKinds returns a Kinds that starts controllers on mgr; it must be added
// to mgr (it is a Runnable) so that controllers stop with the manager.
func NewKinds(mgr manager.Manager, opts controller.Options, r func(promise string, gvk schema.GroupVersionKind) reconcile.Reconciler) *Kinds {
	return &Kinds{mgr: mgr, options: opts, reconciler: r, running: map[string]*kindController{}, log: mgr.GetLogger().WithName("kinds")}
}

// Start implements manager.Runnable: it remembers the manager's context
// and stops every request controller when it ends.
func (k *Kinds) Start(ctx context.Context) error {
	k.mu.Lock()
	k.base = ctx
	k.mu.Unlock()
	<-ctx.Done()
	k.mu.Lock()
	defer k.mu.Unlock()
	for name, kc := range k.running {
		kc.stop()
		delete(k.running, name)
	}
	return nil
}

// Ensure starts the request controller of a promise if it is not running
// with this kind.
func (k *Kinds) Ensure(promise string, gvk schema.GroupVersionKind) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if kc, ok := k.running[promise]; ok {
		if kc.gvk == gvk {
			return nil
		}
		kc.stop()
		delete(k.running, promise)
	}
	if k.base == nil {
		return fmt.Errorf("the manager has not started yet")
	}
	opts := k.options
	opts.Reconciler = k.reconciler(promise, gvk)
	// The same promise may be deleted and created again; controller names
	// only need to be unique among running controllers.
	skip := true
	opts.SkipNameValidation = &skip
	c, err := controller.NewUnmanaged("request-"+promise, opts)
	if err != nil {
		return fmt.Errorf("creating the request controller of promise %q: %w", promise, err)
	}
	obj := &unstructured.Unstructured{}
	obj.SetGroupVersionKind(gvk)
	if err := c.Watch(source.Kind[client.Object](k.mgr.GetCache(), obj, &handler.EnqueueRequestForObject{}, requestChanged())); err != nil {
		return fmt.Errorf("watching %s: %w", gvk.Kind, err)
	}
	trigger := make(chan event.GenericEvent, 1024)
	if err := c.Watch(source.Channel(trigger, &handler.EnqueueRequestForObject{})); err != nil {
		return fmt.Errorf("watching triggers of %s: %w", gvk.Kind, err)
	}
	// Not waiting for the informer to sync: k.mu is held, and the view
	// says when it has.
	informer, err := k.mgr.GetCache().GetInformer(k.base, obj, cache.BlockUntilSynced(false))
	if err != nil {
		return fmt.Errorf("getting the informer of %s: %w", gvk.Kind, err)
	}
	view, err := watchKind(informer)
	if err != nil {
		return fmt.Errorf("watching %s for stages: %w", gvk.Kind, err)
	}
	ctx, cancel := context.WithCancel(k.base)
	k.running[promise] = &kindController{gvk: gvk, cancel: cancel, trigger: trigger, view: view}
	go func() {
		if err := c.Start(ctx); err != nil {
			k.log.Error(err, "request controller stopped", "promise", promise)
		}
	}()
	return nil
}

// Stop stops a promise's request controller and drops its informer.
func (k *Kinds) Stop(ctx context.Context, promise string) error {
	k.mu.Lock()
	kc, ok := k.running[promise]
	delete(k.running, promise)
	k.mu.Unlock()
	if !ok {
		return nil
	}
	kc.stop()
	obj := &unstructured.Unstructured{}
	obj.SetGroupVersionKind(kc.gvk)
	if err := k.mgr.GetCache().RemoveInformer(ctx, obj); err != nil {
		return fmt.Errorf("removing the informer of %s: %w", kc.gvk.Kind, err)
	}
	return nil
}

// view returns the ordered view of a served kind, nil when no running
// controller serves it.
func (k *Kinds) view(gvk schema.GroupVersionKind) *kindView {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, kc := range k.running {
		if kc.gvk == gvk {
			return kc.view
		}
	}
	return nil
}

// TriggerAll queues every request of a promise (or of every promise when
// promise is empty), e.g. after the promise or a destination changed.
func (k *Kinds) TriggerAll(ctx context.Context, promise string) error {
	k.mu.Lock()
	var targets []*kindController
	for name, kc := range k.running {
		if promise == "" || name == promise {
			targets = append(targets, kc)
		}
	}
	k.mu.Unlock()
	for _, kc := range targets {
		list := &unstructured.UnstructuredList{}
		list.SetGroupVersionKind(kc.gvk.GroupVersion().WithKind(kc.gvk.Kind + "List"))
		if err := k.mgr.GetCache().List(ctx, list); err != nil {
			return fmt.Errorf("listing %s: %w", kc.gvk.Kind, err)
		}
		go func(items []unstructured.Unstructured, ch chan event.GenericEvent) {
			for i := range items {
				select {
				case ch <- event.GenericEvent{Object: &items[i]}:
				case <-ctx.Done():
					return
				}
			}
		}(list.Items, kc.trigger)
	}
	return nil
}

// requestChanged lets through what can change a request's output: a new
// request, a spec change (generation), an annotation change (reconcile-at,
// paused, rotate) and the start of deletion. The default generation
// predicate alone is not enough: Kubernetes does not bump the generation
// when it sets deletionTimestamp. Status-only updates, including our own,
// are dropped, so a status write never causes another run.
func requestChanged() predicate.Predicate {
	deletion := predicate.Funcs{UpdateFunc: func(e event.UpdateEvent) bool {
		return e.ObjectNew.GetDeletionTimestamp() != nil && e.ObjectOld.GetDeletionTimestamp() == nil
	}}
	return predicate.Or(predicate.GenerationChangedPredicate{}, predicate.AnnotationChangedPredicate{}, deletion)
}
