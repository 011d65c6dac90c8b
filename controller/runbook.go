package controller

import (
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"

	"promised.dev/promised/api/v1alpha1"
	"promised.dev/promised/pipelines/ledger"
)

// runKey is everything that, when it changes, makes a request's workflow
// run again before its interval is up.
type runKey struct {
	generation        int64
	promiseGeneration int64
	reconcileAt       string
	rotate            string
	destinations      uint64
}

func runKeyOf(obj *unstructured.Unstructured, p *v1alpha1.Promise) runKey {
	return runKey{
		generation:        obj.GetGeneration(),
		promiseGeneration: p.GetGeneration(),
		reconcileAt:       obj.GetAnnotations()[AnnotationReconcileAt],
		// A rotation request must run the workflow, or stages never see it.
		rotate: obj.GetAnnotations()[ledger.RotateAnnotation],
	}
}

// RunBook remembers, in memory, what each request last ran with and when.
// It is deliberately not in the request's status: writing a run time there
// would make every periodic run a status write. After a restart every
// request runs once more, which writes nothing when nothing changed.
type RunBook struct {
	mu   sync.Mutex
	runs map[types.NamespacedName]runEntry
	// destinations counts destination changes; it is part of every key so
	// that a changed destination re-places every request.
	destinations uint64
}

type runEntry struct {
	key    runKey
	at     time.Time
	failed bool
}

// NewRunBook returns an empty RunBook.
func NewRunBook() *RunBook { return &RunBook{runs: map[types.NamespacedName]runEntry{}} }

// Due reports whether a request must run now; when it need not, it says
// how long until its interval is up.
func (b *RunBook) Due(name types.NamespacedName, key runKey, interval time.Duration, now time.Time) (wait time.Duration, skip bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	key.destinations = b.destinations
	e, ok := b.runs[name]
	if !ok || e.failed || e.key != key {
		return 0, false
	}
	if elapsed := now.Sub(e.at); elapsed < interval {
		return interval - elapsed, true
	}
	return 0, false
}

// Record notes a finished run.
func (b *RunBook) Record(name types.NamespacedName, key runKey, at time.Time, failed bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	key.destinations = b.destinations
	b.runs[name] = runEntry{key: key, at: at, failed: failed}
}

// Forget drops a deleted request.
func (b *RunBook) Forget(name types.NamespacedName) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.runs, name)
}

// DestinationsChanged makes every request due.
func (b *RunBook) DestinationsChanged() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.destinations++
}

// Epoch counts destination changes so far.
func (b *RunBook) Epoch() uint64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.destinations
}
