package statestore

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"promised.dev/promised/statestore/gittest"
)

// After each push the writer opens the next push session in advance (a
// spare). These tests make its ref advertisement stale on purpose (a
// foreign commit lands after it was read) and check that nothing is lost
// or acknowledged early because of it.

// spareWriter returns a writer that reports each spare session it opens on
// the returned channel, and that does not close an idle spare (the foreign
// pushes below take longer than the idle delay).
func spareWriter(t *testing.T, srv *gittest.Server) (*GitWriter, <-chan struct{}) {
	t.Helper()
	w := newTestWriter(t, gitConfig(t, srv))
	opened := make(chan struct{}, 100)
	w.idle = time.Hour
	w.onSpareOpen = func() { opened <- struct{}{} }
	return w, opened
}

func waitSpare(t *testing.T, opened <-chan struct{}) {
	t.Helper()
	select {
	case <-opened:
	case <-time.After(30 * time.Second):
		t.Fatal("no spare session was opened after the push")
	}
}

func parentOf(srv *gittest.Server, commit string) string {
	return srv.Git(filepath.Join(srv.Root(), testRepo), "rev-parse", commit+"^")
}

// A foreign commit lands after the spare session read the refs: the next
// batch's push on it is refused, and the writer rebases onto the foreign
// commit instead of losing it.
func TestGitStaleSpareSessionForeignCommit(t *testing.T) {
	srv := gittest.New(t)
	srv.InitBare(testRepo)
	w, opened := spareWriter(t, srv)
	ctx := context.Background()
	a := resDir(t, "default", "nats", "a")
	_, err := w.Write(ctx, Change{Dir: a, Files: requestFiles("a")})
	require.NoError(t, err)
	waitSpare(t, opened)

	foreign := srv.PushFile(testRepo, "main", "README.md", "hello from elsewhere\n")
	var pushes atomic.Int32
	srv.BeforeReceivePack(func() { pushes.Add(1) })
	b := resDir(t, "default", "nats", "b")
	res, err := w.Write(ctx, Change{Dir: b, Files: requestFiles("b")})
	require.NoError(t, err)
	assert.True(t, res.Changed)
	assert.EqualValues(t, 2, pushes.Load(), "the push on the stale session was refused, then rebased")

	assert.Equal(t, res.Commit, srv.Head(testRepo, "main"))
	assert.Equal(t, foreign, parentOf(srv, res.Commit), "our commit was rebased onto the foreign one")
	files := srv.Files(testRepo, "main")
	assert.Equal(t, "hello from elsewhere\n", files["README.md"])
	assert.Len(t, filter(files, a+"/"), 5)
	assert.Len(t, filter(files, b+"/"), 5)
	srv.Fsck(testRepo)
}

// The subtle case: a write whose content the stale advertisement's head
// holds. Judged against that head it would be "unchanged" and answered
// without a push, although the foreign commit has changed the folder since:
// the write would be lost. It must be judged against the remote as it is
// after the write was queued.
func TestGitStaleSpareSessionUnchangedWrite(t *testing.T) {
	srv := gittest.New(t)
	srv.InitBare(testRepo)
	w, opened := spareWriter(t, srv)
	ctx := context.Background()
	a := resDir(t, "default", "nats", "a")
	_, err := w.Write(ctx, Change{Dir: a, Files: requestFiles("a")})
	require.NoError(t, err)
	waitSpare(t, opened)

	// Someone adds a file to our folder.
	foreign := srv.PushFile(testRepo, "main", a+"/extra.yaml", "extra: true\n")

	res, err := w.Write(ctx, Change{Dir: a, Files: requestFiles("a")})
	require.NoError(t, err)
	assert.True(t, res.Changed, "the folder differed on the remote: the write had to be pushed")
	assert.Equal(t, foreign, parentOf(srv, res.Commit))
	files := srv.Files(testRepo, "main")
	assert.NotContains(t, files, a+"/extra.yaml", "the write replaced the whole folder")
	assert.Len(t, filter(files, a+"/"), 5)
}

// queueReq makes a write request numbered like one queued now, for driving
// attempt directly from the test goroutine (the writer goroutine stays idle:
// nothing goes through its queue).
func queueReq(t *testing.T, w *GitWriter, changes ...Change) *writeReq {
	t.Helper()
	prepared, err := prepareChanges(changes)
	require.NoError(t, err)
	r := &writeReq{ctx: context.Background(), changes: prepared, res: make(chan writeResult, 1)}
	w.qmu.Lock()
	r.seq = w.seq
	w.seq++
	w.qmu.Unlock()
	return r
}

func answerOf(t *testing.T, r *writeReq) writeResult {
	t.Helper()
	select {
	case a := <-r.res:
		return a
	default:
		t.Fatal("the write was not answered")
		return writeResult{}
	}
}

// A write that the head already holds, queued after the spare's
// advertisement, rides along with a batch that pushes: it is answered with
// the head only once the push has landed (which proves the head was still
// the remote's after the write was queued). Alone, with nothing to push,
// it needs a fresh advertisement.
func TestGitSpareSessionConfirmsUnchangedWrites(t *testing.T) {
	srv := gittest.New(t)
	srv.InitBare(testRepo)
	w, opened := spareWriter(t, srv)
	a := resDir(t, "default", "nats", "a")
	b := resDir(t, "default", "nats", "b")

	x := queueReq(t, w, Change{Dir: a, Files: requestFiles("a")})
	rest, err := w.attempt([]*writeReq{x}, map[plumbing.Hash]*plan{})
	require.NoError(t, err)
	require.Empty(t, rest)
	first := answerOf(t, x)
	require.NoError(t, first.err)
	waitSpare(t, opened)
	require.NotNil(t, w.spare)

	// With nothing to push, the stale advertisement cannot answer the
	// unchanged write: plan says so, and answers nobody.
	lone := queueReq(t, w, Change{Dir: a, Files: requestFiles("a")})
	p, rest, err := w.plan([]*writeReq{lone}, lone.seq)
	require.ErrorIs(t, err, errStaleAdvertisement)
	assert.Nil(t, p)
	assert.Equal(t, []*writeReq{lone}, rest)
	assert.Empty(t, lone.res, "not answered")
	// An advertisement taken after the write was queued can.
	p, rest, err = w.plan([]*writeReq{lone}, lone.seq+1)
	require.NoError(t, err)
	assert.Nil(t, p)
	assert.Empty(t, rest)
	assert.Equal(t, writeResult{res: Result{Commit: first.res.Commit}}, answerOf(t, lone))

	// Alongside a change, on the spare session.
	u := queueReq(t, w, Change{Dir: a, Files: requestFiles("a")})
	c := queueReq(t, w, Change{Dir: b, Files: requestFiles("b")})
	var pushes atomic.Int32
	srv.BeforeReceivePack(func() {
		pushes.Add(1)
		assert.Empty(t, u.res, "not answered before the push")
	})
	rest, err = w.attempt([]*writeReq{u, c}, map[plumbing.Hash]*plan{})
	require.NoError(t, err)
	assert.Empty(t, rest)
	assert.EqualValues(t, 1, pushes.Load())
	ru, rc := answerOf(t, u), answerOf(t, c)
	require.NoError(t, ru.err)
	require.NoError(t, rc.err)
	assert.Equal(t, Result{Commit: first.res.Commit}, ru.res, "unchanged, answered with the head it was found in")
	assert.True(t, rc.res.Changed)
	assert.Equal(t, srv.Head(testRepo, "main"), rc.res.Commit)
	assert.Equal(t, first.res.Commit, parentOf(srv, rc.res.Commit))
}

// The push of a batch on a stale spare session is refused: no caller of the
// batch is answered, they stay queued in their order, and the next attempt
// rebases them onto the foreign commit.
func TestGitStaleSpareSessionRefusedPush(t *testing.T) {
	srv := gittest.New(t)
	srv.InitBare(testRepo)
	w, opened := spareWriter(t, srv)
	a := resDir(t, "default", "nats", "a")
	b := resDir(t, "default", "nats", "b")
	x := queueReq(t, w, Change{Dir: a, Files: requestFiles("a")})
	_, err := w.attempt([]*writeReq{x}, map[plumbing.Hash]*plan{})
	require.NoError(t, err)
	require.NoError(t, answerOf(t, x).err)
	waitSpare(t, opened)

	foreign := srv.PushFile(testRepo, "main", a+"/extra.yaml", "extra: true\n")
	u := queueReq(t, w, Change{Dir: a, Files: requestFiles("a")}) // unchanged as far as the stale head knows
	c := queueReq(t, w, Change{Dir: b, Files: requestFiles("b")})
	// A third caller rewrites u's folder after it: on the retry it must
	// still win (queue order).
	v := queueReq(t, w, Change{Dir: a, Files: map[string][]byte{"v.yaml": []byte("v: 1\n")}})
	tried := map[plumbing.Hash]*plan{}
	rest, err := w.attempt([]*writeReq{u, c, v}, tried)
	require.ErrorIs(t, err, errRemoteMoved)
	assert.Equal(t, []*writeReq{u, c, v}, rest, "all still waiting, in queue order")
	for _, r := range rest {
		assert.Empty(t, r.res, "nothing acknowledged")
	}
	head, err := w.Head()
	require.NoError(t, err)
	assert.Equal(t, foreign, head, "the clone fetched the foreign commit")

	rest, err = w.attempt(rest, tried)
	require.NoError(t, err)
	assert.Empty(t, rest)
	remote := srv.Head(testRepo, "main")
	for _, r := range []*writeReq{u, c, v} {
		got := answerOf(t, r)
		require.NoError(t, got.err)
		assert.Equal(t, Result{Commit: remote, Changed: true}, got.res)
	}
	assert.Equal(t, foreign, parentOf(srv, remote))
	files := srv.Files(testRepo, "main")
	assert.Equal(t, map[string]string{a + "/v.yaml": "v: 1\n"}, filter(files, a+"/"))
	assert.Len(t, filter(files, b+"/"), 5)
}

// The clone's packs are written by the writer itself (objects compressed
// once, index built from what it wrote): git must accept them.
func TestGitClonePacksAreValid(t *testing.T) {
	srv := gittest.New(t)
	srv.InitBare(testRepo)
	cfg := gitConfig(t, srv)
	w, err := NewGit(context.Background(), cfg)
	require.NoError(t, err)
	var wg sync.WaitGroup
	for i := range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			name := fmt.Sprintf("r-%d", i)
			_, err := w.Write(context.Background(), Change{Dir: resDir(t, fmt.Sprintf("ns-%d", i%3), "nats", name), Files: requestFiles(name)})
			assert.NoError(t, err)
		}()
	}
	wg.Wait()
	require.NoError(t, w.Close()) // writes the staged objects as a pack

	packs, err := filepath.Glob(filepath.Join(cfg.Path, "objects", "pack", "*.idx"))
	require.NoError(t, err)
	require.NotEmpty(t, packs)
	for _, idx := range packs {
		srv.Git(cfg.Path, "verify-pack", idx) // checksums, and each object's CRC
	}
	srv.Git(cfg.Path, "fsck", "--strict", "--no-progress")
	entries, err := os.ReadDir(filepath.Join(cfg.Path, "objects", "pack"))
	require.NoError(t, err)
	for _, e := range entries {
		assert.False(t, strings.HasPrefix(e.Name(), "tmp_"), "temporary file %s left behind", e.Name())
	}

	w2 := newTestWriter(t, cfg)
	for i := range 40 {
		name := fmt.Sprintf("r-%d", i)
		got, err := w2.Read(context.Background(), resDir(t, fmt.Sprintf("ns-%d", i%3), "nats", name))
		require.NoError(t, err)
		assert.Equal(t, requestFiles(name), got)
	}
}
