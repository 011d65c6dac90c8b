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
	// BatchLinger is the longest a batch waits for the writers of the
	// previous batch to come back (see GitWriter.next); 5ms when zero.
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
	// lastBatch is how many writers the last pushed batch carried, and
	// housekeepingDue whether anything was written since the last
	// housekeeping; both only used by the writer goroutine.
	lastBatch       int
	housekeepingDue bool
	wake            chan struct{}
	done            chan struct{}

	ctx    context.Context // the writer's lifetime, for network operations
	cancel context.CancelFunc
}

var _ Writer = (*GitWriter)(nil)

type writeReq struct {
	ctx      context.Context
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

// prepareChanges builds the Git objects of each change in the caller's
// goroutine, so the single writer goroutine only splices trees.
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
	w.cancel()
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
	for {
		batch, ok := w.next()
		if !ok {
			return
		}
		w.process(batch)
		w.housekeepingDue = true
	}
}

// idleHousekeeping is how long the queue must stay empty before the writer
// writes staged objects to disk and merges packs.
const idleHousekeeping = 100 * time.Millisecond

func (w *GitWriter) housekeep() {
	w.housekeepingDue = false
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
// writers than the last batch, next lingers (at most BatchLinger) for the
// others. A lone sequential writer never waits: the
// last batch had one writer.
func (w *GitWriter) next() ([]*writeReq, bool) {
	w.qmu.Lock()
	defer w.qmu.Unlock()
	for len(w.queue) == 0 {
		if w.closed {
			return nil, false
		}
		w.qmu.Unlock()
		if w.housekeepingDue {
			t := time.NewTimer(idleHousekeeping)
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
	if want := w.lastBatch; want > 1 && !w.closed {
		deadline := time.Now().Add(w.cfg.BatchLinger)
		for len(w.queue) < want {
			left := time.Until(deadline)
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
	return batch, true
}

// plan is one attempt at committing a batch.
type plan struct {
	base    plumbing.Hash // parent; ZeroHash for the branch's first commit
	commit  plumbing.Hash
	tree    plumbing.Hash
	pack    []byte
	objects []*plumbing.MemoryObject      // what the pack holds
	trees   map[plumbing.Hash][]treeEntry // new trees, to warm the cache
	reqs    []*writeReq
	changed map[*writeReq]bool
}

// errRemoteMoved: the remote branch is not where our batch was built; the
// clone has been brought up to date and the batch must be rebuilt.
var errRemoteMoved = errors.New("remote branch moved")

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

// attempt makes one try at committing the batch. It starts with the
// remote's ref advertisement (one round trip), so that "unchanged" is
// judged against what the remote holds now, not against a clone that may be
// stale, and so that the push is a compare-and-swap from that state. It
// returns nil once every caller has been answered, or the callers still
// waiting with the reason to try again.
func (w *GitWriter) attempt(pending []*writeReq, tried map[plumbing.Hash]*plan) ([]*writeReq, error) {
	ctx, cancel := context.WithTimeout(w.ctx, w.cfg.AttemptTimeout)
	defer cancel()
	start := time.Now()
	rm := w.remote
	sess, err := w.tp.NewReceivePackSession(rm.ep, rm.auth)
	if err != nil {
		return pending, fmt.Errorf("connecting to %s: %w", rm.display, rm.red.err(err))
	}
	defer sess.Close()
	ar, err := sess.AdvertisedReferencesContext(ctx)
	if err != nil {
		return pending, fmt.Errorf("listing refs of %s: %w", rm.display, rm.red.err(err))
	}
	advAt := time.Now()
	remoteHead := ar.References[w.ref.String()]
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
		_ = sess.Close()
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

	p, rest, err := w.plan(pending)
	if err != nil {
		// The local clone could not be read: retrying will not help.
		err = fmt.Errorf("building commit: %w", err)
		w.log.Error(err, "state store batch failed")
		answerAll(rest, Result{}, err)
		return nil, nil
	}
	if p == nil {
		return nil, nil // nothing changed; callers answered with the head
	}
	builtAt := time.Now()
	req := packp.NewReferenceUpdateRequestFromCapabilities(ar.Capabilities)
	// Old makes this a compare-and-swap: receive-pack updates the branch
	// only if it still points at the commit we built on.
	req.Commands = []*packp.Command{{Name: w.ref, Old: remoteHead, New: p.commit}}
	req.Packfile = io.NopCloser(bytes.NewReader(p.pack))
	tried[p.commit] = p
	rs, err := sess.ReceivePack(ctx, req)
	if err != nil {
		err = rm.red.err(err)
		if rs != nil && rs.Error() != nil {
			// The server answered and refused the update: typically the
			// branch moved after it was advertised. Re-read and rebase.
			return rest, fmt.Errorf("%w: %s refused the update: %w", errRemoteMoved, rm.display, err)
		}
		return rest, fmt.Errorf("pushing to %s: %w", rm.display, err)
	}
	pushed := time.Now()
	w.finish(p)
	w.log.V(1).Info("pushed", "commit", p.commit.String(), "writes", len(p.reqs), "bytes", len(p.pack),
		"advertise", advAt.Sub(start), "build", builtAt.Sub(advAt), "push", pushed.Sub(builtAt), "record", time.Since(pushed))
	return nil, nil
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

// plan builds the batch's commit on the clone's head. Callers whose changes
// are already in the head are answered at once (nothing to push for them);
// so are callers whose change cannot be applied. It returns the callers
// still waiting, and a nil plan when none remain.
func (w *GitWriter) plan(reqs []*writeReq) (*plan, []*writeReq, error) {
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
	var waiting []*writeReq
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
				return nil, append(waiting, reqs[i:]...), err
			}
			if cur == c.hash() {
				if b, err := baseView.lookup(c.path); err != nil {
					return nil, append(waiting, reqs[i:]...), err
				} else if b != cur {
					inBase = false
				}
				continue
			}
			changed = true
			todo = append(todo, c)
		}
		if !changed && inBase {
			r.answer(Result{Commit: hashString(base)}, nil)
			continue
		}
		for _, c := range todo {
			if err := ed.set(c.path, c.tree); err != nil {
				return nil, append(waiting, reqs[i:]...), err
			}
			dirs = append(dirs, c.dir)
		}
		waiting = append(waiting, r)
		p.changed[r] = changed
	}
	if len(waiting) == 0 {
		return nil, nil, nil
	}
	tree, err := ed.rootHash()
	if err != nil {
		return nil, waiting, err
	}
	if tree == baseTree {
		// The batch's changes cancelled out (a folder written, then written
		// back): nothing to commit.
		answerAll(waiting, Result{Commit: hashString(base)}, nil)
		return nil, nil, nil
	}
	now := time.Now()
	sig := object.Signature{Name: w.cfg.AuthorName, Email: w.cfg.AuthorEmail, When: now}
	c := &object.Commit{Author: sig, Committer: sig, Message: commitMessage(dirs), TreeHash: tree}
	if !base.IsZero() {
		c.ParentHashes = []plumbing.Hash{base}
	}
	co := &plumbing.MemoryObject{}
	if err := c.Encode(co); err != nil {
		return nil, waiting, fmt.Errorf("encoding commit: %w", err)
	}
	objects := append(ed.objects(), co)
	pack, err := encodePack(objects)
	if err != nil {
		return nil, waiting, fmt.Errorf("encoding pack: %w", err)
	}
	p.commit, p.tree, p.pack, p.reqs, p.objects = co.Hash(), tree, pack, waiting, objects
	p.trees = ed.createdEntries
	return p, waiting, nil
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
	w.lastBatch = len(p.reqs)
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
