package statestore

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"promised.dev/promised/statestore/gittest"
)

const testRepo = "state.git"

func gitConfig(t *testing.T, srv *gittest.Server) GitConfig {
	return GitConfig{
		URL:    srv.HTTPURL(testRepo),
		Path:   filepath.Join(t.TempDir(), "clone"),
		Basic:  &BasicAuth{Username: srv.Username(), Password: srv.Password()},
		Retry:  RetryPolicy{Attempts: 6, InitialBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond},
		Logger: testr.NewWithOptions(t, testr.Options{Verbosity: 1}),
	}
}

func newTestWriter(t *testing.T, cfg GitConfig) *GitWriter {
	t.Helper()
	w, err := NewGit(context.Background(), cfg)
	require.NoError(t, err)
	t.Cleanup(func() { _ = w.Close() })
	return w
}

func requestFiles(name string) map[string][]byte {
	return map[string][]byte{
		"deployment.yaml":  []byte("kind: Deployment\nmetadata:\n  name: " + name + "\n"),
		"service.yaml":     []byte("kind: Service\nmetadata:\n  name: " + name + "\n"),
		"config/app.yaml":  []byte("kind: ConfigMap\nmetadata:\n  name: " + name + "\n"),
		"config/more.yaml": []byte("kind: ConfigMap\nmetadata:\n  name: " + name + "-more\n"),
		"secret.yaml":      []byte("kind: SealedSecret\nmetadata:\n  name: " + name + "\n"),
	}
}

func resDir(t testing.TB, ns, promise, name string) string {
	d, err := ResourceDir("", "dest-1", ns, promise, name)
	require.NoError(t, err)
	return d
}

func TestGitWriteReadAndEmptyRemote(t *testing.T) {
	srv := gittest.New(t)
	srv.InitBare(testRepo)
	w := newTestWriter(t, gitConfig(t, srv))
	ctx := context.Background()

	dir := resDir(t, "team-a", "postgres", "db-1")
	res, err := w.Write(ctx, Change{Dir: dir, Files: requestFiles("db-1")})
	require.NoError(t, err)
	assert.True(t, res.Changed)
	// The first commit created the branch on an empty remote.
	assert.Equal(t, srv.Head(testRepo, "main"), res.Commit)

	got, err := w.Read(ctx, dir)
	require.NoError(t, err)
	assert.Equal(t, requestFiles("db-1"), got)

	files := srv.Files(testRepo, "main")
	assert.Len(t, files, 5)
	assert.Equal(t, "kind: Service\nmetadata:\n  name: db-1\n", files[dir+"/service.yaml"])
	srv.Fsck(testRepo)

	missing, err := w.Read(ctx, resDir(t, "team-a", "postgres", "nope"))
	require.NoError(t, err)
	assert.Empty(t, missing)
}

func TestGitConcurrentWriters(t *testing.T) {
	srv := gittest.New(t)
	srv.InitBare(testRepo)
	w := newTestWriter(t, gitConfig(t, srv))
	ctx := context.Background()

	const writers = 300
	results := make([]Result, writers)
	errs := make([]error, writers)
	var wg sync.WaitGroup
	for i := 0; i < writers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			name := fmt.Sprintf("req-%03d", i)
			results[i], errs[i] = w.Write(ctx, Change{Dir: resDir(t, fmt.Sprintf("ns-%d", i%7), "redis", name), Files: requestFiles(name)})
		}()
	}
	wg.Wait()

	commits := map[string]bool{}
	for i := range writers {
		require.NoError(t, errs[i], "writer %d", i)
		assert.True(t, results[i].Changed, "writer %d", i)
		commits[results[i].Commit] = true
	}
	n := srv.CommitCount(testRepo, "main")
	t.Logf("%d writes landed in %d commits", writers, n)
	assert.Equal(t, len(commits), n, "every commit was reported to some caller")
	assert.Less(t, n, writers/2, "writes were grouped")

	// Every change is present exactly once, checked with the git CLI.
	files := srv.Files(testRepo, "main")
	assert.Len(t, files, writers*5)
	for i := range writers {
		name := fmt.Sprintf("req-%03d", i)
		dir := resDir(t, fmt.Sprintf("ns-%d", i%7), "redis", name)
		for p, content := range requestFiles(name) {
			assert.Equal(t, string(content), files[dir+"/"+p])
		}
		// The commit a caller got carries its change.
		if i%37 == 0 {
			at := srv.Files(testRepo, results[i].Commit)
			assert.Equal(t, string(requestFiles(name)["service.yaml"]), at[dir+"/service.yaml"])
		}
	}
	srv.Fsck(testRepo)
}

func TestGitUnchangedWriteMakesNoCommit(t *testing.T) {
	srv := gittest.New(t)
	srv.InitBare(testRepo)
	w := newTestWriter(t, gitConfig(t, srv))
	ctx := context.Background()
	dir := resDir(t, "default", "nats", "bus")

	first, err := w.Write(ctx, Change{Dir: dir, Files: requestFiles("bus")})
	require.NoError(t, err)
	require.True(t, first.Changed)

	again, err := w.Write(ctx, Change{Dir: dir, Files: requestFiles("bus")})
	require.NoError(t, err)
	assert.False(t, again.Changed)
	assert.Equal(t, first.Commit, again.Commit)
	assert.Equal(t, 1, srv.CommitCount(testRepo, "main"))

	// Deleting something that does not exist changes nothing either.
	none, err := w.Write(ctx, Change{Dir: resDir(t, "default", "nats", "ghost"), Delete: true})
	require.NoError(t, err)
	assert.False(t, none.Changed)
	assert.Equal(t, 1, srv.CommitCount(testRepo, "main"))
}

func TestGitDeleteAndReplaceFolder(t *testing.T) {
	srv := gittest.New(t)
	srv.InitBare(testRepo)
	w := newTestWriter(t, gitConfig(t, srv))
	ctx := context.Background()
	a := resDir(t, "default", "nats", "a")
	b := resDir(t, "default", "nats", "b")
	ab := resDir(t, "default", "nats", "a-b") // sorts next to "a": must survive
	dep, err := DependenciesDir("", "dest-1", "nats")
	require.NoError(t, err)

	_, err = w.Write(ctx,
		Change{Dir: a, Files: requestFiles("a")},
		Change{Dir: b, Files: requestFiles("b")},
		Change{Dir: ab, Files: requestFiles("a-b")},
		Change{Dir: dep, Files: map[string][]byte{"crd.yaml": []byte("kind: CRD\n")}},
	)
	require.NoError(t, err)
	require.Equal(t, 1, srv.CommitCount(testRepo, "main"), "one call, one commit")

	// Replace: files no longer produced disappear.
	_, err = w.Write(ctx, Change{Dir: b, Files: map[string][]byte{"only.yaml": []byte("x: 1\n")}})
	require.NoError(t, err)
	// Delete exactly one request folder.
	res, err := w.Write(ctx, Change{Dir: a, Delete: true})
	require.NoError(t, err)
	assert.True(t, res.Changed)

	files := srv.Files(testRepo, "main")
	var paths []string
	for p := range files {
		paths = append(paths, p)
	}
	for _, p := range paths {
		assert.False(t, strings.HasPrefix(p, a+"/"), "deleted folder still has %s", p)
	}
	assert.Equal(t, map[string]string{b + "/only.yaml": "x: 1\n"}, filter(files, b+"/"))
	assert.Len(t, filter(files, ab+"/"), 5)
	assert.Equal(t, "kind: CRD\n", files[dep+"/crd.yaml"])

	// Deleting the last request of a namespace removes the empty parents.
	_, err = w.Write(ctx, Change{Dir: b, Delete: true}, Change{Dir: ab, Delete: true})
	require.NoError(t, err)
	files = srv.Files(testRepo, "main")
	assert.Equal(t, []string{dep + "/crd.yaml"}, keys(files))
	tree := srv.Git(filepath.Join(srv.Root(), testRepo), "ls-tree", "-d", "--name-only", "main", "dest-1/")
	assert.Equal(t, "dest-1/dependencies", tree)
	srv.Fsck(testRepo)
}

func TestGitLastChangeToSameDirWins(t *testing.T) {
	srv := gittest.New(t)
	srv.InitBare(testRepo)
	w := newTestWriter(t, gitConfig(t, srv))
	dir := resDir(t, "default", "nats", "x")
	_, err := w.Write(context.Background(),
		Change{Dir: dir, Files: map[string][]byte{"v.yaml": []byte("v: 1\n")}},
		Change{Dir: dir, Files: map[string][]byte{"v.yaml": []byte("v: 2\n")}},
	)
	require.NoError(t, err)
	assert.Equal(t, map[string]string{dir + "/v.yaml": "v: 2\n"}, srv.Files(testRepo, "main"))
}

func filter(files map[string]string, prefix string) map[string]string {
	out := map[string]string{}
	for p, c := range files {
		if strings.HasPrefix(p, prefix) {
			out[p] = c
		}
	}
	return out
}

func keys(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

var _ = errors.New

func TestGitCommitIntervalGroupsWritesAfterACommit(t *testing.T) {
	srv := gittest.New(t)
	srv.InitBare(testRepo)
	cfg := gitConfig(t, srv)
	cfg.CommitInterval = 1500 * time.Millisecond
	w, err := NewGit(context.Background(), cfg)
	require.NoError(t, err)
	ctx := context.Background()

	start := time.Now()
	first, err := w.Write(ctx, Change{Dir: resDir(t, "ns", "redis", "first"), Files: requestFiles("first")})
	require.NoError(t, err)
	require.Less(t, time.Since(start), cfg.CommitInterval, "a write to an idle store does not wait for the interval")

	// Writes right after a commit wait for the interval, and share a commit.
	const writers = 20
	commits := make([]string, writers)
	var wg sync.WaitGroup
	for i := range writers {
		wg.Go(func() {
			name := fmt.Sprintf("later-%02d", i)
			res, err := w.Write(ctx, Change{Dir: resDir(t, "ns", "redis", name), Files: requestFiles(name)})
			assert.NoError(t, err)
			commits[i] = res.Commit
		})
	}
	wg.Wait()
	require.GreaterOrEqual(t, time.Since(start), cfg.CommitInterval)
	for _, c := range commits {
		require.Equal(t, commits[0], c, "writes queued during the interval land in one commit")
	}
	require.NotEqual(t, first.Commit, commits[0])
	require.Equal(t, 2, srv.CommitCount(testRepo, "main"))

	// Closing does not wait for the interval, and still pushes what is queued.
	done := make(chan error, 1)
	go func() {
		_, err := w.Write(ctx, Change{Dir: resDir(t, "ns", "redis", "last"), Files: requestFiles("last")})
		done <- err
	}()
	require.Eventually(t, func() bool { w.qmu.Lock(); defer w.qmu.Unlock(); return len(w.queue) == 1 }, time.Second, 5*time.Millisecond)
	closing := time.Now()
	require.NoError(t, w.Close())
	require.NoError(t, <-done)
	require.Less(t, time.Since(closing), cfg.CommitInterval)
	require.Equal(t, 3, srv.CommitCount(testRepo, "main"))
}
