package statestore

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"promised.dev/promised/statestore/gittest"
)

func writeFile(path, content string) error {
	return os.WriteFile(path, []byte(content), 0o644)
}

// The clone stays on disk: a restarted writer reopens it, fetches what
// others pushed meanwhile, and continues the history.
func TestGitReopenClone(t *testing.T) {
	srv := gittest.New(t)
	srv.InitBare(testRepo)
	cfg := gitConfig(t, srv)
	ctx := context.Background()
	a := resDir(t, "default", "nats", "a")

	w, err := NewGit(ctx, cfg)
	require.NoError(t, err)
	first, err := w.Write(ctx, Change{Dir: a, Files: requestFiles("a")})
	require.NoError(t, err)
	require.NoError(t, w.Close())
	_, err = w.Write(ctx, Change{Dir: a, Files: requestFiles("a")})
	require.ErrorIs(t, err, ErrClosed)

	foreign := srv.PushFile(testRepo, "main", "notes.txt", "while we were down\n")
	w = newTestWriter(t, cfg)
	head, err := w.Head()
	require.NoError(t, err)
	assert.Equal(t, foreign, head, "the restart fetched the foreign commit")
	got, err := w.Read(ctx, a)
	require.NoError(t, err)
	assert.Equal(t, requestFiles("a"), got)

	b := resDir(t, "default", "nats", "b")
	res, err := w.Write(ctx, Change{Dir: b, Files: requestFiles("b")})
	require.NoError(t, err)
	assert.Equal(t, foreign, srv.Git(filepath.Join(srv.Root(), testRepo), "rev-parse", res.Commit+"^"))
	assert.Equal(t, 3, srv.CommitCount(testRepo, "main"))
	assert.NotEqual(t, first.Commit, res.Commit)
}

// With the remote down, a restart still serves reads from the clone.
func TestGitReopenWithRemoteDown(t *testing.T) {
	srv := gittest.New(t)
	srv.InitBare(testRepo)
	cfg := gitConfig(t, srv)
	ctx := context.Background()
	a := resDir(t, "default", "nats", "a")
	w, err := NewGit(ctx, cfg)
	require.NoError(t, err)
	_, err = w.Write(ctx, Change{Dir: a, Files: requestFiles("a")})
	require.NoError(t, err)
	require.NoError(t, w.Close())

	srv.StopHTTP()
	w = newTestWriter(t, cfg)
	got, err := w.Read(ctx, a)
	require.NoError(t, err)
	assert.Equal(t, requestFiles("a"), got)

	// A fresh clone cannot start without the remote.
	fresh := cfg
	fresh.Path = filepath.Join(t.TempDir(), "fresh")
	_, err = NewGit(ctx, fresh)
	require.ErrorContains(t, err, "initial fetch")
}

func TestGitProbe(t *testing.T) {
	srv := gittest.New(t)
	srv.InitBare(testRepo)
	w := newTestWriter(t, gitConfig(t, srv))
	ctx := context.Background()

	require.NoError(t, w.Probe(ctx))
	assert.Equal(t, 1, srv.CommitCount(testRepo, "main"), "the first probe proves a push")
	require.NoError(t, w.Probe(ctx))
	require.NoError(t, w.Probe(ctx))
	assert.Equal(t, 1, srv.CommitCount(testRepo, "main"), "repeat probes make no commit")
	files := srv.Files(testRepo, "main")
	assert.Contains(t, files[".promised/probe/default/marker"], "probe: default")

	srv.StopHTTP()
	err := w.Probe(ctx)
	require.Error(t, err, "a probe reaches the remote even when nothing changes")
	assert.Contains(t, err.Error(), "connection refused")

	// Output cannot be written into the reserved folder.
	_, err = w.Write(ctx, Change{Dir: ".promised/probe/default", Files: requestFiles("x")})
	require.ErrorContains(t, err, "reserved")
}

func TestGitAggregatedYAML(t *testing.T) {
	srv := gittest.New(t)
	srv.InitBare(testRepo)
	w := newTestWriter(t, gitConfig(t, srv))
	dir := resDir(t, "default", "nats", "agg")
	change, err := OutputChange(dir, Filepath{Mode: FilepathAggregatedYAML, Filename: "all.yaml"}, map[string][]byte{
		"b/svc.yaml":  []byte("kind: Service\n"),
		"a.yaml":      []byte("---\nkind: Deployment\n---\nkind: ConfigMap\n"),
		"c/empty.yml": []byte("---\n"),
	})
	require.NoError(t, err)
	_, err = w.Write(context.Background(), change)
	require.NoError(t, err)
	assert.Equal(t, map[string]string{
		dir + "/all.yaml": "kind: Deployment\n---\nkind: ConfigMap\n---\nkind: Service\n",
	}, srv.Files(testRepo, "main"))
}

// Every batch adds a pack to the clone; compaction keeps their number
// bounded, and everything stays readable, also after a restart.
func TestGitPackCompaction(t *testing.T) {
	srv := gittest.New(t)
	srv.InitBare(testRepo)
	cfg := gitConfig(t, srv)
	w := newTestWriter(t, cfg)
	ctx := context.Background()
	const n = 40
	for i := range n {
		name := fmt.Sprintf("r-%d", i)
		_, err := w.Write(ctx, Change{Dir: resDir(t, "default", "nats", name), Files: requestFiles(name)})
		require.NoError(t, err)
		// What the writer does when idle: write the staged batch as a pack
		// and merge packs.
		w.mu.Lock()
		_, err = w.local.compact()
		w.mu.Unlock()
		require.NoError(t, err)
		packs := countPacks(t, cfg.Path)
		assert.LessOrEqual(t, packs, compactAbovePacks+1, "after write %d", i)
	}
	check := func(w *GitWriter) {
		for i := range n {
			name := fmt.Sprintf("r-%d", i)
			got, err := w.Read(ctx, resDir(t, "default", "nats", name))
			require.NoError(t, err)
			require.Equal(t, requestFiles(name), got)
		}
	}
	check(w)
	require.NoError(t, w.Close())
	check(newTestWriter(t, cfg))
	srv.Git(cfg.Path, "fsck", "--no-progress") // the clone is a valid repository too
}

func countPacks(t *testing.T, clone string) int {
	entries, err := os.ReadDir(filepath.Join(clone, "objects", "pack"))
	require.NoError(t, err)
	n := 0
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".pack") {
			n++
		}
	}
	return n
}

func TestGitInvalidChanges(t *testing.T) {
	srv := gittest.New(t)
	srv.InitBare(testRepo)
	w := newTestWriter(t, gitConfig(t, srv))
	files := map[string][]byte{"a.yaml": []byte("a: 1\n")}
	for name, tc := range map[string]struct {
		changes []Change
		want    string
	}{
		"none":            {nil, "no changes"},
		"empty dir":       {[]Change{{Dir: "", Files: files}}, "dir path is empty"},
		"absolute":        {[]Change{{Dir: "/etc", Files: files}}, "absolute"},
		"dotdot":          {[]Change{{Dir: "a/../b", Files: files}}, `".." segment`},
		"double slash":    {[]Change{{Dir: "a//b", Files: files}}, "empty segment"},
		"dot git":         {[]Change{{Dir: "a/.git", Files: files}}, ".git segment"},
		"file escapes":    {[]Change{{Dir: "a", Files: map[string][]byte{"../x": nil}}}, `".." segment`},
		"file and dir":    {[]Change{{Dir: "a", Files: map[string][]byte{"x": nil, "x/y": nil}}}, "is also a directory"},
		"delete + files":  {[]Change{{Dir: "a", Files: files, Delete: true}}, "choose one"},
		"nested in write": {[]Change{{Dir: "a", Files: files}, {Dir: "a/b", Files: files}}, "inside dir"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := w.Write(context.Background(), tc.changes...)
			require.ErrorContains(t, err, tc.want)
		})
	}
	assert.Zero(t, srv.CommitCount(testRepo, "main"))
}
