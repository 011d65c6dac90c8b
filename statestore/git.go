package statestore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/protocol/packp"
	"github.com/go-git/go-git/v5/plumbing/transport"
	"github.com/go-git/go-git/v5/plumbing/transport/client"
	"github.com/go-logr/logr"
)

// GitConfig configures a GitWriter. The controller fills it from a
// GitStateStore and the Secret it references.
type GitConfig struct {
	// URL of the repository: https://, http://, ssh:// (or scp-like
	// git@host:path), or a local path / file:// URL. Credentials embedded in
	// an http(s) URL are used as BasicAuth; they never appear in errors or
	// logs.
	URL string
	// Branch to write; "main" when empty. It is created by the first write
	// if the remote does not have it.
	Branch string
	// Path of the writer's bare clone on local disk. It is kept between
	// writes and reopened on restart, so a restart does not clone again.
	// It must be empty, missing, or a clone made by this writer.
	Path string

	// Basic is HTTP basic authentication (http and https URLs).
	Basic *BasicAuth
	// SSH is SSH key authentication with host key checking (ssh URLs).
	SSH *SSHAuth
	// CABundle is extra PEM certificates to trust for https.
	CABundle []byte

	// AuthorName and AuthorEmail sign the commits; "promised" and
	// "promised@localhost" when empty.
	AuthorName  string
	AuthorEmail string

	// ProbeID names this writer's probe marker (.promised/probe/<ProbeID>);
	// "default" when empty. Give writers sharing a repository distinct IDs.
	ProbeID string

	// Retry bounds how long a batch is retried when the remote fails.
	Retry RetryPolicy
	// AttemptTimeout bounds one push or fetch; 2 minutes when zero.
	AttemptTimeout time.Duration
	// MaxBatchChanges caps the changes folded into one commit; 5000 when
	// zero. A single Write is never split, whatever its size.
	MaxBatchChanges int
	// CommitInterval is the shortest time between the starts of two
	// batches: writes arriving sooner after a commit wait for the next one
	// together. Zero (the default) commits as fast as pushes go, which
	// under sustained load means a commit every push round trip; an
	// interval trades up to that much latency for fewer commits, fewer
	// pushes and fewer pulls by every destination. A write to an idle
	// store never waits.
	CommitInterval time.Duration
	// BatchLinger is the longest a batch waits for the next of the writers
	// of the previous batch to come back (see GitWriter.next); 5ms when
	// zero.
	BatchLinger time.Duration

	// Logger receives structured logs; discarded when zero.
	Logger logr.Logger
}

// RetryPolicy is a bounded exponential backoff.
type RetryPolicy struct {
	// Attempts is how many times a batch is tried before its callers get
	// the error; 8 when zero.
	Attempts int
	// InitialBackoff is the wait after the first failure, doubled after
	// each further one up to MaxBackoff; 200ms and 10s when zero.
	InitialBackoff time.Duration
	MaxBackoff     time.Duration
}

func (c *GitConfig) setDefaults() {
	if c.Branch == "" {
		c.Branch = "main"
	}
	if c.AuthorName == "" {
		c.AuthorName = "promised"
	}
	if c.AuthorEmail == "" {
		c.AuthorEmail = "promised@localhost"
	}
	if c.ProbeID == "" {
		c.ProbeID = "default"
	}
	if c.Retry.Attempts <= 0 {
		c.Retry.Attempts = 8
	}
	if c.Retry.InitialBackoff <= 0 {
		c.Retry.InitialBackoff = 200 * time.Millisecond
	}
	if c.Retry.MaxBackoff <= 0 {
		c.Retry.MaxBackoff = 10 * time.Second
	}
	if c.AttemptTimeout <= 0 {
		c.AttemptTimeout = 2 * time.Minute
	}
	if c.MaxBatchChanges <= 0 {
		c.MaxBatchChanges = 5000
	}
	if c.BatchLinger <= 0 {
		c.BatchLinger = 5 * time.Millisecond
	}
}

// GitWriter is the Git state store.
//
// Writes from all callers go through one queue, drained by a single writer
// goroutine: it takes everything queued (up to MaxBatchChanges), builds one
// commit from the previous tree by replacing only the changed folders,
// pushes it, and then answers every caller with that commit. While a push
// is in flight, new writes queue up for the next batch, so the commit rate
// adapts to the push latency instead of one commit per write.
//
// A push is a compare-and-swap on the branch: if someone else pushed in
// between, the writer fetches their commit, re-applies the batch's folder
// replacements on top of it (a rebase; their commit is kept as the parent)
// and pushes again. Nothing is acknowledged before the push that carries it
// succeeded.
//
// Right after a push, the writer opens the next push session (connection,
// ref advertisement) in the background, while the callers it just answered
// prepare their next writes; the next batch then pushes on it without
// waiting for a connection. See spareSession for why that is safe.
type GitWriter struct {
	cfg    GitConfig
	log    logr.Logger
	remote *remote
	tp     transport.Transport
	ref    plumbing.ReferenceName

	// mu guards local (go-git storage is not safe for concurrent use). It
	// is never held across network I/O, so reads are not blocked by pushes.
	mu    sync.Mutex
	local *localRepo

	qmu    sync.Mutex
	queue  []*writeReq
	closed bool
	// lastBatch is how many writers the last pushed batch carried,
	// lastPush how long its attempt took, and housekeepingDue whether
	// anything was written since the last housekeeping; all only used by
	// the writer goroutine.
	lastBatch       int
	lastPush        time.Duration
	housekeepingDue bool
	// seq numbers the writes in queue order (under qmu), so that a ref
	// advertisement can tell which writes it came after.
	seq uint64
	// spare is the next push session, being opened; only touched by the
	// writer goroutine.
	spare *spareSession
	// batchDone is when the writer goroutine last finished a batch (for
	// logs), batchStart when it last took one (for CommitInterval); only
	// touched by the writer goroutine.
	batchDone, batchStart time.Time
	wake                  chan struct{}
	done                  chan struct{}
	// bg tracks the goroutines that open and close spare sessions.
	bg sync.WaitGroup
	// idle is how long the queue must stay empty before housekeeping
	// (idleHousekeeping; tests lengthen it).
	idle time.Duration
	// onSpareOpen, when set (by tests, before the first write), runs once a
	// spare session has been opened, before the writer may use it.
	onSpareOpen func()

	ctx    context.Context // the writer's lifetime, for network operations
	cancel context.CancelFunc
}

var _ Writer = (*GitWriter)(nil)

type writeReq struct {
	ctx      context.Context
	seq      uint64 // position in the queue, see GitWriter.seq
	changes  []preparedChange
	res      chan writeResult
	answered bool // only touched by the writer goroutine
}

type writeResult struct {
	res Result
	err error
}

// answer delivers the outcome; later answers are dropped (a caller that was
// told its write was abandoned may still be part of a commit that turns out
// to have landed).
func (r *writeReq) answer(res Result, err error) {
	if r.answered {
		return
	}
	r.answered = true
	r.res <- writeResult{res: res, err: err} // buffered
}

// preparedChange is a validated Change with its new content already turned
// into Git objects.
type preparedChange struct {
	dir  string
	path []string
	tree *builtTree // nil removes the folder
}

func (c preparedChange) hash() plumbing.Hash {
	if c.tree == nil {
		return plumbing.ZeroHash
	}
	return c.tree.hash
}

// NewGit opens (or creates) the local clone at cfg.Path, brings it up to
// date with the remote, and starts the writer. When the remote cannot be
// reached it still starts from an existing clone (reads serve what it
// holds; writes retry), but fails for a new one, because reads from an empty
// clone would claim the store is empty.
func NewGit(ctx context.Context, cfg GitConfig) (*GitWriter, error) {
	cfg.setDefaults()
	rm, err := newRemote(&cfg)
	if err != nil {
		return nil, err
	}
	if err := checkPath("probe ID", cfg.ProbeID, false); err != nil {
		return nil, err
	}
	ref := plumbing.NewBranchReferenceName(cfg.Branch)
	if err := ref.Validate(); err != nil {
		return nil, fmt.Errorf("invalid branch %q: %w", cfg.Branch, err)
	}
	tp, err := client.NewClient(rm.ep)
	if err != nil {
		return nil, fmt.Errorf("git transport for %s: %w", rm.display, rm.red.err(err))
	}
	local, err := openLocal(cfg.Path, ref, rm.display)
	if err != nil {
		return nil, err
	}
	lifetime, cancel := context.WithCancel(context.Background())
	w := &GitWriter{
		cfg:    cfg,
		log:    cfg.Logger.WithValues("url", rm.display, "branch", cfg.Branch),
		remote: rm,
		tp:     tp,
		ref:    ref,
		local:  local,
		wake:   make(chan struct{}, 1),
		done:   make(chan struct{}),
		idle:   idleHousekeeping,
		ctx:    lifetime,
		cancel: cancel,
	}
	if _, err := w.fetch(ctx); err != nil {
		w.mu.Lock()
		head, herr := w.local.head()
		w.mu.Unlock()
		if herr != nil || head.IsZero() {
			cancel()
			_ = local.close()
			return nil, fmt.Errorf("initial fetch of %s: %w", rm.display, err)
		}
		w.log.Error(err, "initial fetch failed; serving reads from the existing clone", "head", head.String())
	}
	go w.run()
	return w, nil
}

// Write implements Writer.
func (w *GitWriter) Write(ctx context.Context, changes ...Change) (Result, error) {
	return w.write(ctx, false, changes)
}

func (w *GitWriter) write(ctx context.Context, allowReserved bool, changes []Change) (Result, error) {
	if err := validateChanges(changes, allowReserved); err != nil {
		return Result{}, err
	}
	prepared, err := prepareChanges(changes)
	if err != nil {
		return Result{}, err
	}
	req := &writeReq{ctx: ctx, changes: prepared, res: make(chan writeResult, 1)}
	w.qmu.Lock()
	if w.closed {
		w.qmu.Unlock()
		return Result{}, ErrClosed
	}
	req.seq = w.seq
	w.seq++
	w.queue = append(w.queue, req)
	w.qmu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
	select {
	case r := <-req.res:
		return r.res, r.err
	case <-ctx.Done():
		// The writer drops the change if it has not started pushing it; if
		// it has, the outcome is unknown.
		return Result{}, fmt.Errorf("waiting for the state store write: %w (if a push was under way it may still land)", ctx.Err())
	}
}

// prepareChanges builds (hashes) the Git objects of each change in the
// caller's goroutine, so the single writer goroutine only splices trees.
func prepareChanges(changes []Change) ([]preparedChange, error) {
	out := make([]preparedChange, 0, len(changes))
	for _, c := range changes {
		var t *builtTree
		if !c.Delete {
			t = buildTree(c.Files)
		}
		out = append(out, preparedChange{dir: c.Dir, path: splitPath(c.Dir), tree: t})
	}
	// Within one write, folders must not nest: the inner one would be
	// replaced by the outer one's files, depending on order. (The same
	// folder twice is fine: the last wins, as across writes.)
	for i := range out {
		for j := range out {
			if out[i].dir != out[j].dir && isUnder(out[j].dir, out[i].dir) {
				return nil, fmt.Errorf("dir %q is inside dir %q of the same write", out[j].dir, out[i].dir)
			}
		}
	}
	return out, nil
}

// Read implements Writer. It serves the local clone's head: what this writer
// last pushed or fetched.
func (w *GitWriter) Read(ctx context.Context, dir string) (map[string][]byte, error) {
	if err := validateRelPath("dir", dir); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	head, err := w.local.head()
	if err != nil {
		return nil, err
	}
	files, err := w.local.readDir(head, dir)
	if err != nil {
		return nil, fmt.Errorf("reading %s at %s: %w", dir, head, err)
	}
	return files, nil
}

// Head returns the commit the local clone's branch points at (what Read
// serves), empty when the branch does not exist yet.
func (w *GitWriter) Head() (string, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	h, err := w.local.head()
	if err != nil || h.IsZero() {
		return "", err
	}
	return h.String(), nil
}

// Probe implements Writer.
//
// Every write, even one that changes nothing, starts with the remote's ref
// advertisement for pushing, which needs a reachable remote and credentials
// allowed to push (it is what `git push --dry-run` checks). The marker's
// content is fixed (the probe ID, nothing time-varying), so only the first
// probe against a repository makes a commit, and that one proves a real
// push works end to end; later probes are that dry run plus reading the
// marker back from the clone. A commit per probe would flood the history
// that destinations pull.
func (w *GitWriter) Probe(ctx context.Context) error {
	dir := reservedDir + "/probe/" + w.cfg.ProbeID
	marker := probeMarker(w.cfg.ProbeID)
	if _, err := w.write(ctx, true, []Change{{Dir: dir, Files: map[string][]byte{probeFile: marker}}}); err != nil {
		return fmt.Errorf("probe: writing marker %s: %w", dir, err)
	}
	return checkMarker(ctx, w, dir, marker)
}

const probeFile = "marker"

func probeMarker(id string) []byte {
	return []byte("# Written by promised to check that this state store is writable.\nprobe: " + id + "\n")
}

func checkMarker(ctx context.Context, r Writer, dir string, want []byte) error {
	files, err := r.Read(ctx, dir)
	if err != nil {
		return fmt.Errorf("probe: reading marker back: %w", err)
	}
	if got, ok := files[probeFile]; !ok || !bytes.Equal(got, want) {
		return fmt.Errorf("probe: marker %s/%s read back different from what was written", dir, probeFile)
	}
	return nil
}

// Close implements Writer.
func (w *GitWriter) Close() error {
	w.qmu.Lock()
	already := w.closed
	w.closed = true
	w.qmu.Unlock()
	if !already {
		select {
		case w.wake <- struct{}{}:
		default:
		}
	}
	<-w.done
	if already {
		return nil
	}
	w.cancel() // aborts a spare session still connecting
	w.bg.Wait()
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.local.close(); err != nil {
		return fmt.Errorf("closing local clone: %w", err)
	}
	return nil
}

// run is the writer goroutine.
func (w *GitWriter) run() {
	defer close(w.done)
	defer w.dropSpare()
	for {
		batch, ok := w.next()
		if !ok {
			return
		}
		w.process(batch)
		w.housekeepingDue = true
		w.batchDone = time.Now()
	}
}

// idleHousekeeping is how long the queue must stay empty before the writer
// writes staged objects to disk and merges packs.
const idleHousekeeping = 100 * time.Millisecond

func (w *GitWriter) housekeep() {
	w.housekeepingDue = false
	// No write is coming: do not hold a connection open (the next write
	// opens a fresh one).
	w.dropSpare()
	w.mu.Lock()
	merged, err := w.local.compact()
	w.mu.Unlock()
	if err != nil {
		w.log.Error(err, "writing the local clone's packs")
	} else if merged > 0 {
		w.log.V(1).Info("compacted local clone", "packsMerged", merged)
	}
}

// next waits for queued writes and takes a batch of them.
//
// Right after a batch is answered, its callers come back with their next
// writes one by one. Taking the queue at once would make a batch of the
// first one or two and push it alone while the rest wait behind it, which
// doubles the number of pushes under load. So when the queue holds fewer
// writers than the last batch, next lingers for the others, as long as
// they keep coming (at most BatchLinger between two), but no longer than
// the last push took: lingering that long at most doubles this batch's
// wait, while a batch cut short costs a whole extra push. (On a loaded
// machine the callers come back slowly; a fixed short linger then splits
// every batch in two.) A lone sequential writer never waits: the last
// batch had one writer.
func (w *GitWriter) next() ([]*writeReq, bool) {
	w.qmu.Lock()
	defer w.qmu.Unlock()
	for len(w.queue) == 0 {
		if w.closed {
			return nil, false
		}
		w.qmu.Unlock()
		if w.housekeepingDue {
			t := time.NewTimer(w.idle)
			select {
			case <-w.wake:
			case <-t.C:
				w.housekeep()
			}
			t.Stop()
		} else {
			<-w.wake
		}
		w.qmu.Lock()
	}
	w.waitCommitInterval()
	if want := w.lastBatch; want > 1 && !w.closed {
		now := time.Now()
		limit := now.Add(max(w.cfg.BatchLinger, w.lastPush))
		seen, deadline := len(w.queue), now.Add(w.cfg.BatchLinger)
		for len(w.queue) < want {
			now = time.Now()
			if len(w.queue) > seen {
				seen, deadline = len(w.queue), now.Add(w.cfg.BatchLinger)
			}
			left := min(deadline.Sub(now), limit.Sub(now))
			if left <= 0 {
				break
			}
			w.qmu.Unlock()
			t := time.NewTimer(left)
			select {
			case <-w.wake:
			case <-t.C:
			}
			t.Stop()
			w.qmu.Lock()
		}
	}
	n, changes := 0, 0
	for n < len(w.queue) && (n == 0 || changes+len(w.queue[n].changes) <= w.cfg.MaxBatchChanges) {
		changes += len(w.queue[n].changes)
		n++
	}
	batch := w.queue[:n:n]
	w.queue = append([]*writeReq(nil), w.queue[n:]...)
	w.batchStart = time.Now()
	return batch, true
}

// waitCommitInterval holds the next batch (qmu held, queue not empty)
// until CommitInterval has passed since the last one started, unless the
// writer is closing.
func (w *GitWriter) waitCommitInterval() {
	for !w.closed {
		left := w.cfg.CommitInterval - time.Since(w.batchStart)
		if left <= 0 {
			return
		}
		w.qmu.Unlock()
		t := time.NewTimer(left)
		select {
		case <-w.wake: // a write or Close: look again
		case <-t.C:
		}
		t.Stop()
		w.qmu.Lock()
	}
}

// plan is one attempt at committing a batch.
type plan struct {
	base    plumbing.Hash // parent; ZeroHash for the branch's first commit
	commit  plumbing.Hash
	tree    plumbing.Hash
	objects []*gitObject                  // what the pack holds, compressed while pushed
	trees   map[plumbing.Hash][]treeEntry // new trees, to warm the cache
	reqs    []*writeReq
	changed map[*writeReq]bool
	// confirm are callers whose content the base already holds, queued
	// after the advertisement: answered with base once the push lands.
	confirm []*writeReq
}

// errRemoteMoved: the remote branch is not where our batch was built; the
// clone has been brought up to date and the batch must be rebuilt.
var errRemoteMoved = errors.New("remote branch moved")

// errStaleAdvertisement: nothing to push, but some callers' writes were
// queued after the ref advertisement the batch was built on, so that
// advertisement cannot tell them their content is on the remote. The batch
// is tried again at once on a fresh session.
var errStaleAdvertisement = errors.New("ref advertisement older than some writes")

func (w *GitWriter) process(batch []*writeReq) {
	pending := batch
	tried := map[plumbing.Hash]*plan{}
	failures, moves := 0, 0
	var lastErr error
	for {
		pending = dropAbandoned(pending)
		if len(pending) == 0 {
			return
		}
		rest, err := w.attempt(pending, tried)
		if err == nil {
			return // every caller answered
		}
		pending = rest
		if errors.Is(err, errStaleAdvertisement) {
			// Not a failure; the next attempt opens a fresh session, whose
			// advertisement comes after every pending write.
			continue
		}
		if errors.Is(err, errRemoteMoved) {
			// Someone else pushed; the clone now has their commit. Rebuild on
			// it right away; if it keeps happening (writers fighting over the
			// branch), back off like a failure so that one of them wins.
			w.log.Info("remote branch moved; rebasing the batch onto it", "writes", len(pending), "reason", err.Error())
			moves++
			lastErr = err
			if moves == 1 {
				continue
			}
			if moves > w.cfg.Retry.Attempts {
				w.giveUp(pending, moves, lastErr)
				return
			}
			if !sleepUnlessAbandoned(w.ctx, w.backoff(moves-1), pending) {
				return
			}
			continue
		}
		failures++
		lastErr = err
		if isPermanent(err) {
			err = fmt.Errorf("pushing to the state store: %w", err)
			w.log.Error(err, "push failed permanently", "writes", len(pending))
			answerAll(pending, Result{}, err)
			return
		}
		if failures >= w.cfg.Retry.Attempts {
			w.giveUp(pending, failures, lastErr)
			return
		}
		d := w.backoff(failures)
		w.log.Error(err, "push failed; retrying", "attempt", failures, "backoff", d, "writes", len(pending))
		if !sleepUnlessAbandoned(w.ctx, d, pending) {
			return
		}
	}
}

func (w *GitWriter) giveUp(pending []*writeReq, attempts int, lastErr error) {
	err := fmt.Errorf("pushing to the state store: giving up after %d attempts: %w", attempts, lastErr)
	w.log.Error(err, "batch failed", "writes", len(pending))
	answerAll(pending, Result{}, err)
}

// attempt makes one try at committing the batch. It starts from the
// remote's ref advertisement, so that "unchanged" is judged against what the
// remote holds, not against a clone that may be stale, and so that the push
// is a compare-and-swap from that state. The advertisement is the spare
// session's when one was opened after the last push, or a fresh one. It
// returns nil once every caller has been answered, or the callers still
// waiting with the reason to try again.
func (w *GitWriter) attempt(pending []*writeReq, tried map[plumbing.Hash]*plan) ([]*writeReq, error) {
	ctx, cancel := context.WithTimeout(w.ctx, w.cfg.AttemptTimeout)
	defer cancel()
	start := time.Now()
	gap := time.Duration(0)
	if !w.batchDone.IsZero() {
		gap = start.Sub(w.batchDone)
	}
	rs, spare := w.takeSpare(ctx), true
	if rs == nil {
		spare = false
		var err error
		if rs, err = w.openSession(ctx); err != nil {
			return pending, err
		}
	}
	defer rs.close()
	advAt := time.Now()
	rm := w.remote
	remoteHead := rs.head
	if p, ok := tried[remoteHead]; ok {
		// A push whose outcome we did not learn (the connection broke) had
		// landed after all.
		w.log.Info("an earlier push of this batch had landed", "commit", remoteHead.String())
		w.finish(p)
		return nil, nil
	}
	w.mu.Lock()
	localHead, err := w.local.head()
	w.mu.Unlock()
	if err != nil {
		answerAll(pending, Result{}, err)
		return nil, nil
	}
	if remoteHead != localHead {
		rs.close()
		head, err := w.fetch(ctx)
		if err != nil {
			return pending, err
		}
		if p := w.landedIn(head, tried); p != nil {
			w.log.Info("an earlier push of this batch had landed", "commit", p.commit.String())
			w.finish(p)
			return nil, nil
		}
		return pending, errRemoteMoved
	}

	p, rest, err := w.plan(pending, rs.seq)
	if errors.Is(err, errStaleAdvertisement) {
		return rest, err
	}
	if err != nil {
		// The local clone could not be read: retrying will not help.
		err = fmt.Errorf("building commit: %w", err)
		w.log.Error(err, "state store batch failed")
		answerAll(rest, Result{}, err)
		return nil, nil
	}
	if p == nil {
		// Nothing changed; callers answered with the head.
		w.log.V(1).Info("nothing to push", "writes", len(pending), "gap", gap, "spare", spare,
			"advertise", advAt.Sub(start), "build", time.Since(advAt))
		return nil, nil
	}
	builtAt := time.Now()
	req := packp.NewReferenceUpdateRequestFromCapabilities(rs.ar.Capabilities)
	// Old makes this a compare-and-swap: receive-pack updates the branch
	// only if it still points at the commit we built on.
	req.Commands = []*packp.Command{{Name: w.ref, Old: remoteHead, New: p.commit}}
	// The pack is compressed while it is sent (streamPack); the commit,
	// and so the command, are known already.
	pr, pw := io.Pipe()
	req.Packfile = pr
	packed := make(chan int64, 1)
	go func() {
		n, err := streamPack(pw, p.objects)
		pw.CloseWithError(err) // io.EOF for the reader when err is nil
		packed <- n
	}()
	tried[p.commit] = p
	status, err := rs.sess.ReceivePack(ctx, req)
	_ = pr.Close() // the transport may stop reading early; unblock the stream
	packBytes := <-packed
	if err == nil && status == nil {
		// go-git reports success without a status when the server sent no
		// report (over HTTP, an empty response). Whether the push landed is
		// unknown: the next attempt's advertisement tells (see tried).
		err = errors.New("the server sent no report on the push")
	}
	if err != nil {
		err = rm.red.err(err)
		if status != nil && status.Error() != nil {
			// The server answered and refused the update: typically the
			// branch moved after it was advertised. Bring the clone up to
			// date and rebase.
			rs.close()
			if _, ferr := w.fetch(ctx); ferr != nil {
				return rest, ferr
			}
			return rest, fmt.Errorf("%w: %s refused the update: %w", errRemoteMoved, rm.display, err)
		}
		return rest, fmt.Errorf("pushing to %s: %w", rm.display, err)
	}
	pushed := time.Now()
	w.lastPush = pushed.Sub(start)
	w.qmu.Lock()
	queued := len(w.queue) // writes that could have formed the next batch during this push
	w.qmu.Unlock()
	w.finish(p)
	// The callers just answered will be back with their next writes: have a
	// session ready for them.
	w.startSpare()
	w.log.V(1).Info("pushed", "commit", p.commit.String(), "writes", len(p.reqs)+len(p.confirm), "bytes", packBytes,
		"gap", gap, "spare", spare, "advertise", advAt.Sub(start), "build", builtAt.Sub(advAt), "push", pushed.Sub(builtAt),
		"record", time.Since(pushed), "queued", queued)
	return nil, nil
}

// remoteSession is a receive-pack session whose ref advertisement has been
// read.
type remoteSession struct {
	sess   transport.ReceivePackSession
	ar     *packp.AdvRefs
	head   plumbing.Hash // the branch, as advertised
	seq    uint64        // writes with a lower seq were queued before the advertisement
	closed bool
}

func (s *remoteSession) close() {
	if !s.closed {
		s.closed = true
		_ = s.sess.Close()
	}
}

// openSession connects for a push and reads the ref advertisement.
func (w *GitWriter) openSession(ctx context.Context) (*remoteSession, error) {
	// Taken before asking: every write queued so far is older than the
	// advertisement.
	w.qmu.Lock()
	seq := w.seq
	w.qmu.Unlock()
	rm := w.remote
	sess, err := w.tp.NewReceivePackSession(rm.endpoint(), rm.auth)
	if err != nil {
		return nil, fmt.Errorf("connecting to %s: %w", rm.display, rm.red.err(err))
	}
	ar, err := sess.AdvertisedReferencesContext(ctx)
	if err != nil {
		_ = sess.Close()
		return nil, fmt.Errorf("listing refs of %s: %w", rm.display, rm.red.err(err))
	}
	return &remoteSession{sess: sess, ar: ar, head: ar.References[w.ref.String()], seq: seq}, nil
}

// spareSession is a push session opened in the background right after a
// push, so that the next batch does not wait for a connection and a ref
// advertisement.
//
// Its advertisement may be older than some writes of the batch that uses
// it. That is harmless for the writes that change something: their push is
// a compare-and-swap, refused if the branch moved since the advertisement.
// A write whose content the advertised head already holds is different:
// the head is proof only for writes queued before the advertisement (a
// foreign commit may have changed the folder since). Such a write is
// therefore answered only once a push of its batch lands (which proves the
// head was still there after it was queued), or, when there is nothing to
// push, after a fresh advertisement (errStaleAdvertisement).
type spareSession struct {
	done chan struct{}
	s    *remoteSession
	err  error
}

func (w *GitWriter) startSpare() {
	w.dropSpare()
	sp := &spareSession{done: make(chan struct{})}
	w.spare = sp
	w.bg.Add(1)
	go func() {
		defer w.bg.Done()
		defer close(sp.done)
		ctx, cancel := context.WithTimeout(w.ctx, w.cfg.AttemptTimeout)
		defer cancel()
		sp.s, sp.err = w.openSession(ctx)
		if w.onSpareOpen != nil {
			w.onSpareOpen()
		}
	}()
}

// takeSpare returns the spare session once it is open; nil when there is
// none or it could not be opened (the caller then opens one itself, and
// reports that error if it fails again).
func (w *GitWriter) takeSpare(ctx context.Context) *remoteSession {
	sp := w.spare
	if sp == nil {
		return nil
	}
	w.spare = nil
	select {
	case <-sp.done:
	case <-ctx.Done():
		w.closeWhenOpen(sp)
		return nil
	}
	if sp.err != nil {
		w.log.V(1).Info("could not open the next push session in advance", "error", sp.err.Error())
		return nil
	}
	return sp.s
}

// dropSpare closes the spare session, if any, without waiting for it.
func (w *GitWriter) dropSpare() {
	if sp := w.spare; sp != nil {
		w.spare = nil
		w.closeWhenOpen(sp)
	}
}

func (w *GitWriter) closeWhenOpen(sp *spareSession) {
	w.bg.Add(1)
	go func() {
		defer w.bg.Done()
		<-sp.done
		if sp.s != nil {
			sp.s.close()
		}
	}()
}

// landedIn returns the tried plan whose commit head contains, if any.
func (w *GitWriter) landedIn(head plumbing.Hash, tried map[plumbing.Hash]*plan) *plan {
	w.mu.Lock()
	defer w.mu.Unlock()
	for c, p := range tried {
		if w.local.isAncestor(c, head, 1000) {
			return p
		}
	}
	return nil
}

func (w *GitWriter) backoff(failures int) time.Duration {
	d := w.cfg.Retry.InitialBackoff
	for i := 1; i < failures && d < w.cfg.Retry.MaxBackoff; i++ {
		d *= 2
	}
	d = min(d, w.cfg.Retry.MaxBackoff)
	// ±20% jitter, so that writers failing together do not retry together.
	return time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
}

// sleepUnlessAbandoned waits d, returning early (false) when every caller
// has given up or the writer is torn down.
func sleepUnlessAbandoned(ctx context.Context, d time.Duration, reqs []*writeReq) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-t.C:
			return true
		case <-ctx.Done():
			answerAll(reqs, Result{}, fmt.Errorf("state store writer stopped: %w", ctx.Err()))
			return false
		case <-tick.C:
			if len(dropAbandoned(reqs)) == 0 {
				return false
			}
		}
	}
}

func dropAbandoned(reqs []*writeReq) []*writeReq {
	kept := reqs[:0:0]
	for _, r := range reqs {
		if err := r.ctx.Err(); err != nil {
			r.answer(Result{}, fmt.Errorf("write abandoned before it was pushed: %w", err))
			continue
		}
		kept = append(kept, r)
	}
	return kept
}

func answerAll(reqs []*writeReq, res Result, err error) {
	for _, r := range reqs {
		r.answer(res, err)
	}
}

// plan builds the batch's commit on the clone's head, which the ref
// advertisement read before showed to be the remote's; writes numbered
// below advSeq were queued before that advertisement.
//
// Callers whose changes are already in the head are answered at once
// (nothing to push for them) when they were queued before the
// advertisement; later ones wait for the push (plan.confirm), or, when
// there is nothing to push, for a fresh advertisement
// (errStaleAdvertisement). Callers whose change cannot be applied are
// answered at once. It returns the callers still waiting, in queue order,
// and a nil plan when there is nothing to push.
func (w *GitWriter) plan(reqs []*writeReq, advSeq uint64) (*plan, []*writeReq, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	base, err := w.local.head()
	if err != nil {
		return nil, reqs, err
	}
	baseTree, err := w.local.commitTree(base)
	if err != nil {
		return nil, reqs, err
	}
	baseEntries, err := w.local.rootEntries(base)
	if err != nil {
		return nil, reqs, err
	}
	ed := newTreeEditor(baseEntries, w.local.tree)
	// A second, unedited view of the base, to tell "equal to what is
	// pushed" from "equal to what an earlier caller in this batch wrote".
	baseView := newTreeEditor(baseEntries, w.local.tree)

	p := &plan{base: base, changed: map[*writeReq]bool{}}
	// kept are the callers still waiting, in queue order: a retry must
	// apply them in the same order (the last change to a folder wins).
	var kept []*writeReq
	stuck := func(i int) []*writeReq { return append(kept[:len(kept):len(kept)], reqs[i:]...) }
	var dirs []string
	for i, r := range reqs {
		if err := checkReq(ed, r); err != nil {
			r.answer(Result{}, err)
			continue
		}
		changed, inBase := false, true
		var todo []preparedChange
		for _, c := range r.changes {
			cur, err := ed.lookup(c.path)
			if err != nil {
				return nil, stuck(i), err
			}
			if cur == c.hash() {
				if b, err := baseView.lookup(c.path); err != nil {
					return nil, stuck(i), err
				} else if b != cur {
					inBase = false
				}
				continue
			}
			changed = true
			todo = append(todo, c)
		}
		if !changed && inBase {
			if r.seq < advSeq {
				r.answer(Result{Commit: hashString(base)}, nil)
			} else {
				p.confirm = append(p.confirm, r)
				kept = append(kept, r)
			}
			continue
		}
		for _, c := range todo {
			if err := ed.set(c.path, c.tree); err != nil {
				return nil, stuck(i), err
			}
			dirs = append(dirs, c.dir)
		}
		kept = append(kept, r)
		p.reqs = append(p.reqs, r)
		p.changed[r] = changed
	}
	if len(p.reqs) == 0 {
		if len(kept) > 0 {
			return nil, kept, errStaleAdvertisement
		}
		return nil, nil, nil
	}
	tree, err := ed.rootHash()
	if err != nil {
		return nil, kept, err
	}
	if tree == baseTree {
		// The batch's changes cancelled out (a folder written, then written
		// back): nothing to commit. The head holds what every caller asked
		// for, if the advertisement came after them all.
		for _, r := range kept {
			if r.seq >= advSeq {
				return nil, kept, errStaleAdvertisement
			}
		}
		answerAll(kept, Result{Commit: hashString(base)}, nil)
		return nil, nil, nil
	}
	now := time.Now()
	sig := object.Signature{Name: w.cfg.AuthorName, Email: w.cfg.AuthorEmail, When: now}
	c := &object.Commit{Author: sig, Committer: sig, Message: commitMessage(dirs), TreeHash: tree}
	if !base.IsZero() {
		c.ParentHashes = []plumbing.Hash{base}
	}
	enc := &plumbing.MemoryObject{}
	if err := c.Encode(enc); err != nil {
		return nil, kept, fmt.Errorf("encoding commit: %w", err)
	}
	co, err := commitObject(enc)
	if err != nil {
		return nil, kept, err
	}
	p.commit, p.tree, p.objects = co.hash, tree, append(ed.objects(), co)
	p.trees = ed.createdEntries
	return p, kept, nil
}

func commitObject(enc *plumbing.MemoryObject) (*gitObject, error) {
	r, _ := enc.Reader() // a MemoryObject's reader cannot fail
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("encoding commit: %w", err)
	}
	return newObject(plumbing.CommitObject, data), nil
}

// checkReq rejects a caller whose change needs a directory where the tree
// has a file, before any of its changes is applied (so a caller's changes
// land all or none).
func checkReq(ed *treeEditor, r *writeReq) error {
	for _, c := range r.changes {
		if err := ed.check(c.path); err != nil {
			return err
		}
	}
	return nil
}

func hashString(h plumbing.Hash) string {
	if h.IsZero() {
		return ""
	}
	return h.String()
}

func commitMessage(dirs []string) string {
	const listed = 20
	var b bytes.Buffer
	if len(dirs) == 1 {
		fmt.Fprintf(&b, "promised: write %s\n", dirs[0])
		return b.String()
	}
	fmt.Fprintf(&b, "promised: write %d folders\n\n", len(dirs))
	for i, d := range dirs {
		if i == listed {
			fmt.Fprintf(&b, "… and %d more\n", len(dirs)-listed)
			break
		}
		fmt.Fprintf(&b, "%s\n", d)
	}
	return b.String()
}

// finish records a pushed commit in the clone and answers the callers.
func (w *GitWriter) finish(p *plan) {
	// The callers are answered first, while still holding the lock: the
	// commit is on the remote, so their writes are durable, and they can
	// prepare their next writes while the clone records the pack; a Read
	// after Write still waits for the lock, and so sees the write.
	w.mu.Lock()
	defer w.mu.Unlock()
	commit := p.commit.String()
	for _, r := range p.reqs {
		r.answer(Result{Commit: commit, Changed: p.changed[r]}, nil)
	}
	// The push landed, so the remote still held base after these callers
	// were queued: base holds their content.
	answerAll(p.confirm, Result{Commit: hashString(p.base)}, nil)
	w.lastBatch = len(p.reqs) + len(p.confirm)
	if err := w.local.stage(p.objects, p.commit); err != nil {
		// The next batch will find the remote ahead of the clone and fetch.
		w.log.Error(err, "recording a pushed commit in the local clone", "commit", commit)
		return
	}
	w.local.rememberCommit(p.commit, p.tree)
	for h, entries := range p.trees {
		w.local.trees.add(h, entries)
	}
}
