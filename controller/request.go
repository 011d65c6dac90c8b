package controller

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/go-logr/logr"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"promised.dev/promised/api/v1alpha1"
	"promised.dev/promised/pipelines"
)

// Annotations a developer or operator sets on a request.
const (
	// AnnotationReconcileAt re-runs the request's workflow whenever its
	// value changes (set it to a timestamp).
	AnnotationReconcileAt = "promised.dev/reconcile-at"
	// AnnotationPaused stops all runs while it is "true".
	AnnotationPaused = "promised.dev/paused"
)

// RequestFinalizer holds a request until its delete workflow has run and
// its output is gone from the state store.
const RequestFinalizer = "platform.promised.dev/request-cleanup"

// RequestReconciler runs one promise's workflows for its requests.
type RequestReconciler struct {
	Client   ctrl.Client
	Promise  string
	GVK      schema.GroupVersionKind
	Engine   *pipelines.Engine
	Places   *Placer
	Recorder events.EventRecorder
	// Runs remembers what each request last ran with, so an unchanged
	// request is not re-run before its interval.
	Runs *RunBook
	// Now is the clock; time.Now when nil.
	Now func() time.Time
	// OnChange is called after a request's status changed (the promise's
	// counts follow it).
	OnChange func()
}

// Reconcile implements reconcile.Reconciler.
func (r *RequestReconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	obj := &unstructured.Unstructured{}
	obj.SetGroupVersionKind(r.GVK)
	if err := r.Client.Get(ctx, req.NamespacedName, obj); err != nil {
		if apierrors.IsNotFound(err) {
			r.Runs.Forget(req.NamespacedName)
		}
		return reconcile.Result{}, ctrl.IgnoreNotFound(err)
	}
	promise := &v1alpha1.Promise{}
	if err := r.Client.Get(ctx, types.NamespacedName{Name: r.Promise}, promise); err != nil {
		return reconcile.Result{}, fmt.Errorf("reading promise %q: %w", r.Promise, err)
	}
	run := &requestRun{r: r, obj: obj, promise: promise, log: log.FromContext(ctx), now: r.now()}
	if !obj.GetDeletionTimestamp().IsZero() {
		return run.delete(ctx)
	}
	if err := r.ensureFinalizer(ctx, obj); err != nil {
		return reconcile.Result{}, err
	}
	if obj.GetAnnotations()[AnnotationPaused] == "true" {
		return reconcile.Result{}, nil
	}
	key := runKeyOf(obj, promise)
	if wait, skip := r.Runs.Due(req.NamespacedName, key, reconcileInterval(promise), run.now); skip {
		return reconcile.Result{RequeueAfter: wait}, nil
	}
	res, err := run.configure(ctx)
	if err == nil {
		r.Runs.Record(req.NamespacedName, key, run.now, run.failed)
	}
	return res, err
}

func (r *RequestReconciler) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

// ensureFinalizer adds the finalizer before anything is written, so that
// nothing written can outlive the request.
func (r *RequestReconciler) ensureFinalizer(ctx context.Context, obj *unstructured.Unstructured) error {
	if controllerutil.ContainsFinalizer(obj, RequestFinalizer) {
		return nil
	}
	before := obj.DeepCopy()
	controllerutil.AddFinalizer(obj, RequestFinalizer)
	if err := r.Client.Patch(ctx, obj, ctrl.MergeFrom(before)); err != nil {
		return fmt.Errorf("adding finalizer: %w", err)
	}
	return nil
}

func reconcileInterval(p *v1alpha1.Promise) time.Duration {
	if p.Spec.ReconcileInterval != nil && p.Spec.ReconcileInterval.Duration > 0 {
		return p.Spec.ReconcileInterval.Duration
	}
	return v1alpha1.DefaultReconcileInterval
}

// requestRun is one reconcile of one request: the steps share it.
type requestRun struct {
	r       *RequestReconciler
	obj     *unstructured.Unstructured
	promise *v1alpha1.Promise
	log     logr.Logger
	now     time.Time
	failed  bool
}

// configure runs the configure workflow, places and writes its output and
// records the outcome in the request's status.
func (run *requestRun) configure(ctx context.Context) (reconcile.Result, error) {
	st := readRequestStatus(run.obj)
	out := &requestOutcome{status: st.clone()}
	out.status.ObservedGeneration = run.obj.GetGeneration()
	err := run.steps(ctx, out,
		run.runWorkflow,
		run.schedule,
		run.resealIfMoved,
		run.write,
	)
	if err != nil {
		run.failed = true
		run.log.Info("request not ready", "reason", err.Error())
	}
	return run.finish(ctx, st, out, err)
}

// steps runs each step in order until one fails.
func (run *requestRun) steps(ctx context.Context, out *requestOutcome, steps ...func(context.Context, *requestOutcome) error) error {
	for _, step := range steps {
		if err := step(ctx, out); err != nil {
			return err
		}
	}
	return nil
}

func (run *requestRun) runWorkflow(ctx context.Context, out *requestOutcome) error {
	dest, err := run.r.Places.sealingTarget(ctx, run.obj, run.promise, out.status.Placement)
	if err != nil {
		return waiting(CondPipelineSucceeded, ReasonStoreError, err)
	}
	return run.runFor(ctx, out, dest)
}

// runFor runs the configure workflow with the platform inputs (the
// sealing certificate) of dest.
func (run *requestRun) runFor(ctx context.Context, out *requestOutcome, dest *v1alpha1.Destination) error {
	// Status names where the output went; when it does not (the
	// controller died between the push and the status write), the
	// destination the output is going to is where a previous run would
	// have put it. Without this, the seal stage would not find the sealed
	// bytes it must re-emit, and the re-run would commit new ones.
	readFrom := out.status.Placement
	if len(readFrom) == 0 && dest != nil {
		readFrom = map[string]string{"": dest.Name}
	}
	previous, err := run.r.Places.ReadRequest(ctx, run.obj, run.promise.Name, readFrom)
	if err != nil {
		// The store, not the pipeline, is what failed: it is reported
		// where every other store failure is.
		return waiting(CondWritten, ReasonStoreError, fmt.Errorf("reading the previous output: %w", err))
	}
	inputs, sealedFor, err := run.r.Places.Inputs(ctx, run.obj, run.promise.Name, dest)
	if err != nil {
		return waiting(CondPipelineSucceeded, ReasonNotReady, err)
	}
	start := time.Now()
	res, err := run.r.Engine.Run(ctx, pipelines.Workflow{
		PromiseName: run.promise.Name,
		Type:        "resource",
		Action:      "configure",
		Pipelines:   run.promise.Spec.Workflows.Resource.Configure,
		Object:      run.obj,
		Previous:    previous,
		Inputs:      inputs,
	})
	observePipeline(run.promise.Name, "configure", start, err)
	if err != nil {
		var pe *pipelines.Error
		if errors.As(err, &pe) && pe.Control.RetryAfter > 0 {
			return &stepError{condition: CondPipelineSucceeded, reason: ReasonPending, err: err, retryAfter: pe.Control.RetryAfter}
		}
		return stalled(CondPipelineSucceeded, failureReason(err), err)
	}
	out.result, out.sealedFor = res, sealedFor
	out.conds = append(out.conds, cond(CondPipelineSucceeded, true, ReasonSucceeded, fmt.Sprintf("%d pipeline(s) ran", len(res.Pipelines))))
	return nil
}

// resealIfMoved runs the workflow again when the output was placed on a
// destination whose sealing certificate is not the one it was sealed for:
// secrets sealed for one cluster cannot be opened by another. One request's
// output is sealed for one certificate; placing parts of it on destinations
// with different certificates is not supported.
func (run *requestRun) resealIfMoved(ctx context.Context, out *requestOutcome) error {
	for _, name := range out.placement.destinations() {
		fp, err := run.r.Places.CertificateFingerprint(ctx, name)
		if err != nil {
			return waiting(CondPipelineSucceeded, ReasonNotReady, err)
		}
		if fp == "" || fp == out.sealedFor {
			continue
		}
		byName, _, err := run.r.Places.destinations(ctx)
		if err != nil {
			return waiting(CondScheduled, ReasonStoreError, err)
		}
		out.conds = out.conds[:0]
		if err := run.runFor(ctx, out, byName[name]); err != nil {
			return err
		}
		return run.schedule(ctx, out)
	}
	return nil
}

func failureReason(err error) string {
	var pe *pipelines.Error
	if errors.As(err, &pe) && pe.Container == "" && pe.Pipeline != "" {
		return ReasonInvalid
	}
	return ReasonFailed
}

func (run *requestRun) schedule(ctx context.Context, out *requestOutcome) error {
	placement, err := run.r.Places.Schedule(ctx, run.obj, run.promise, out.result, out.status.Placement)
	if err != nil {
		return waitForDestinations(err)
	}
	out.placement = placement
	out.conds = append(out.conds, cond(CondScheduled, true, ReasonSucceeded, "placed on "+placement.summary()))
	return nil
}

func (run *requestRun) write(ctx context.Context, out *requestOutcome) error {
	start := time.Now()
	commit, changed, err := run.r.Places.WriteRequest(ctx, run.obj, run.promise, out.result, out.status.Placement, out.placement)
	observeWrite(start, changed, err)
	if err != nil {
		return waiting(CondWritten, ReasonStoreError, err)
	}
	out.status.Placement = out.placement.groups()
	out.status.Destinations = out.placement.destinations()
	out.status.OutputDigest = digest(out.result.Files(), out.status.Placement)
	// The commit names the change that last altered this request's output;
	// an unchanged write keeps it, or the status would follow every other
	// request's commits.
	if changed || out.status.Commit == "" {
		out.status.Commit = commit
	}
	out.written = changed
	out.conds = append(out.conds, cond(CondWritten, true, ReasonSucceeded, "commit "+shortCommit(out.status.Commit)))
	return nil
}
