package statestore

import (
	"context"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-git/go-git/v5/plumbing/protocol/packp"
	"github.com/go-git/go-git/v5/plumbing/transport"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"promised.dev/promised/statestore/gittest"
)

// A commit pushed by someone else after our writer read the branch and
// before its push arrives must survive: the push is refused, and the writer
// fetches, rebases its batch onto the foreign commit and pushes again.
func TestGitForeignCommitBetweenFetchAndPush(t *testing.T) {
	srv := gittest.New(t)
	srv.InitBare(testRepo)
	w := newTestWriter(t, gitConfig(t, srv))
	ctx := context.Background()
	first := resDir(t, "default", "nats", "first")
	_, err := w.Write(ctx, Change{Dir: first, Files: requestFiles("first")})
	require.NoError(t, err)

	var foreign string
	var once sync.Once
	srv.BeforeReceivePack(func() {
		once.Do(func() { foreign = srv.PushFile(testRepo, "main", "README.md", "hello from elsewhere\n") })
	})
	second := resDir(t, "default", "nats", "second")
	res, err := w.Write(ctx, Change{Dir: second, Files: requestFiles("second")})
	require.NoError(t, err)
	require.NotEmpty(t, foreign, "the foreign commit was pushed mid-push")

	files := srv.Files(testRepo, "main")
	assert.Equal(t, "hello from elsewhere\n", files["README.md"], "the foreign commit survived")
	assert.Len(t, filter(files, second+"/"), 5)
	assert.Len(t, filter(files, first+"/"), 5)
	assert.Equal(t, res.Commit, srv.Head(testRepo, "main"))
	parent := srv.Git(srv.Root()+"/"+testRepo, "rev-parse", res.Commit+"^")
	assert.Equal(t, foreign, parent, "our commit was rebased onto the foreign one")

	// The clone fetched the foreign commit: reads see it without a round trip.
	got, err := w.Read(ctx, second)
	require.NoError(t, err)
	assert.Len(t, got, 5)
	srv.Fsck(testRepo)
}

// The remote moved while the writer was idle: the next write notices at the
// ref advertisement, fetches, and builds on the foreign commit.
func TestGitForeignCommitBeforeWrite(t *testing.T) {
	srv := gittest.New(t)
	srv.InitBare(testRepo)
	w := newTestWriter(t, gitConfig(t, srv))
	ctx := context.Background()
	a := resDir(t, "default", "nats", "a")
	_, err := w.Write(ctx, Change{Dir: a, Files: requestFiles("a")})
	require.NoError(t, err)

	// Someone rewrites our folder and adds a file of their own.
	srv.PushFile(testRepo, "main", a+"/extra.yaml", "extra: true\n")
	foreign := srv.PushFile(testRepo, "main", "other/file.txt", "x\n")

	// Writing the same content as before is a real change now (the foreign
	// commit added extra.yaml to the folder), and it must not undo other/.
	res, err := w.Write(ctx, Change{Dir: a, Files: requestFiles("a")})
	require.NoError(t, err)
	assert.True(t, res.Changed)
	files := srv.Files(testRepo, "main")
	assert.Equal(t, "x\n", files["other/file.txt"])
	assert.NotContains(t, files, a+"/extra.yaml")
	assert.Equal(t, foreign, srv.Git(srv.Root()+"/"+testRepo, "rev-parse", res.Commit+"^"))
}

// With the remote down, writes wait and retry; when it comes back, every one
// of them lands. Nothing is acknowledged before it is pushed.
func TestGitRemoteDownThenUp(t *testing.T) {
	srv := gittest.New(t)
	srv.InitBare(testRepo)
	cfg := gitConfig(t, srv)
	cfg.Retry = RetryPolicy{Attempts: 50, InitialBackoff: 20 * time.Millisecond, MaxBackoff: 100 * time.Millisecond}
	w := newTestWriter(t, cfg)
	ctx := context.Background()
	_, err := w.Write(ctx, Change{Dir: resDir(t, "default", "nats", "before"), Files: requestFiles("before")})
	require.NoError(t, err)

	srv.StopHTTP()
	const n = 40
	var acked atomic.Int32
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			name := fmt.Sprintf("during-%d", i)
			_, errs[i] = w.Write(ctx, Change{Dir: resDir(t, "default", "nats", name), Files: requestFiles(name)})
			acked.Add(1)
		}()
	}
	time.Sleep(400 * time.Millisecond)
	assert.Zero(t, acked.Load(), "no write is acknowledged while the remote is down")
	assert.Equal(t, 1, srv.CommitCount(testRepo, "main"))
	srv.StartHTTP()
	wg.Wait()

	files := srv.Files(testRepo, "main")
	for i := range n {
		require.NoError(t, errs[i])
		name := fmt.Sprintf("during-%d", i)
		assert.Len(t, filter(files, resDir(t, "default", "nats", name)+"/"), 5, name)
	}
	srv.Fsck(testRepo)
}

func TestGitRetriesExhausted(t *testing.T) {
	srv := gittest.New(t)
	srv.InitBare(testRepo)
	cfg := gitConfig(t, srv)
	cfg.Retry = RetryPolicy{Attempts: 3, InitialBackoff: 10 * time.Millisecond, MaxBackoff: 20 * time.Millisecond}
	w := newTestWriter(t, cfg)
	srv.StopHTTP()

	var wg sync.WaitGroup
	errs := make([]error, 5)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			name := fmt.Sprintf("r%d", i)
			_, errs[i] = w.Write(context.Background(), Change{Dir: resDir(t, "default", "nats", name), Files: requestFiles(name)})
		}()
	}
	wg.Wait()
	for _, err := range errs {
		require.Error(t, err)
		assert.Contains(t, err.Error(), "giving up after 3 attempts")
		assert.Contains(t, err.Error(), "connection refused")
	}
	srv.StartHTTP()
	assert.Zero(t, srv.CommitCount(testRepo, "main"))

	// The writer is still usable once the remote is back.
	_, err := w.Write(context.Background(), Change{Dir: resDir(t, "default", "nats", "later"), Files: requestFiles("later")})
	require.NoError(t, err)
	assert.Equal(t, 1, srv.CommitCount(testRepo, "main"))
}

// A caller that gives up before its write was pushed gets an error, and its
// change is dropped rather than landing later unannounced.
func TestGitAbandonedWriteIsDropped(t *testing.T) {
	srv := gittest.New(t)
	srv.InitBare(testRepo)
	cfg := gitConfig(t, srv)
	cfg.Retry = RetryPolicy{Attempts: 100, InitialBackoff: 20 * time.Millisecond, MaxBackoff: 50 * time.Millisecond}
	w := newTestWriter(t, cfg)
	srv.StopHTTP()

	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
	defer cancel()
	gone := resDir(t, "default", "nats", "gone")
	_, err := w.Write(ctx, Change{Dir: gone, Files: requestFiles("gone")})
	require.ErrorIs(t, err, context.DeadlineExceeded)

	time.Sleep(100 * time.Millisecond) // let the writer notice
	srv.StartHTTP()
	kept := resDir(t, "default", "nats", "kept")
	_, err = w.Write(context.Background(), Change{Dir: kept, Files: requestFiles("kept")})
	require.NoError(t, err)
	files := srv.Files(testRepo, "main")
	assert.Empty(t, filter(files, gone+"/"))
	assert.Len(t, filter(files, kept+"/"), 5)
}

// A change that cannot be applied (a file sits where a folder must go) fails
// its caller alone; the rest of the batch lands.
func TestGitConflictingPathFailsOnlyItsCaller(t *testing.T) {
	srv := gittest.New(t)
	srv.InitBare(testRepo)
	srv.PushFile(testRepo, "main", "dest-1/resources/blocked", "a file, not a folder\n")
	w := newTestWriter(t, gitConfig(t, srv))

	var wg sync.WaitGroup
	var badErr, goodErr error
	wg.Add(2)
	go func() {
		defer wg.Done()
		_, badErr = w.Write(context.Background(), Change{Dir: resDir(t, "blocked", "nats", "x"), Files: requestFiles("x")})
	}()
	go func() {
		defer wg.Done()
		_, goodErr = w.Write(context.Background(), Change{Dir: resDir(t, "fine", "nats", "y"), Files: requestFiles("y")})
	}()
	wg.Wait()
	require.Error(t, badErr)
	assert.Contains(t, badErr.Error(), `"dest-1/resources/blocked" is a file, not a directory`)
	require.NoError(t, goodErr)
	assert.Len(t, filter(srv.Files(testRepo, "main"), resDir(t, "fine", "nats", "y")+"/"), 5)
}

// noReportTransport makes the first push report nothing, as go-git does
// over HTTP when the response is empty; land says whether that push
// reaches the server first.
type noReportTransport struct {
	transport.Transport
	land  bool
	calls *atomic.Int32
}

func (t noReportTransport) NewReceivePackSession(ep *transport.Endpoint, auth transport.AuthMethod) (transport.ReceivePackSession, error) {
	s, err := t.Transport.NewReceivePackSession(ep, auth)
	if err != nil {
		return nil, err
	}
	return noReportSession{ReceivePackSession: s, t: t}, nil
}

type noReportSession struct {
	transport.ReceivePackSession
	t noReportTransport
}

func (s noReportSession) ReceivePack(ctx context.Context, req *packp.ReferenceUpdateRequest) (*packp.ReportStatus, error) {
	if s.t.calls.Add(1) > 1 {
		return s.ReceivePackSession.ReceivePack(ctx, req)
	}
	if s.t.land {
		if _, err := s.ReceivePackSession.ReceivePack(ctx, req); err != nil {
			return nil, err
		}
	} else {
		_, _ = io.Copy(io.Discard, req.Packfile)
	}
	return nil, nil
}

// A push that the transport reports as done without a status from the
// server is not taken as landed: the writer checks the remote, and pushes
// again only if it had not landed.
func TestGitPushWithoutReport(t *testing.T) {
	for _, land := range []bool{false, true} {
		t.Run(fmt.Sprintf("landed=%v", land), func(t *testing.T) {
			srv := gittest.New(t)
			srv.InitBare(testRepo)
			w := newTestWriter(t, gitConfig(t, srv))
			var calls atomic.Int32
			w.tp = noReportTransport{Transport: w.tp, land: land, calls: &calls} // before any write
			a := resDir(t, "default", "nats", "a")
			res, err := w.Write(context.Background(), Change{Dir: a, Files: requestFiles("a")})
			require.NoError(t, err)
			assert.True(t, res.Changed)
			assert.Equal(t, srv.Head(testRepo, "main"), res.Commit)
			assert.Equal(t, 1, srv.CommitCount(testRepo, "main"))
			want := int32(2) // the unreported push, then the real one
			if land {
				want = 1 // the next advertisement showed it had landed
			}
			assert.Equal(t, want, calls.Load())
			assert.Len(t, filter(srv.Files(testRepo, "main"), a+"/"), 5)
		})
	}
}
