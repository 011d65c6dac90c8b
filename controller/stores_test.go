package controller_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"promised.dev/promised/controller"
)

// countingReader counts the Secrets read through it.
type countingReader struct {
	client.Reader
	secrets atomic.Int64
}

func (r *countingReader) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	if _, ok := obj.(*corev1.Secret); ok {
		r.secrets.Add(1)
	}
	return r.Reader.Get(ctx, key, obj, opts...)
}

// Every reconcile asks for its store's writer; the store's Secret is read
// again only after SecretRecheck, or at once after a failed write.
func TestStoresReadTheirSecretOnlyWhenDue(t *testing.T) {
	e := newEnv(t)
	secrets := &countingReader{Reader: k8s}
	stores := &controller.Stores{Client: k8s, Secrets: secrets, Dir: t.TempDir(), Logger: logr.Discard(), SecretRecheck: time.Hour}
	t.Cleanup(func() { _ = stores.Close() })

	first, err := stores.Get(e.ctx(), e.store)
	require.NoError(t, err)
	for range 10 {
		again, err := stores.Get(e.ctx(), e.store)
		require.NoError(t, err)
		require.Same(t, first.Writer, again.Writer)
	}
	require.EqualValues(t, 1, secrets.secrets.Load(), "one read for eleven Gets")

	// A rotated password is picked up once a write failed (Recheck).
	sec := &corev1.Secret{}
	require.NoError(t, k8s.Get(e.ctx(), client.ObjectKey{Namespace: "default", Name: "git-" + e.id}, sec))
	sec.Data["password"] = []byte("rotated")
	require.NoError(t, k8s.Update(e.ctx(), sec))
	same, err := stores.Get(e.ctx(), e.store)
	require.NoError(t, err)
	require.Same(t, first.Writer, same.Writer, "within SecretRecheck the Secret is not read")
	stores.Recheck(e.store)
	_, err = stores.Get(e.ctx(), e.store)
	require.Error(t, err, "the rotated password is wrong for the server: a new writer is built and fails")
	require.EqualValues(t, 2, secrets.secrets.Load())

	// And without a failure, once SecretRecheck has passed.
	sec.Data["password"] = []byte(e.git.Password())
	require.NoError(t, k8s.Update(e.ctx(), sec))
	stores.SecretRecheck = time.Millisecond
	time.Sleep(5 * time.Millisecond)
	fixed, err := stores.Get(e.ctx(), e.store)
	require.NoError(t, err)
	require.NotSame(t, first.Writer, fixed.Writer, "a changed Secret makes a new writer")
	require.EqualValues(t, 3, secrets.secrets.Load())
}
