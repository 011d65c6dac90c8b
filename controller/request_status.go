package controller

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sort"

	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"promised.dev/promised/pipelines"
	"promised.dev/promised/pipelines/contract"
)

// requestStatus is the part of a request's status the controller owns. A
// pipeline's status.yaml may add any other key but cannot overwrite these.
type requestStatus struct {
	ObservedGeneration int64             `json:"observedGeneration,omitempty"`
	Placement          map[string]string `json:"placement,omitempty"`
	Destinations       []string          `json:"destinations,omitempty"`
	Commit             string            `json:"commit,omitempty"`
	OutputDigest       string            `json:"outputDigest,omitempty"`
}

// reservedStatusKeys are the status keys a pipeline may not set.
var reservedStatusKeys = map[string]bool{
	"observedGeneration": true, "placement": true, "destinations": true, "commit": true, "outputDigest": true,
}

// reservedConditions are the condition types a pipeline may not set.
var reservedConditions = map[string]bool{
	CondPipelineSucceeded: true, CondScheduled: true, CondWritten: true, CondReady: true,
}

func readRequestStatus(obj *unstructured.Unstructured) requestStatus {
	var st requestStatus
	raw, ok := obj.Object["status"].(map[string]any)
	if !ok {
		return st
	}
	// Decoding through JSON tolerates whatever else a pipeline put there.
	if b, err := json.Marshal(raw); err == nil {
		_ = json.Unmarshal(b, &st)
	}
	return st
}

func (s requestStatus) clone() requestStatus {
	out := s
	out.Placement = map[string]string{}
	for k, v := range s.Placement {
		out.Placement[k] = v
	}
	out.Destinations = append([]string(nil), s.Destinations...)
	return out
}

// requestOutcome is what the steps of one run found.
type requestOutcome struct {
	status    requestStatus
	result    *pipelines.Result
	placement placement
	conds     []metav1.Condition
	written   bool
	// sealedFor is the fingerprint of the certificate the output's
	// secrets were sealed for ("" for none).
	sealedFor string
}

// finish records the run in the request's status (only when something
// changed), emits an event when something happened, and says when to run
// again.
func (run *requestRun) finish(ctx context.Context, before requestStatus, out *requestOutcome, err error) (reconcile.Result, error) {
	var failure *stepError
	if err != nil {
		failure = classify(err, CondReady)
	}
	status := run.composeStatus(out, failure)
	if changed, perr := run.patchStatus(ctx, status); perr != nil {
		return reconcile.Result{}, perr
	} else if changed && run.r.OnChange != nil {
		run.r.OnChange()
	}
	run.event(out, failure)
	if failure != nil {
		return reconcile.Result{RequeueAfter: failure.retryAfter}, nil
	}
	return reconcile.Result{RequeueAfter: reconcileInterval(run.promise)}, nil
}

// composeStatus merges, in order of precedence: the controller's own
// fields, the pipelines' status.yaml, and whatever the status held before.
func (run *requestRun) composeStatus(out *requestOutcome, failure *stepError) map[string]any {
	old, _ := run.obj.Object["status"].(map[string]any)
	status := map[string]any{}
	for k, v := range old {
		status[k] = v
	}
	if out.result != nil {
		for k, v := range out.result.Status {
			if reservedStatusKeys[k] {
				continue
			}
			if k == "conditions" {
				v = withoutReserved(v)
			}
			status = contract.MergeStatus(status, map[string]any{k: v})
		}
	}
	own, _ := toMap(out.status)
	for _, k := range []string{"observedGeneration", "placement", "destinations", "commit", "outputDigest"} {
		if v, ok := own[k]; ok {
			status[k] = v
		} else {
			delete(status, k)
		}
	}
	conds, _ := status["conditions"].([]any)
	cs := conditionSet(conds)
	for _, c := range out.conds {
		cs = cs.set(c, run.now)
	}
	if failure != nil {
		cs = cs.set(cond(failure.condition, false, failure.reason, failure.Error()), run.now)
		cs = cs.set(cond(CondReady, false, failure.reason, failure.Error()), run.now)
	} else {
		cs = cs.set(cond(CondReady, true, ReasonSucceeded, "output written to "+out.placement.summary()), run.now)
	}
	status["conditions"] = []any(cs)
	return status
}

func withoutReserved(v any) any {
	list, ok := v.([]any)
	if !ok {
		return v
	}
	out := make([]any, 0, len(list))
	for _, c := range list {
		if m, ok := c.(map[string]any); ok && reservedConditions[fmt.Sprint(m["type"])] {
			continue
		}
		out = append(out, c)
	}
	return out
}

// patchStatus writes status when it differs from what the request holds.
func (run *requestRun) patchStatus(ctx context.Context, status map[string]any) (bool, error) {
	normal, err := normalize(status)
	if err != nil {
		return false, err
	}
	old, _ := run.obj.Object["status"].(map[string]any)
	// Both sides go through JSON: the apiserver's copy holds int64 where
	// ours holds float64.
	if oldNormal, err := normalize(old); err == nil && equality.Semantic.DeepEqual(oldNormal, normal) {
		return false, nil
	}
	before := run.obj.DeepCopy()
	run.obj.Object["status"] = normal
	if err := run.r.Client.Status().Patch(ctx, run.obj, client.MergeFrom(before)); err != nil {
		return false, fmt.Errorf("writing status: %w", err)
	}
	countStatusWrite()
	return true, nil
}

// normalize gives a map the types it has after a JSON round trip (int64
// becomes float64 and so on), so comparing with what the apiserver
// returned compares values, not Go types.
func normalize(m map[string]any) (map[string]any, error) {
	b, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encoding status: %w", err)
	}
	out := map[string]any{}
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, fmt.Errorf("decoding status: %w", err)
	}
	return out, nil
}

func toMap(v any) (map[string]any, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	out := map[string]any{}
	return out, json.Unmarshal(b, &out)
}

func (run *requestRun) event(out *requestOutcome, failure *stepError) {
	if run.r.Recorder == nil {
		return
	}
	switch {
	case failure != nil:
		run.r.Recorder.Eventf(run.obj, nil, "Warning", failure.reason, "Configure", "%s", failure.Error())
	case out.written:
		run.r.Recorder.Eventf(run.obj, nil, "Normal", "Written", "Configure", "output written to %s in commit %s", out.placement.summary(), shortCommit(out.status.Commit))
	}
}

// digest identifies an output and its placement.
func digest(files map[string][]byte, placement map[string]string) string {
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	h := sha256.New()
	for _, n := range names {
		fmt.Fprintf(h, "%s\x00%d\x00", n, len(files[n]))
		h.Write(files[n])
	}
	groups := make([]string, 0, len(placement))
	for g := range placement {
		groups = append(groups, g)
	}
	sort.Strings(groups)
	for _, g := range groups {
		fmt.Fprintf(h, "%s\x00%s\x00", g, placement[g])
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil))
}

func shortCommit(c string) string {
	if len(c) > 12 {
		return c[:12]
	}
	return c
}
