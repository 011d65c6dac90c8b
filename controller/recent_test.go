package controller

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// countingReader serves one Secret and counts the reads that reach it.
type countingReader struct {
	client.Reader
	secret *corev1.Secret
	reads  int
}

func (c *countingReader) Get(_ context.Context, key client.ObjectKey, obj client.Object, _ ...client.GetOption) error {
	c.reads++
	s, ok := obj.(*corev1.Secret)
	if !ok || c.secret == nil || key.Name != c.secret.Name {
		return apierrors.NewNotFound(schema.GroupResource{Resource: "secrets"}, key.Name)
	}
	c.secret.DeepCopyInto(s)
	return nil
}

func TestRecentReaderRemembersSecretsForTTL(t *testing.T) {
	ctx := context.Background()
	src := &countingReader{}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	r := newRecentReader(src, 10*time.Second)
	r.Now = func() time.Time { return now }
	key := client.ObjectKey{Namespace: "ns", Name: "cert"}

	// A missing Secret is not remembered: once created, it is seen.
	require.True(t, apierrors.IsNotFound(r.Get(ctx, key, &corev1.Secret{})))
	src.secret = &corev1.Secret{Data: map[string][]byte{"tls.crt": []byte("one")}}
	src.secret.Name, src.secret.Namespace = "cert", "ns"
	got := &corev1.Secret{}
	require.NoError(t, r.Get(ctx, key, got))
	require.Equal(t, "one", string(got.Data["tls.crt"]))
	require.Equal(t, 2, src.reads)

	// Within the TTL: no read, and the caller's copy is its own.
	got.Data["tls.crt"] = []byte("changed by the caller")
	src.secret.Data["tls.crt"] = []byte("two")
	now = now.Add(9 * time.Second)
	again := &corev1.Secret{}
	require.NoError(t, r.Get(ctx, key, again))
	require.Equal(t, "one", string(again.Data["tls.crt"]))
	require.Equal(t, 2, src.reads)

	// After it: read again.
	now = now.Add(time.Second)
	require.NoError(t, r.Get(ctx, key, again))
	require.Equal(t, "two", string(again.Data["tls.crt"]))
	require.Equal(t, 3, src.reads)
}

func TestRecentReaderSweepsExpiredReads(t *testing.T) {
	ctx := context.Background()
	src := &countingReader{secret: &corev1.Secret{}}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	r := newRecentReader(src, time.Second)
	r.Now = func() time.Time { return now }
	for i := range recentReaderSweep {
		src.secret.Name = "s" + string(rune('a'+i%26)) + string(rune('a'+i/26))
		require.NoError(t, r.Get(ctx, client.ObjectKey{Name: src.secret.Name}, &corev1.Secret{}))
	}
	require.Len(t, r.read, recentReaderSweep)
	now = now.Add(2 * time.Second)
	src.secret.Name = "fresh"
	require.NoError(t, r.Get(ctx, client.ObjectKey{Name: "fresh"}, &corev1.Secret{}))
	require.Len(t, r.read, 1)
}
