package statestore

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestDirWriter(t *testing.T) {
	root := t.TempDir()
	w, err := NewDir(root)
	require.NoError(t, err)
	ctx := context.Background()
	a := resDir(t, "default", "nats", "a")
	b := resDir(t, "default", "nats", "b")

	res, err := w.Write(ctx, Change{Dir: a, Files: requestFiles("a")}, Change{Dir: b, Files: requestFiles("b")})
	require.NoError(t, err)
	assert.True(t, res.Changed)
	got, err := w.Read(ctx, a)
	require.NoError(t, err)
	assert.Equal(t, requestFiles("a"), got)
	data, err := os.ReadFile(filepath.Join(root, a, "config", "app.yaml"))
	require.NoError(t, err)
	assert.Equal(t, requestFiles("a")["config/app.yaml"], data)

	// Unchanged: no change reported, same identifier.
	again, err := w.Write(ctx, Change{Dir: a, Files: requestFiles("a")}, Change{Dir: b, Files: requestFiles("b")})
	require.NoError(t, err)
	assert.False(t, again.Changed)
	assert.Equal(t, res.Commit, again.Commit)

	// Replace: stale files go.
	_, err = w.Write(ctx, Change{Dir: a, Files: map[string][]byte{"only.yaml": []byte("x: 1\n")}})
	require.NoError(t, err)
	got, err = w.Read(ctx, a)
	require.NoError(t, err)
	assert.Equal(t, map[string][]byte{"only.yaml": []byte("x: 1\n")}, got)

	// Delete exactly one folder; empty parents go, as in Git.
	_, err = w.Write(ctx, Change{Dir: a, Delete: true})
	require.NoError(t, err)
	_, err = os.Stat(filepath.Join(root, a))
	assert.True(t, os.IsNotExist(err))
	got, err = w.Read(ctx, b)
	require.NoError(t, err)
	assert.Len(t, got, 5)
	_, err = w.Write(ctx, Change{Dir: b, Delete: true})
	require.NoError(t, err)
	_, err = os.Stat(filepath.Join(root, "dest-1"))
	assert.True(t, os.IsNotExist(err), "empty parents removed")

	missing, err := w.Read(ctx, a)
	require.NoError(t, err)
	assert.Empty(t, missing)

	require.NoError(t, w.Probe(ctx))
	_, err = w.Write(ctx, Change{Dir: "../escape", Files: requestFiles("x")})
	require.ErrorContains(t, err, `".." segment`)
	_, err = w.Write(ctx, Change{Dir: ".promised/x", Files: requestFiles("x")})
	require.ErrorContains(t, err, "reserved")

	require.NoError(t, w.Close())
	_, err = w.Write(ctx, Change{Dir: a, Files: requestFiles("a")})
	require.ErrorIs(t, err, ErrClosed)
}

func TestDirWriterConcurrent(t *testing.T) {
	w, err := NewDir(t.TempDir())
	require.NoError(t, err)
	ctx := context.Background()
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			name := fmt.Sprintf("r-%d", i)
			// Several writes to the same folder race; each one is whole.
			_, err := w.Write(ctx, Change{Dir: resDir(t, "ns", "p", fmt.Sprintf("r-%d", i%5)), Files: requestFiles(name)})
			assert.NoError(t, err)
		}()
	}
	wg.Wait()
	for i := range 5 {
		got, err := w.Read(ctx, resDir(t, "ns", "p", fmt.Sprintf("r-%d", i)))
		require.NoError(t, err)
		require.Len(t, got, 5)
		// All five files come from the same write.
		assert.Contains(t, string(got["service.yaml"]), string(got["deployment.yaml"])[len("kind: Deployment\nmetadata:\n  name: "):])
	}
}
