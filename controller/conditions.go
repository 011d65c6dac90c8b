package controller

import (
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Condition types of a request. Each is True when its step succeeded on
// the last run; Ready is True only when all the others are.
const (
	// CondPipelineSucceeded is True when the configure workflow ran and its
	// output passed validation.
	CondPipelineSucceeded = "PipelineSucceeded"
	// CondScheduled is True when every part of the output found a
	// destination.
	CondScheduled = "Scheduled"
	// CondWritten is True when the output is in the state store (pushed).
	CondWritten = "Written"
	// CondReady is True when the request's output is placed and written.
	CondReady = "Ready"
)

// Condition types of a Promise. Each is True when its part is done.
const (
	// CondAPIInstalled is True when the promise's CRD is Established.
	CondAPIInstalled = "APIInstalled"
	// CondDependenciesWritten is True when dependencies and promise
	// workflow output are written to every matching destination.
	CondDependenciesWritten = "DependenciesWritten"
	// CondRequirementsMet is True when every required promise is Ready.
	CondRequirementsMet = "RequirementsMet"
)

// Reasons shared by conditions.
const (
	ReasonSucceeded     = "Succeeded"
	ReasonPending       = "Pending"
	ReasonFailed        = "Failed"
	ReasonInvalid       = "InvalidOutput"
	ReasonNoDestination = "NoMatchingDestination"
	ReasonStoreError    = "StateStoreError"
	ReasonNotReady      = "NotReady"
	ReasonDeleting      = "Deleting"
	ReasonWaiting       = "WaitingForRequests"
	ReasonConflict      = "KindConflict"
	ReasonInvalidAPI    = "InvalidAPI"
	ReasonRequirements  = "RequiredPromiseNotReady"
)

// conditionSet is a list of conditions in the shape they take in an
// unstructured status: conditions of types the controller does not own
// (written by pipelines) are kept as they are.
type conditionSet []any

// set replaces the condition of c.Type, keeping its transition time when
// the status did not change, so that an unchanged run writes nothing.
func (cs conditionSet) set(c metav1.Condition, now time.Time) conditionSet {
	c.LastTransitionTime = metav1.NewTime(now.UTC().Truncate(time.Second))
	for i, raw := range cs {
		old, ok := raw.(map[string]any)
		if !ok || old["type"] != c.Type {
			continue
		}
		if old["status"] == string(c.Status) {
			if t, ok := old["lastTransitionTime"].(string); ok {
				if parsed, err := time.Parse(time.RFC3339, t); err == nil {
					c.LastTransitionTime = metav1.NewTime(parsed)
				}
			}
		}
		out := append(conditionSet{}, cs...)
		out[i] = conditionMap(c)
		return out
	}
	return append(append(conditionSet{}, cs...), conditionMap(c))
}

// get returns the status of a condition type, or "" when absent.
func (cs conditionSet) get(t string) string {
	for _, raw := range cs {
		if m, ok := raw.(map[string]any); ok && m["type"] == t {
			s, _ := m["status"].(string)
			return s
		}
	}
	return ""
}

func conditionMap(c metav1.Condition) map[string]any {
	m := map[string]any{
		"type":               c.Type,
		"status":             string(c.Status),
		"reason":             c.Reason,
		"message":            c.Message,
		"lastTransitionTime": c.LastTransitionTime.UTC().Format(time.RFC3339),
	}
	if c.ObservedGeneration != 0 {
		m["observedGeneration"] = c.ObservedGeneration
	}
	return m
}

func cond(t string, ok bool, reason, msg string) metav1.Condition {
	s := metav1.ConditionFalse
	if ok {
		s = metav1.ConditionTrue
	}
	return metav1.Condition{Type: t, Status: s, Reason: reason, Message: msg}
}

func readConditions(obj interface{ UnstructuredContent() map[string]any }) ([]any, bool) {
	status, ok := obj.UnstructuredContent()["status"].(map[string]any)
	if !ok {
		return nil, false
	}
	conds, ok := status["conditions"].([]any)
	return conds, ok
}
