package controller

import (
	"context"
	"fmt"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"promised.dev/promised/pipelines"
)

// delete runs the delete workflow, removes the request's output from the
// state store and only then lets the request go. Any failure keeps the
// finalizer and says why in status; the next attempt starts over, which is
// safe because every step is idempotent.
func (run *requestRun) delete(ctx context.Context) (reconcile.Result, error) {
	if !controllerutil.ContainsFinalizer(run.obj, RequestFinalizer) {
		return reconcile.Result{}, nil
	}
	st := readRequestStatus(run.obj)
	if err := run.deleteWorkflow(ctx, st); err != nil {
		return run.deleteFailed(ctx, fmt.Errorf("delete workflow: %w", err))
	}
	start := time.Now()
	err := run.r.Places.DeleteRequest(ctx, run.obj, run.promise.Name, st.Placement)
	observeWrite(start, err == nil && len(st.Placement) > 0, err)
	if err != nil {
		return run.deleteFailed(ctx, fmt.Errorf("removing output from the state store: %w", err))
	}
	before := run.obj.DeepCopy()
	controllerutil.RemoveFinalizer(run.obj, RequestFinalizer)
	if err := run.r.Client.Patch(ctx, run.obj, client.MergeFrom(before)); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(fmt.Errorf("removing finalizer: %w", err))
	}
	run.r.Runs.Forget(client.ObjectKeyFromObject(run.obj))
	if run.r.OnChange != nil {
		run.r.OnChange()
	}
	return reconcile.Result{}, nil
}

func (run *requestRun) deleteWorkflow(ctx context.Context, st requestStatus) error {
	pipes := run.promise.Spec.Workflows.Resource.Delete
	if len(pipes) == 0 {
		return nil
	}
	previous, err := run.r.Places.ReadRequest(ctx, run.obj, run.promise.Name, st.Placement)
	if err != nil {
		return fmt.Errorf("reading the previous output: %w", err)
	}
	start := time.Now()
	res, err := run.r.Engine.Run(ctx, pipelines.Workflow{
		PromiseName: run.promise.Name, Type: "resource", Action: "delete",
		Pipelines: pipes, Object: run.obj, Previous: previous,
	})
	observePipeline(run.promise.Name, "delete", start, err)
	// The request is going, so its status cannot carry what the delete
	// workflow said (a retained database, say): an event does.
	if err != nil {
		return err
	}
	if msg, ok := res.Status["message"].(string); ok && msg != "" && run.r.Recorder != nil {
		run.r.Recorder.Eventf(run.obj, nil, "Normal", "Deleted", "Delete", "%s", msg)
	}
	return nil
}

func (run *requestRun) deleteFailed(ctx context.Context, err error) (reconcile.Result, error) {
	run.log.Info("request delete blocked", "reason", err.Error())
	conds, _ := readConditions(run.obj)
	cs := conditionSet(conds).set(cond(CondReady, false, ReasonDeleting, err.Error()), run.now)
	status, _ := run.obj.Object["status"].(map[string]any)
	next := map[string]any{}
	for k, v := range status {
		next[k] = v
	}
	next["conditions"] = []any(cs)
	if _, perr := run.patchStatus(ctx, next); perr != nil {
		return reconcile.Result{}, perr
	}
	if run.r.Recorder != nil {
		run.r.Recorder.Eventf(run.obj, nil, "Warning", ReasonDeleting, "Delete", "%s", err.Error())
	}
	return reconcile.Result{RequeueAfter: retryWaiting}, nil
}
