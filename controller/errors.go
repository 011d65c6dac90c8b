package controller

import (
	"errors"
	"time"
)

// stepError is a failed step, classified once: which condition it turns
// False, why, and when to try again.
type stepError struct {
	condition  string
	reason     string
	err        error
	retryAfter time.Duration
}

func (e *stepError) Error() string { return e.err.Error() }
func (e *stepError) Unwrap() error { return e.err }

// Retry intervals by kind of failure.
const (
	// retryStalled: the workflow or its output is wrong; it will most often
	// be fixed by a change to the request or the promise (which re-runs at
	// once), but a pipeline may depend on something outside, so try again.
	retryStalled = time.Minute
	// retryWaiting: something the run needs is not there yet (a store, a
	// destination); destination changes also re-run at once.
	retryWaiting = 10 * time.Second
)

func stalled(condition, reason string, err error) error {
	return &stepError{condition: condition, reason: reason, err: err, retryAfter: retryStalled}
}

func waiting(condition, reason string, err error) error {
	return &stepError{condition: condition, reason: reason, err: err, retryAfter: retryWaiting}
}

func waitForDestinations(err error) error {
	return &stepError{condition: CondScheduled, reason: ReasonNoDestination, err: err, retryAfter: retryStalled}
}

// classify turns any error into a stepError for the condition of the step
// that failed.
func classify(err error, condition string) *stepError {
	var se *stepError
	if errors.As(err, &se) {
		return se
	}
	return &stepError{condition: condition, reason: ReasonFailed, err: err, retryAfter: retryWaiting}
}
