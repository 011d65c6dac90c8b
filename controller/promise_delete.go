package controller

import (
	"context"
	"fmt"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"promised.dev/promised/api/v1alpha1"
	"promised.dev/promised/pipelines"
)

// retryPromiseDelete is how often a deleting promise checks whether its
// requests are gone.
const retryPromiseDelete = 2 * time.Second

// delete lets a promise go only when no request of its kind is left: its
// request controller keeps running meanwhile so those requests are cleaned
// up. Then the promise delete workflow runs, its output leaves the store,
// the watch stops and the CRD is removed.
func (run *promiseRun) delete(ctx context.Context) (reconcile.Result, error) {
	if !controllerutil.ContainsFinalizer(run.p, v1alpha1.PromiseFinalizer) {
		return reconcile.Result{}, nil
	}
	gvk := schema.FromAPIVersionAndKind(run.p.Status.APIVersion, run.p.Status.Kind)
	if gvk.Kind != "" {
		n, err := run.countRequests(ctx, gvk)
		if err != nil {
			return reconcile.Result{}, err
		}
		if n > 0 {
			return run.finish(ctx, &stepError{condition: CondReady, reason: ReasonWaiting,
				err: fmt.Errorf("deleting: waiting for %d %s request(s) to be deleted before removing the API", n, gvk.Kind), retryAfter: retryPromiseDelete})
		}
	}
	if err := run.deleteWorkflow(ctx); err != nil {
		return run.finish(ctx, stalled(CondReady, ReasonDeleting, fmt.Errorf("promise delete workflow: %w", err)))
	}
	if err := run.r.Places.DeleteDependencies(ctx, run.p.Name, run.p.Status.Destinations); err != nil {
		return run.finish(ctx, waiting(CondReady, ReasonStoreError, fmt.Errorf("removing dependencies: %w", err)))
	}
	if err := run.r.Kinds.Stop(ctx, run.p.Name); err != nil {
		return reconcile.Result{}, err
	}
	if err := run.deleteCRD(ctx); err != nil {
		return reconcile.Result{}, err
	}
	run.r.mu.Lock()
	delete(run.r.done, run.p.Name)
	run.r.mu.Unlock()
	before := run.p.DeepCopy()
	controllerutil.RemoveFinalizer(run.p, v1alpha1.PromiseFinalizer)
	if err := run.r.Client.Patch(ctx, run.p, client.MergeFrom(before)); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(fmt.Errorf("removing finalizer: %w", err))
	}
	return reconcile.Result{}, nil
}

func (run *promiseRun) countRequests(ctx context.Context, gvk schema.GroupVersionKind) (int, error) {
	list := &unstructured.UnstructuredList{}
	list.SetGroupVersionKind(gvk.GroupVersion().WithKind(gvk.Kind + "List"))
	reader := run.r.Reader
	if reader == nil {
		reader = run.r.Client
	}
	err := reader.List(ctx, list)
	if meta.IsNoMatchError(err) || apierrors.IsNotFound(err) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("listing %s requests: %w", gvk.Kind, err)
	}
	return len(list.Items), nil
}

func (run *promiseRun) deleteWorkflow(ctx context.Context) error {
	pipes := run.p.Spec.Workflows.Promise.Delete
	if len(pipes) == 0 {
		return nil
	}
	obj, err := pipelines.PromiseObject(run.p)
	if err != nil {
		return err
	}
	start := time.Now()
	_, err = run.r.Engine.Run(ctx, pipelines.Workflow{PromiseName: run.p.Name, Type: "promise", Action: "delete", Pipelines: pipes, Object: obj})
	observePipeline(run.p.Name, "promise-delete", start, err)
	return err
}

// deleteCRD removes the promise's CRD if the controller made it.
func (run *promiseRun) deleteCRD(ctx context.Context) error {
	crd, err := parseAPI(run.p)
	if err != nil {
		return nil // nothing was installed from an invalid API
	}
	existing := &apiextensionsv1.CustomResourceDefinition{}
	if err := run.r.Client.Get(ctx, client.ObjectKey{Name: crd.Name}, existing); err != nil {
		return client.IgnoreNotFound(err)
	}
	if existing.Labels[LabelPromise] != run.p.Name {
		return nil
	}
	if err := run.r.Client.Delete(ctx, existing); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("deleting CRD %s: %w", crd.Name, err)
	}
	return nil
}
