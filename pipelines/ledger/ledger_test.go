package ledger_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"

	"promised.dev/promised/api/v1alpha1"
	"promised.dev/promised/pipelines"
	"promised.dev/promised/pipelines/contract"
	"promised.dev/promised/pipelines/ledger"
	"promised.dev/promised/pipelines/ledger/ledgertest"
	"promised.dev/promised/pipelines/stage"
)

var ownerSeq atomic.Int64

func newOwner(*testing.T) ledger.Owner {
	n := ownerSeq.Add(1)
	return ledger.Owner{
		Promise: "nats", APIVersion: "example.promised.dev/v1", Kind: "NatsAccount",
		Namespace: "payments", Name: fmt.Sprintf("api-%d", n), UID: types.UID(fmt.Sprintf("uid-%d", n)),
	}
}

func TestFolder(t *testing.T) {
	f, err := ledger.NewFolder(filepath.Join(t.TempDir(), "ledger"))
	require.NoError(t, err)
	ledgertest.Run(t, ledgertest.Setup{Ledger: f, NewOwner: newOwner})

	// Whatever the suite did, every file holds credentials readable by
	// this user only, and no temporary file was left behind.
	info, err := os.Stat(f.Dir())
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o700), info.Mode().Perm())
	files := 0
	require.NoError(t, filepath.WalkDir(f.Dir(), func(p string, d os.DirEntry, err error) error {
		require.NoError(t, err)
		if d.IsDir() {
			return nil
		}
		files++
		require.True(t, strings.HasSuffix(p, ".json"), "leftover %s", p)
		info, err := d.Info()
		require.NoError(t, err)
		require.Equal(t, os.FileMode(0o600), info.Mode().Perm(), p)
		return nil
	}))
	require.NotZero(t, files)
}

func TestFolderLayoutAndCorruption(t *testing.T) {
	ctx := context.Background()
	f, err := ledger.NewFolder(t.TempDir())
	require.NoError(t, err)
	cluster := ledger.Key{Owner: ledger.Owner{Promise: "nats", Name: "platform"}, Credential: "system"}
	_, err = f.Put(ctx, cluster, ledger.Entry{ID: "x", Data: map[string][]byte{"password": []byte("hunter2")}})
	require.NoError(t, err)
	p := filepath.Join(f.Dir(), "nats", "_cluster", "platform", "system.json")
	require.FileExists(t, p, "cluster-scoped owners get a folder no namespace can have")

	require.NoError(t, os.WriteFile(p, []byte(`{"id": "x", "data": {"password": "aHVudGVyMg=="`), 0o600))
	_, _, err = f.Get(ctx, cluster)
	require.ErrorContains(t, err, "is corrupt")
	require.NotContains(t, err.Error(), "aHVudGVyMg==")
	require.NotContains(t, err.Error(), "hunter2")

	for _, k := range []ledger.Key{
		{Owner: ledger.Owner{Promise: "../etc", Name: "a"}, Credential: "c"},
		{Owner: ledger.Owner{Promise: "p", Namespace: "a/b", Name: "a"}, Credential: "c"},
		{Owner: ledger.Owner{Promise: "p", Name: ".."}, Credential: "c"},
		{Owner: ledger.Owner{Promise: "p", Name: "a"}, Credential: ".."},
	} {
		_, _, err := f.Get(ctx, k)
		require.Error(t, err, "%+v", k)
	}
}

func TestDecide(t *testing.T) {
	issued := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	p := ledger.Policy{TTL: 30 * 24 * time.Hour, RotateBefore: 7 * 24 * time.Hour, Meaning: "pub:orders.>"}
	entry := ledger.Entry{ID: "U1", IssuedAt: issued, ExpiresAt: issued.Add(p.TTL), Meaning: "pub:orders.>", RotateToken: "t1"}
	window := entry.ExpiresAt.Add(-p.RotateBefore)
	with := func(f func(*ledger.Policy)) ledger.Policy { q := p; f(&q); return q }
	for name, tc := range map[string]struct {
		p      ledger.Policy
		e      *ledger.Entry
		now    time.Time
		reason ledger.Reason
	}{
		"nothing recorded":              {p, nil, issued, ledger.ReasonFresh},
		"just issued":                   {p, &entry, issued, ledger.ReasonReuse},
		"a second before the window":    {p, &entry, window.Add(-time.Second), ledger.ReasonReuse},
		"the window opens":              {p, &entry, window, ledger.ReasonExpiring},
		"inside the window":             {p, &entry, window.Add(time.Hour), ledger.ReasonExpiring},
		"expired":                       {p, &entry, entry.ExpiresAt.Add(time.Hour), ledger.ReasonExpiring},
		"meaning changed":               {with(func(q *ledger.Policy) { q.Meaning = "pub:>" }), &entry, issued, ledger.ReasonMeaningChanged},
		"meaning outranks forced":       {with(func(q *ledger.Policy) { q.Meaning = "pub:>"; q.RotateRequest = "t2" }), &entry, issued, ledger.ReasonMeaningChanged},
		"new rotate value":              {with(func(q *ledger.Policy) { q.RotateRequest = "t2" }), &entry, issued, ledger.ReasonForced},
		"forced outranks age":           {with(func(q *ledger.Policy) { q.RotateRequest = "t2" }), &entry, window, ledger.ReasonForced},
		"rotate value already honoured": {with(func(q *ledger.Policy) { q.RotateRequest = "t1" }), &entry, issued, ledger.ReasonReuse},
		"rotate annotation removed":     {p, &entry, issued, ledger.ReasonReuse},
		"no expiry":                     {ledger.Policy{Meaning: "pub:orders.>"}, &ledger.Entry{ID: "U1", Meaning: "pub:orders.>"}, issued.Add(100 * 365 * 24 * time.Hour), ledger.ReasonReuse},
	} {
		t.Run(name, func(t *testing.T) {
			d := ledger.Decide(tc.p, tc.e, tc.now)
			require.Equal(t, tc.reason, d.Reason)
			require.Equal(t, tc.reason != ledger.ReasonReuse, d.Mint)
			if tc.reason == ledger.ReasonReuse && !tc.e.ExpiresAt.IsZero() {
				require.Equal(t, window, d.NextRotation)
			}
		})
	}
}

// TestRotationWithInjectedTime walks one credential through a year with
// a rotate-annotation set on the way: each cause rotates exactly once.
func TestRotationWithInjectedTime(t *testing.T) {
	ctx := context.Background()
	l, err := ledger.NewFolder(t.TempDir())
	require.NoError(t, err)
	key := ledger.Key{Owner: newOwner(t), Credential: "nats"}
	p := ledger.Policy{TTL: 30 * 24 * time.Hour, RotateBefore: 7 * 24 * time.Hour}
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	minted := 0
	mint := func(context.Context) (ledger.Entry, error) { minted++; return ledger.Entry{}, nil }
	reasons := map[ledger.Reason]int{}
	var ids []string
	for hour := 0; hour < 24*365; hour += 6 {
		now := start.Add(time.Duration(hour) * time.Hour)
		if hour == 24*100 {
			p.RotateRequest = now.Format(time.RFC3339) // kubectl annotate promised.dev/rotate=...
		}
		got, err := ledger.Obtain(ctx, l, key, p, now, mint)
		require.NoError(t, err)
		reasons[got.Decision.Reason]++
		if got.Decision.Mint {
			ids = append(ids, got.Entry.ID)
		}
		require.True(t, now.Before(got.Entry.ExpiresAt.Add(-p.RotateBefore)), "never handed out inside its window (%s)", now)
	}
	// Fresh at day 0, then every 23 days (30 - 7); the forced rotation at
	// day 100 restarts the cycle once.
	require.Equal(t, 1, reasons[ledger.ReasonFresh])
	require.Equal(t, 1, reasons[ledger.ReasonForced])
	require.Equal(t, minted, len(ids))
	require.Equal(t, 1+1+reasons[ledger.ReasonExpiring], minted)
	require.InDelta(t, 365/23, reasons[ledger.ReasonExpiring], 1)
	seen := map[string]bool{}
	for _, id := range ids {
		require.False(t, seen[id], "every mint is a new credential")
		seen[id] = true
	}
}

func TestPolicyValidate(t *testing.T) {
	require.NoError(t, ledger.Policy{}.Validate())
	require.NoError(t, ledger.Policy{TTL: time.Hour, RotateBefore: 59 * time.Minute}.Validate())
	require.ErrorContains(t, ledger.Policy{TTL: time.Hour, RotateBefore: time.Hour}.Validate(), "every run would rotate")
	require.Error(t, ledger.Policy{TTL: -time.Hour}.Validate())
	_, err := ledger.Obtain(context.Background(), nil, ledger.Key{Owner: newOwner(t), Credential: "x"}, ledger.Policy{}, time.Now(), nil)
	require.ErrorContains(t, err, "no ledger")
}

func TestMintErrorsAreWrapped(t *testing.T) {
	l, err := ledger.NewFolder(t.TempDir())
	require.NoError(t, err)
	boom := errors.New("the NATS account key is unavailable")
	_, err = ledger.Obtain(context.Background(), l, ledger.Key{Owner: newOwner(t), Credential: "nats"}, ledger.Policy{}, time.Now(),
		func(context.Context) (ledger.Entry, error) { return ledger.Entry{}, boom })
	require.ErrorIs(t, err, boom)
	require.ErrorContains(t, err, `obtaining credential "nats"`)
	require.ErrorContains(t, err, "minting (fresh)")
}

func TestOwnerFromObjectAndRotateRequest(t *testing.T) {
	obj := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "example.promised.dev/v1", "kind": "NatsAccount",
		"metadata": map[string]any{"name": "api", "namespace": "payments", "uid": "1234",
			"annotations": map[string]any{ledger.RotateAnnotation: " 2026-03-01T10:00:00Z "}},
	}}
	require.Equal(t, ledger.Owner{Promise: "nats", APIVersion: "example.promised.dev/v1", Kind: "NatsAccount", Namespace: "payments", Name: "api", UID: "1234"},
		ledger.OwnerFromObject("nats", obj))
	require.Equal(t, "2026-03-01T10:00:00Z", ledger.RotateRequest(obj))
}

// TestStagesReachTheLedgerThroughTheSDK runs a minting stage in the
// engine, as the controller does, with and without a ledger.
func TestStagesReachTheLedgerThroughTheSDK(t *testing.T) {
	l, err := ledger.NewFolder(t.TempDir())
	require.NoError(t, err)
	var ids []string
	mintStage := func(ctx context.Context, c *stage.Context) error {
		lg, err := c.Ledger()
		if err != nil {
			return err
		}
		obj, err := c.Object()
		if err != nil {
			return err
		}
		key := ledger.Key{Owner: ledger.OwnerFromObject(c.Env.PromiseName, obj), Credential: "nats"}
		got, err := ledger.Obtain(ctx, lg, key, ledger.Policy{RotateRequest: ledger.RotateRequest(obj)}, time.Now(),
			func(context.Context) (ledger.Entry, error) {
				return ledger.Entry{Data: map[string][]byte{"password": []byte("hunter2")}}, nil
			})
		if err != nil {
			return err
		}
		ids = append(ids, got.Entry.ID)
		return c.SetStatus(map[string]any{"credentials": []ledger.CredentialStatus{got.Status()}})
	}
	reg := stage.NewRegistry()
	require.NoError(t, reg.Register("mint", mintStage))
	run := func(l ledger.Ledger, annotations map[string]any) (*pipelines.Result, error) {
		seq := pipelines.Sequential{Pick: func(v1alpha1.Container) (pipelines.ContainerRunner, error) {
			return pipelines.InProcess{Registry: reg, Ledger: l}, nil
		}}
		e := &pipelines.Engine{Choose: func(v1alpha1.Pipeline) (pipelines.PipelineRunner, error) { return seq, nil }}
		return e.Run(context.Background(), pipelines.Workflow{
			PromiseName: "nats", Type: contract.TypeResource, Action: contract.ActionConfigure,
			Pipelines: []v1alpha1.Pipeline{{Metadata: v1alpha1.PipelineMetadata{Name: "p"}, Spec: v1alpha1.PipelineSpec{
				Containers: []v1alpha1.Container{{Name: "mint", Image: stage.Image("mint")}}}}},
			Object: &unstructured.Unstructured{Object: map[string]any{
				"apiVersion": "example.promised.dev/v1", "kind": "NatsAccount",
				"metadata": map[string]any{"name": "api", "namespace": "payments", "uid": "u-1", "annotations": annotations},
			}},
		})
	}
	_, err = run(nil, nil)
	require.ErrorIs(t, err, stage.ErrNoLedger)

	for range 3 {
		res, err := run(l, nil)
		require.NoError(t, err)
		require.NotContains(t, fmt.Sprint(res.Status), "hunter2")
	}
	res, err := run(l, map[string]any{ledger.RotateAnnotation: "2026-03-01T10:00:00Z"})
	require.NoError(t, err)
	_, err = run(l, map[string]any{ledger.RotateAnnotation: "2026-03-01T10:00:00Z"})
	require.NoError(t, err)
	require.Len(t, ids, 5)
	require.Equal(t, []string{ids[0], ids[0], ids[0]}, ids[:3], "re-runs reuse")
	require.NotEqual(t, ids[0], ids[3], "the annotation rotates")
	require.Equal(t, ids[3], ids[4], "once")
	creds := res.Status["credentials"].([]any)[0].(map[string]any)
	require.Equal(t, ids[3], creds["id"])
	require.Equal(t, "forced", creds["issuedBecause"])
}

// countingLedger counts the calls that reach a real ledger.
type countingLedger struct {
	ledger.Ledger
	gets, puts int
}

func (c *countingLedger) Get(ctx context.Context, key ledger.Key) (ledger.Entry, bool, error) {
	c.gets++
	return c.Ledger.Get(ctx, key)
}

func (c *countingLedger) Put(ctx context.Context, key ledger.Key, e ledger.Entry) (ledger.Entry, error) {
	c.puts++
	return c.Ledger.Put(ctx, key, e)
}

func TestSettleIssuedReadsOnceOnAnUnchangedRerun(t *testing.T) {
	ctx := context.Background()
	f, err := ledger.NewFolder(filepath.Join(t.TempDir(), "ledger"))
	require.NoError(t, err)
	l := &countingLedger{Ledger: f}
	key := ledger.Key{Owner: newOwner(t), Credential: "password"}
	mint := func(context.Context) (ledger.Entry, error) {
		return ledger.Entry{Data: map[string][]byte{"p": []byte("x")}}, nil
	}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

	// First run: minted, recorded, then settled (read and marked used).
	is, err := ledger.Obtain(ctx, l, key, ledger.Policy{}, now, mint)
	require.NoError(t, err)
	require.True(t, is.Decision.Mint)
	require.NoError(t, ledger.SettleIssued(ctx, l, is))
	e, found, err := f.Get(ctx, key)
	require.NoError(t, err)
	require.True(t, found)
	require.True(t, e.Used)
	require.Equal(t, 2, l.gets)
	require.Equal(t, 2, l.puts)

	// Unchanged re-run: one read, no write.
	l.gets, l.puts = 0, 0
	is, err = ledger.Obtain(ctx, l, key, ledger.Policy{}, now, mint)
	require.NoError(t, err)
	require.False(t, is.Decision.Mint)
	require.NoError(t, ledger.SettleIssued(ctx, l, is))
	require.Equal(t, 1, l.gets)
	require.Zero(t, l.puts)

	// A credential recorded but never settled (a crash before use) is
	// settled by the next run, though Obtain reuses it.
	other := ledger.Key{Owner: newOwner(t), Credential: "password"}
	first, err := ledger.Obtain(ctx, l, other, ledger.Policy{}, now, mint)
	require.NoError(t, err)
	again, err := ledger.Obtain(ctx, l, other, ledger.Policy{}, now, mint)
	require.NoError(t, err)
	require.False(t, again.Decision.Mint)
	require.Equal(t, first.Entry.ID, again.Entry.ID)
	require.NoError(t, ledger.SettleIssued(ctx, l, again))
	e, _, err = f.Get(ctx, other)
	require.NoError(t, err)
	require.True(t, e.Used)
}
