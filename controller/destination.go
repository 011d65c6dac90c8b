package controller

import (
	"context"
	"fmt"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"promised.dev/promised/api/v1alpha1"
)

// retryProbe is how often a destination whose store is unreachable is
// checked again; a reachable one is re-probed at the slower interval.
const (
	retryProbe   = 15 * time.Second
	reprobeAfter = 10 * time.Minute
)

// DestinationReconciler reports whether each destination's state store is
// reachable and writable, and re-places output when destinations change.
type DestinationReconciler struct {
	Client client.Client
	Places *Placer
	Kinds  *Kinds
	Runs   *RunBook
	// OnChange is called when a destination appears, goes or changes its
	// labels or path (promises re-place their dependencies).
	OnChange func(ctx context.Context)
	Now      func() time.Time
	// Started is when the controller started: destinations that existed
	// before are not changes, since every request runs after a start anyway.
	Started time.Time

	mu   sync.Mutex
	seen map[string]string
}

// Reconcile implements reconcile.Reconciler.
func (r *DestinationReconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	d := &v1alpha1.Destination{}
	err := r.Client.Get(ctx, req.NamespacedName, d)
	if client.IgnoreNotFound(err) != nil {
		return reconcile.Result{}, err
	}
	if err != nil || !d.DeletionTimestamp.IsZero() {
		r.changed(ctx, req.Name, "", time.Time{})
		return reconcile.Result{}, nil
	}
	r.changed(ctx, d.Name, shape(d), d.CreationTimestamp.Time)

	status := *d.Status.DeepCopy()
	status.ObservedGeneration = d.Generation
	next := reprobeAfter
	if perr := r.probe(ctx, d); perr != nil {
		setCondition(&status.Conditions, cond(CondReady, false, ReasonStoreError, perr.Error()), r.now())
		next = retryProbe
		log.FromContext(ctx).Info("destination not ready", "reason", perr.Error())
	} else {
		setCondition(&status.Conditions, cond(CondReady, true, ReasonSucceeded, "state store "+d.Spec.StateStoreRef.Name+" is reachable and writable"), r.now())
	}
	if fp, err := r.Places.CertificateFingerprint(ctx, d.Name); err == nil {
		status.SealingCertificateFingerprint = fp
	} else {
		setCondition(&status.Conditions, cond(CondReady, false, ReasonNotReady, err.Error()), r.now())
	}
	if !equality.Semantic.DeepEqual(status, d.Status) {
		before := d.DeepCopy()
		d.Status = status
		if err := r.Client.Status().Patch(ctx, d, client.MergeFrom(before)); err != nil {
			return reconcile.Result{}, fmt.Errorf("writing destination status: %w", err)
		}
	}
	return reconcile.Result{RequeueAfter: next}, nil
}

func (r *DestinationReconciler) probe(ctx context.Context, d *v1alpha1.Destination) error {
	store, err := r.Places.Stores.Get(ctx, d.Spec.StateStoreRef.Name)
	if err != nil {
		return err
	}
	if err := store.Writer.Probe(ctx); err != nil {
		r.Places.Stores.Recheck(d.Spec.StateStoreRef.Name)
		return err
	}
	return nil
}

// shape is what scheduling sees of a destination.
func shape(d *v1alpha1.Destination) string {
	return fmt.Sprintf("%s|%s|%t|%s|%s", labels.Set(d.Labels).String(), d.Spec.Path, d.Spec.StrictMatchLabels, d.Spec.StateStoreRef.Name, d.Spec.Filepath.Mode)
}

// changed re-places output when a destination's shape differs from the
// last one seen ("" for gone).
func (r *DestinationReconciler) changed(ctx context.Context, name, now string, created time.Time) {
	r.mu.Lock()
	if r.seen == nil {
		r.seen = map[string]string{}
	}
	old, known := r.seen[name]
	r.seen[name] = now
	r.mu.Unlock()
	if known && old == now {
		return
	}
	if !known && now != "" && created.Before(r.Started) {
		return
	}
	r.Runs.DestinationsChanged()
	if err := r.Kinds.TriggerAll(ctx, ""); err != nil {
		log.FromContext(ctx).Error(err, "re-placing requests after a destination change")
	}
	if r.OnChange != nil {
		r.OnChange(ctx)
	}
}

func (r *DestinationReconciler) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}
