// Package ledgertest checks that a ledger.Ledger keeps the ledger's
// promises: compare-and-swap storage, and through ledger.Obtain at most one
// live credential per key whatever step a run crashes at. Every
// implementation runs the same suite (Run) against its real storage.
package ledgertest

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"promised.dev/promised/pipelines/ledger"
)

// Setup gives the suite a ledger and a fresh owner for each test, so tests
// never see each other's entries.
type Setup struct {
	// Ledger is the implementation under test.
	Ledger ledger.Ledger
	// NewOwner returns an owner no test has used yet.
	NewOwner func(t *testing.T) ledger.Owner
}

// Run runs the suite.
func Run(t *testing.T, s Setup) {
	t.Run("Storage", func(t *testing.T) { storage(t, s) })
	t.Run("List", func(t *testing.T) { list(t, s) })
	t.Run("ObtainReusesUntilDue", func(t *testing.T) { obtainReuses(t, s) })
	t.Run("CrashAtEveryStep", func(t *testing.T) { crashAtEveryStep(t, s) })
	t.Run("ConcurrentObtain", func(t *testing.T) { concurrentObtain(t, s) })
}

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func storage(t *testing.T, s Setup) {
	ctx := context.Background()
	key := ledger.Key{Owner: s.NewOwner(t), Credential: "nats"}
	_, found, err := s.Ledger.Get(ctx, key)
	require.NoError(t, err)
	require.False(t, found)

	e := ledger.Entry{
		ID: "UABC", Data: map[string][]byte{"creds": []byte("-----BEGIN NATS USER JWT-----"), "seed": {0, 1, 2}},
		IssuedAt: t0, ExpiresAt: t0.Add(time.Hour), Reason: ledger.ReasonFresh, Meaning: "pub:>", RotateToken: "r1",
		Retire: []string{"UOLD"},
	}
	stored, err := s.Ledger.Put(ctx, key, e)
	require.NoError(t, err)
	require.NotEmpty(t, stored.Revision)

	got, found, err := s.Ledger.Get(ctx, key)
	require.NoError(t, err)
	require.True(t, found)
	requireSameEntry(t, stored, got)

	_, err = s.Ledger.Put(ctx, key, e)
	require.ErrorIs(t, err, ledger.ErrConflict, "creating an entry that exists")

	update := got
	update.Used, update.Retire = true, nil
	updated, err := s.Ledger.Put(ctx, key, update)
	require.NoError(t, err)
	require.NotEqual(t, got.Revision, updated.Revision)
	_, err = s.Ledger.Put(ctx, key, got)
	require.ErrorIs(t, err, ledger.ErrConflict, "updating from a stale revision")
	got, _, err = s.Ledger.Get(ctx, key)
	require.NoError(t, err)
	requireSameEntry(t, updated, got)

	require.NoError(t, s.Ledger.Delete(ctx, key))
	require.NoError(t, s.Ledger.Delete(ctx, key), "deleting twice is fine")
	_, found, err = s.Ledger.Get(ctx, key)
	require.NoError(t, err)
	require.False(t, found)
	_, err = s.Ledger.Put(ctx, key, got)
	require.ErrorIs(t, err, ledger.ErrConflict, "updating a deleted entry")

	_, err = s.Ledger.Put(ctx, key, ledger.Entry{})
	require.ErrorContains(t, err, "no ID")
	_, err = s.Ledger.Put(ctx, ledger.Key{Owner: key.Owner, Credential: "../x"}, e)
	require.ErrorContains(t, err, "credential name")
}

func requireSameEntry(t *testing.T, want, got ledger.Entry) {
	t.Helper()
	require.True(t, want.IssuedAt.Equal(got.IssuedAt), "issuedAt %s, want %s", got.IssuedAt, want.IssuedAt)
	require.True(t, want.ExpiresAt.Equal(got.ExpiresAt), "expiresAt %s, want %s", got.ExpiresAt, want.ExpiresAt)
	want.IssuedAt, want.ExpiresAt, got.IssuedAt, got.ExpiresAt = time.Time{}, time.Time{}, time.Time{}, time.Time{}
	if len(want.Retire) == 0 && len(got.Retire) == 0 {
		want.Retire, got.Retire = nil, nil
	}
	require.Equal(t, want, got)
}

func list(t *testing.T, s Setup) {
	ctx := context.Background()
	owner, other := s.NewOwner(t), s.NewOwner(t)
	for _, k := range []ledger.Key{{Owner: owner, Credential: "nats"}, {Owner: owner, Credential: "db"}, {Owner: other, Credential: "nats"}} {
		_, err := s.Ledger.Put(ctx, k, ledger.Entry{ID: k.Credential})
		require.NoError(t, err)
	}
	keys, err := s.Ledger.List(ctx, owner)
	require.NoError(t, err)
	require.Equal(t, []ledger.Key{{Owner: owner, Credential: "db"}, {Owner: owner, Credential: "nats"}}, keys)
	empty, err := s.Ledger.List(ctx, s.NewOwner(t))
	require.NoError(t, err)
	require.Empty(t, empty)
}

// counter mints credentials with distinct IDs and counts them.
type counter struct {
	mu sync.Mutex
	n  int
}

func (c *counter) mint(context.Context) (ledger.Entry, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n++
	return ledger.Entry{ID: fmt.Sprintf("cred-%d", c.n), Data: map[string][]byte{"password": fmt.Appendf(nil, "pw-%d", c.n)}}, nil
}

func (c *counter) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

func obtainReuses(t *testing.T, s Setup) {
	ctx := context.Background()
	key := ledger.Key{Owner: s.NewOwner(t), Credential: "db"}
	var c counter
	p := ledger.Policy{TTL: time.Hour, RotateBefore: 10 * time.Minute, Meaning: "role=reader"}
	steps := []struct {
		at      time.Duration
		p       ledger.Policy
		reason  ledger.Reason
		minted  int
		issueAt time.Duration
	}{
		{0, p, ledger.ReasonFresh, 1, 0},
		{49 * time.Minute, p, ledger.ReasonReuse, 1, 0},
		{50 * time.Minute, p, ledger.ReasonExpiring, 2, 50 * time.Minute},
		{51 * time.Minute, p, ledger.ReasonReuse, 2, 50 * time.Minute},
		{52 * time.Minute, ledger.Policy{TTL: time.Hour, RotateBefore: 10 * time.Minute, Meaning: "role=writer"}, ledger.ReasonMeaningChanged, 3, 52 * time.Minute},
	}
	for _, st := range steps {
		got, err := ledger.Obtain(ctx, s.Ledger, key, st.p, t0.Add(st.at), c.mint)
		require.NoError(t, err)
		require.Equal(t, st.reason, got.Decision.Reason, "at +%s", st.at)
		require.Equal(t, st.minted, c.count(), "at +%s", st.at)
		require.Equal(t, fmt.Sprintf("cred-%d", st.minted), got.Entry.ID)
		require.True(t, t0.Add(st.issueAt).Equal(got.Entry.IssuedAt))
		require.True(t, t0.Add(st.issueAt+time.Hour-10*time.Minute).Equal(got.Decision.NextRotation))
		status := got.Status()
		require.Equal(t, "db", status.Name)
		require.Equal(t, got.Entry.ID, status.ID)
		require.Equal(t, t0.Add(st.issueAt+time.Hour).Format(time.RFC3339), status.ExpiresAt)
		require.NotContains(t, fmt.Sprintf("%+v", status), "pw-", "status never holds the secret")
	}
}

// live is the system that accepts the credentials (a NATS server, a
// database): which credentials exist there.
type live struct {
	mu  sync.Mutex
	ids map[string]bool
}

func (l *live) provision(id string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.ids[id] = true
}

func (l *live) revoke(id string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.ids, id)
}

func (l *live) list() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for id := range l.ids {
		out = append(out, id)
	}
	sort.Strings(out)
	return out
}

// crashPoint is where a simulated kill interrupts a stage's run.
type crashPoint string

const (
	noCrash         crashPoint = ""
	crashInMint     crashPoint = "after minting, before recording"
	crashAfterPut   crashPoint = "after recording, before use"
	crashAfterUse   crashPoint = "after provisioning, before revoking the old one"
	crashBeforeDone crashPoint = "after revoking, before settling"
)

type crash struct{ at crashPoint }

// stageRun is what a credential-minting stage does on each run: obtain,
// provision, revoke what was replaced, settle. A crash is a panic, as a
// killed process stops mid-way without running any more of its code.
func stageRun(ctx context.Context, l ledger.Ledger, key ledger.Key, p ledger.Policy, now time.Time, c *counter, sys *live, at crashPoint) (issued ledger.Issued, err error) {
	defer func() {
		if r := recover(); r != nil {
			if _, ok := r.(crash); !ok {
				panic(r)
			}
			err = errors.New("crashed")
		}
	}()
	issued, err = ledger.Obtain(ctx, l, key, p, now, func(ctx context.Context) (ledger.Entry, error) {
		e, err := c.mint(ctx)
		if at == crashInMint {
			panic(crash{at})
		}
		return e, err
	})
	if err != nil {
		return issued, err
	}
	if at == crashAfterPut {
		panic(crash{at})
	}
	sys.provision(issued.Entry.ID)
	if at == crashAfterUse {
		panic(crash{at})
	}
	for _, id := range issued.Entry.Retire {
		sys.revoke(id)
	}
	if at == crashBeforeDone {
		panic(crash{at})
	}
	return issued, ledger.Settle(ctx, l, key, issued.Entry.ID)
}

func crashAtEveryStep(t *testing.T, s Setup) {
	for _, at := range []crashPoint{crashInMint, crashAfterPut, crashAfterUse, crashBeforeDone} {
		t.Run(string(at), func(t *testing.T) {
			ctx := context.Background()
			key := ledger.Key{Owner: s.NewOwner(t), Credential: "nats"}
			var c counter
			sys := &live{ids: map[string]bool{}}
			p := ledger.Policy{TTL: 24 * time.Hour, RotateBefore: time.Hour}
			settled := func(issued ledger.Issued) {
				t.Helper()
				require.Equal(t, []string{issued.Entry.ID}, sys.list(), "exactly one live credential")
				e, found, err := s.Ledger.Get(ctx, key)
				require.NoError(t, err)
				require.True(t, found)
				require.Equal(t, issued.Entry.ID, e.ID)
				require.True(t, e.Used)
				require.Empty(t, e.Retire)
				keys, err := s.Ledger.List(ctx, key.Owner)
				require.NoError(t, err)
				require.Len(t, keys, 1, "one recorded credential")
			}

			// The first issue, crashing at the step, then completing.
			_, err := stageRun(ctx, s.Ledger, key, p, t0, &c, sys, at)
			require.Error(t, err)
			require.LessOrEqual(t, len(sys.list()), 1)
			first, err := stageRun(ctx, s.Ledger, key, p, t0.Add(time.Minute), &c, sys, noCrash)
			require.NoError(t, err)
			settled(first)
			wantMints := 1
			if at == crashInMint {
				wantMints = 2 // the crashed run's material was never recorded, never used
			}
			require.Equal(t, wantMints, c.count())

			// A forced rotation, crashing at the step, then completing.
			p.RotateRequest = "2026-03-01T13:00:00Z"
			_, err = stageRun(ctx, s.Ledger, key, p, t0.Add(time.Hour), &c, sys, at)
			require.Error(t, err)
			require.LessOrEqual(t, len(sys.list()), 2, "old and new overlap at most while rotating")
			second, err := stageRun(ctx, s.Ledger, key, p, t0.Add(time.Hour+time.Minute), &c, sys, noCrash)
			require.NoError(t, err)
			settled(second)
			require.NotEqual(t, first.Entry.ID, second.Entry.ID, "rotated")
			wantMints += 1
			if at == crashInMint {
				wantMints++
			}
			require.Equal(t, wantMints, c.count(), "rotated exactly once")

			// Further runs with the annotation still set change nothing.
			for i := range 3 {
				again, err := stageRun(ctx, s.Ledger, key, p, t0.Add(2*time.Hour+time.Duration(i)*time.Minute), &c, sys, noCrash)
				require.NoError(t, err)
				require.Equal(t, ledger.ReasonReuse, again.Decision.Reason)
				require.Equal(t, second.Entry.ID, again.Entry.ID)
				settled(again)
			}
			require.Equal(t, wantMints, c.count())
		})
	}
}

func concurrentObtain(t *testing.T, s Setup) {
	ctx := context.Background()
	key := ledger.Key{Owner: s.NewOwner(t), Credential: "nats"}
	var c counter
	const n = 8
	ids := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			got, err := ledger.Obtain(ctx, s.Ledger, key, ledger.Policy{}, t0, c.mint)
			ids[i], errs[i] = got.Entry.ID, err
		})
	}
	wg.Wait()
	for i := range n {
		require.NoError(t, errs[i])
		require.Equal(t, ids[0], ids[i], "every racer gets the one recorded credential")
	}
	e, found, err := s.Ledger.Get(ctx, key)
	require.NoError(t, err)
	require.True(t, found)
	require.Equal(t, ids[0], e.ID)
}
