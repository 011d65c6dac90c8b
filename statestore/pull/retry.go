package pull

import (
	"context"
	"errors"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
)

// retry runs fn until it succeeds, fails for good, or Options.Retry is
// spent.
func (r *run) retry(ctx context.Context, fn func() error) error {
	backoff := r.a.opts.Retry.Backoff
	for attempt := 1; ; attempt++ {
		err := fn()
		if err == nil || !isRetryable(ctx, err) || apierrors.IsNotFound(err) || apierrors.IsConflict(err) || attempt >= r.a.opts.Retry.Attempts {
			return err
		}
		if !sleep(ctx, backoff) {
			return err
		}
		backoff = min(2*backoff, r.a.opts.Retry.MaxBackoff)
	}
}

// isRetryable says whether err may pass on its own: the apiserver busy,
// unreachable or conflicting, or something not there yet (a namespace
// applied in this same sync, a kind whose CRD was just applied). An object
// the apiserver found invalid, or access denied, will fail the same way
// again.
func isRetryable(ctx context.Context, err error) bool {
	if ctx.Err() != nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	if meta.IsNoMatchError(err) {
		return true
	}
	switch {
	case apierrors.IsConflict(err), apierrors.IsNotFound(err), apierrors.IsServerTimeout(err), apierrors.IsTimeout(err),
		apierrors.IsTooManyRequests(err), apierrors.IsInternalError(err), apierrors.IsServiceUnavailable(err),
		apierrors.IsUnexpectedServerError(err):
		return true
	}
	var status apierrors.APIStatus
	// Any other answer from the apiserver is its verdict; no answer at all
	// (connection refused, reset) may pass.
	return !errors.As(err, &status)
}

// sleep waits d, returning false when ctx ends first.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
