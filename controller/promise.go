package controller

import (
	"context"
	"fmt"
	"sync"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"promised.dev/promised/api/v1alpha1"
	"promised.dev/promised/pipelines"
	"promised.dev/promised/pipelines/stage"
)

// LabelPromise marks what the controller made for a promise (its CRD).
const LabelPromise = "promised.dev/promise"

// PromiseReconciler installs each Promise's API, writes its dependencies
// to matching destinations, and starts its request controller.
type PromiseReconciler struct {
	Client client.Client
	// Reader reads past the cache. A deleting promise counts its requests
	// with it: through the cache, listing a kind whose CRD is gone starts
	// an informer that never syncs and blocks the promise worker.
	Reader   client.Reader
	Engine   *pipelines.Engine
	Places   *Placer
	Kinds    *Kinds
	Runs     *RunBook
	Recorder events.EventRecorder
	Now      func() time.Time

	mu   sync.Mutex
	done map[string]promiseKey
}

// promiseKey is what a promise's full run depends on besides its status:
// when neither changed, a reconcile only recounts requests (the common
// case: a request's status changed), and promise workflows do not re-run.
type promiseKey struct {
	generation   int64
	destinations uint64
}

// promiseRun is one reconcile of one promise.
type promiseRun struct {
	r      *PromiseReconciler
	p      *v1alpha1.Promise
	crd    *apiextensionsv1.CustomResourceDefinition
	gvk    schema.GroupVersionKind
	status v1alpha1.PromiseStatus
	now    time.Time
}

// Reconcile implements reconcile.Reconciler.
func (r *PromiseReconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	p := &v1alpha1.Promise{}
	if err := r.Client.Get(ctx, req.NamespacedName, p); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	run := &promiseRun{r: r, p: p, status: *p.Status.DeepCopy(), now: r.now()}
	run.status.ObservedGeneration = p.Generation
	if !p.DeletionTimestamp.IsZero() {
		return run.delete(ctx)
	}
	if !controllerutil.ContainsFinalizer(p, v1alpha1.PromiseFinalizer) {
		before := p.DeepCopy()
		controllerutil.AddFinalizer(p, v1alpha1.PromiseFinalizer)
		if err := r.Client.Patch(ctx, p, client.MergeFrom(before)); err != nil {
			return reconcile.Result{}, fmt.Errorf("adding finalizer: %w", err)
		}
	}
	key := promiseKey{generation: p.Generation, destinations: r.Runs.Epoch()}
	r.mu.Lock()
	unchanged := r.done[p.Name] == key && isTrue(p.Status.Conditions, CondReady)
	r.mu.Unlock()
	if unchanged {
		run.gvk = schema.FromAPIVersionAndKind(p.Status.APIVersion, p.Status.Kind)
		return run.finish(ctx, run.count(ctx))
	}
	err := run.steps(ctx, run.installAPI, run.requirements, run.dependencies, run.serve, run.count)
	if err == nil {
		r.mu.Lock()
		if r.done == nil {
			r.done = map[string]promiseKey{}
		}
		r.done[p.Name] = key
		r.mu.Unlock()
	}
	return run.finish(ctx, err)
}

func (r *PromiseReconciler) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

func (run *promiseRun) steps(ctx context.Context, steps ...func(context.Context) error) error {
	for _, s := range steps {
		if err := s(ctx); err != nil {
			return err
		}
	}
	return nil
}

func (run *promiseRun) set(c string, ok bool, reason, msg string) {
	c2 := cond(c, ok, reason, msg)
	c2.ObservedGeneration = run.p.Generation
	setCondition(&run.status.Conditions, c2, run.now)
}

// finish derives Ready, writes the status when it changed and says when to
// look again.
func (run *promiseRun) finish(ctx context.Context, err error) (reconcile.Result, error) {
	res := reconcile.Result{}
	if err != nil {
		f := classify(err, CondReady)
		run.set(f.condition, false, f.reason, f.Error())
		run.set(CondReady, false, f.reason, f.Error())
		res.RequeueAfter = f.retryAfter
		log.FromContext(ctx).Info("promise not ready", "reason", f.Error())
	} else {
		run.set(CondReady, true, ReasonSucceeded, fmt.Sprintf("serving %s", run.gvk.Kind))
	}
	if !equality.Semantic.DeepEqual(run.status, run.p.Status) {
		// An update, not a merge patch: a patch computed from typed objects
		// leaves out fields whose zero value did not change, and the stored
		// status may not hold them yet (request counts are required).
		run.p.Status = run.status
		if perr := run.r.Client.Status().Update(ctx, run.p); perr != nil {
			return reconcile.Result{}, fmt.Errorf("writing promise status: %w", perr)
		}
	}
	return res, nil
}

// installAPI creates or updates the promise's CRD and waits for it to be
// Established.
func (run *promiseRun) installAPI(ctx context.Context) error {
	crd, err := parseAPI(run.p)
	if err != nil {
		return stalled(CondAPIInstalled, ReasonInvalidAPI, err)
	}
	if err := run.checkKindUnique(ctx, crd); err != nil {
		return stalled(CondAPIInstalled, ReasonConflict, err)
	}
	run.crd = crd
	run.gvk = servedGVK(crd)
	run.status.APIVersion = run.gvk.GroupVersion().String()
	run.status.Kind = run.gvk.Kind

	existing := &apiextensionsv1.CustomResourceDefinition{}
	err = run.r.Client.Get(ctx, client.ObjectKey{Name: crd.Name}, existing)
	switch {
	case apierrors.IsNotFound(err):
		if err := run.r.Client.Create(ctx, crd); err != nil {
			return stalled(CondAPIInstalled, ReasonInvalidAPI, fmt.Errorf("creating CRD %s: %w", crd.Name, err))
		}
		existing = crd
	case err != nil:
		return fmt.Errorf("reading CRD %s: %w", crd.Name, err)
	case existing.Labels[LabelPromise] != run.p.Name:
		return stalled(CondAPIInstalled, ReasonConflict, fmt.Errorf("CRD %s exists and is not managed by promise %q", crd.Name, run.p.Name))
	case existing.Annotations[annotationAPIDigest] != crd.Annotations[annotationAPIDigest]:
		// Compared by digest: the apiserver defaults fields of the stored
		// spec, so comparing specs would update on every reconcile.
		existing.Spec = crd.Spec
		existing.Annotations = crd.Annotations
		if err := run.r.Client.Update(ctx, existing); err != nil {
			return stalled(CondAPIInstalled, ReasonInvalidAPI, fmt.Errorf("updating CRD %s: %w", crd.Name, err))
		}
	}
	if !established(existing) {
		return &stepError{condition: CondAPIInstalled, reason: ReasonPending, err: fmt.Errorf("waiting for CRD %s to be Established", crd.Name), retryAfter: 200 * time.Millisecond}
	}
	run.set(CondAPIInstalled, true, ReasonSucceeded, "CRD "+crd.Name+" is Established")
	return nil
}

// checkKindUnique refuses a kind another promise already serves.
func (run *promiseRun) checkKindUnique(ctx context.Context, crd *apiextensionsv1.CustomResourceDefinition) error {
	list := &v1alpha1.PromiseList{}
	if err := run.r.Client.List(ctx, list); err != nil {
		return fmt.Errorf("listing promises: %w", err)
	}
	for _, other := range list.Items {
		if other.Name == run.p.Name || other.Spec.API == nil {
			continue
		}
		oc, err := parseAPI(&other)
		if err != nil || oc.Name != crd.Name {
			continue
		}
		// The older promise keeps the kind; ties go to the name.
		if other.CreationTimestamp.Before(&run.p.CreationTimestamp) ||
			(other.CreationTimestamp.Equal(&run.p.CreationTimestamp) && other.Name < run.p.Name) {
			return fmt.Errorf("kind %s (%s) is already served by promise %q", crd.Spec.Names.Kind, crd.Spec.Group, other.Name)
		}
	}
	return nil
}

// requirements checks that every required promise is Ready.
func (run *promiseRun) requirements(ctx context.Context) error {
	for _, req := range run.p.Spec.RequiredPromises {
		other := &v1alpha1.Promise{}
		err := run.r.Client.Get(ctx, client.ObjectKey{Name: req.Name}, other)
		if err == nil && !isTrue(other.Status.Conditions, CondReady) {
			err = fmt.Errorf("promise %q is not Ready", req.Name)
		}
		if err == nil && req.Version != "" && other.Labels["promised.dev/promise-version"] != req.Version {
			err = fmt.Errorf("promise %q is at version %q, want %q", req.Name, other.Labels["promised.dev/promise-version"], req.Version)
		}
		if err != nil {
			return waiting(CondRequirementsMet, ReasonRequirements, fmt.Errorf("required promise %q: %w", req.Name, client.IgnoreNotFound(err)))
		}
	}
	if len(run.p.Spec.RequiredPromises) > 0 {
		run.set(CondRequirementsMet, true, ReasonSucceeded, "every required promise is Ready")
	}
	return nil
}

// dependencies writes the dependencies and the promise configure
// workflow's output to every matching destination and removes them from
// destinations that no longer match.
func (run *promiseRun) dependencies(ctx context.Context) error {
	files, res, err := run.promiseOutput(ctx)
	if err != nil {
		return err
	}
	dests, err := run.r.Places.WriteDependencies(ctx, run.p, files, res, run.status.Destinations)
	if err != nil {
		return waiting(CondDependenciesWritten, ReasonStoreError, err)
	}
	run.status.Destinations = dests
	run.set(CondDependenciesWritten, true, ReasonSucceeded, fmt.Sprintf("written to %d destination(s)", len(dests)))
	return nil
}

// promiseOutput renders the dependencies and runs the promise's configure
// workflow.
func (run *promiseRun) promiseOutput(ctx context.Context) (map[string][]byte, *pipelines.Result, error) {
	files := map[string][]byte{}
	if len(run.p.Spec.Dependencies) > 0 {
		var docs []any
		for i, d := range run.p.Spec.Dependencies {
			u := &unstructured.Unstructured{}
			if err := u.UnmarshalJSON(d.Raw); err != nil {
				return nil, nil, stalled(CondDependenciesWritten, ReasonInvalid, fmt.Errorf("spec.dependencies[%d]: %w", i, err))
			}
			docs = append(docs, u.Object)
		}
		data, err := stage.MarshalDocuments(docs...)
		if err != nil {
			return nil, nil, stalled(CondDependenciesWritten, ReasonInvalid, err)
		}
		files[dependenciesFile] = data
	}
	if len(run.p.Spec.Workflows.Promise.Configure) == 0 {
		return files, nil, nil
	}
	obj, err := pipelines.PromiseObject(run.p)
	if err != nil {
		return nil, nil, err
	}
	start := time.Now()
	res, err := run.r.Engine.Run(ctx, pipelines.Workflow{
		PromiseName: run.p.Name, Type: "promise", Action: "configure",
		Pipelines: run.p.Spec.Workflows.Promise.Configure, Object: obj,
	})
	observePipeline(run.p.Name, "promise-configure", start, err)
	if err != nil {
		return nil, nil, stalled(CondDependenciesWritten, failureReason(err), err)
	}
	return files, res, nil
}

// serve starts the request controller and, when the promise changed,
// queues every request so it runs with the new promise.
func (run *promiseRun) serve(ctx context.Context) error {
	if err := run.r.Kinds.Ensure(run.p.Name, run.gvk); err != nil {
		return err
	}
	if run.p.Status.ObservedGeneration != run.p.Generation {
		return run.r.Kinds.TriggerAll(ctx, run.p.Name)
	}
	return nil
}

// count tallies the promise's requests by their Ready condition.
func (run *promiseRun) count(ctx context.Context) error {
	list := &unstructured.UnstructuredList{}
	list.SetGroupVersionKind(run.gvk.GroupVersion().WithKind(run.gvk.Kind + "List"))
	// Counting only reads conditions, so the cache's objects are read in
	// place: a deep copy of every request, every time a request's status
	// changes (up to twice a second), was a tenth of the controller's CPU
	// while 1,000 requests were created, and grows with their number.
	// Bounded: a cache that cannot sync (the CRD just went) must not hold
	// the promise worker.
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := run.r.Client.List(ctx, list, client.UnsafeDisableDeepCopy); err != nil {
		return fmt.Errorf("counting requests: %w", err)
	}
	var c v1alpha1.RequestCounts
	for _, item := range list.Items {
		c.Total++
		conds, _ := readConditions(&item)
		switch conditionSet(conds).get(CondReady) {
		case "True":
			c.Ready++
		case "False":
			c.Failed++
		default:
			c.Pending++
		}
	}
	run.status.Requests = c
	return nil
}
