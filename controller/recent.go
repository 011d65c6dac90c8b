package controller

import (
	"context"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// recentReader answers Gets of Secrets and ConfigMaps from a copy read
// from the apiserver at most TTL ago, and passes every other read through.
//
// The controller does not cache Secrets (it would hold every Secret of the
// cluster), but every run of a request read its destination's sealing
// certificate: at 10,000 requests, 10,000 of the apiserver's 21,000 reads.
// Requests do not re-run when a certificate changes, so a rotated one
// already reaches only the runs that follow it; with this, the runs that
// follow it by TTL or more. Failed reads are not kept: a Secret created
// after a NotFound is seen at the next run. (Platform Secrets are not read
// through it: a changed one must reach the very next run.)
type recentReader struct {
	client.Reader
	TTL time.Duration
	// Now is the clock; time.Now when nil.
	Now func() time.Time

	mu   sync.Mutex
	read map[recentKey]recentRead
}

type recentKey struct {
	kind string
	key  client.ObjectKey
}

type recentRead struct {
	obj client.Object
	at  time.Time
}

// recentReaderSweep is the number of remembered reads above which expired
// ones are dropped on the next insert.
const recentReaderSweep = 256

func newRecentReader(r client.Reader, ttl time.Duration) *recentReader {
	return &recentReader{Reader: r, TTL: ttl, read: map[recentKey]recentRead{}}
}

// Get implements client.Reader.
func (r *recentReader) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	var kind string
	switch obj.(type) {
	case *corev1.Secret:
		kind = "Secret"
	case *corev1.ConfigMap:
		kind = "ConfigMap"
	default:
		return r.Reader.Get(ctx, key, obj, opts...)
	}
	k, now := recentKey{kind: kind, key: key}, r.now()
	r.mu.Lock()
	got, ok := r.read[k]
	r.mu.Unlock()
	if ok && now.Sub(got.at) < r.TTL {
		copyInto(got.obj, obj)
		return nil
	}
	if err := r.Reader.Get(ctx, key, obj, opts...); err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.read) >= recentReaderSweep {
		for k, v := range r.read {
			if now.Sub(v.at) >= r.TTL {
				delete(r.read, k)
			}
		}
	}
	r.read[k] = recentRead{obj: obj.DeepCopyObject().(client.Object), at: now}
	return nil
}

func (r *recentReader) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

// copyInto gives the caller its own copy: callers may change what they
// read.
func copyInto(from, to client.Object) {
	switch f := from.(type) {
	case *corev1.Secret:
		f.DeepCopyInto(to.(*corev1.Secret))
	case *corev1.ConfigMap:
		f.DeepCopyInto(to.(*corev1.ConfigMap))
	}
}
