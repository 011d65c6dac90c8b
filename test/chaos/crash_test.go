// Package chaos holds the crash test: the controller runs as its own
// process against a real control plane, a real Git server and a real
// PostgreSQL, and is killed with SIGKILL at random moments while it
// reconciles many requests; afterwards everything must have converged with
// no duplicate credential, no orphan and no plaintext in Git.
package chaos

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"promised.dev/promised/cmd/builtin"
	"promised.dev/promised/pipelines/local"
)

// The crash test's size: what fits `make test` by default; `make
// chaos-crash` runs 1,000 requests and 20 kills.
var (
	flagRequests = flag.Int("requests", 60, "requests to create")
	flagKills    = flag.Int("kills", 4, "times the controller is killed with SIGKILL")
	flagTimeout  = flag.Duration("converge-timeout", 5*time.Minute, "how long convergence (and deletion) may take")
	flagSeed     = flag.Uint64("seed", 0, "random seed (0: from the clock; printed)")
)

// TestCrash kills the controller at random moments while it reconciles,
// then checks every invariant.
func TestCrash(t *testing.T) {
	runCrash(t, crashOptions{requests: *flagRequests, kills: *flagKills, timeout: *flagTimeout, seed: *flagSeed})
}

type crashOptions struct {
	requests, kills int
	timeout         time.Duration
	seed            uint64
}

// The request kinds.
var (
	gvrTeam       = schema.GroupVersionResource{Group: "example.promised.dev", Version: "v1", Resource: "teams"}
	gvrDatabase   = schema.GroupVersionResource{Group: "database.promised.dev", Version: "v1", Resource: "databases"}
	gvrAggregator = schema.GroupVersionResource{Group: "gateway.promised.dev", Version: "v1alpha1", Resource: "apiaggregators"}
	gvrTarget     = schema.GroupVersionResource{Group: "gateway.promised.dev", Version: "v1alpha1", Resource: "apiaggregatortargets"}
)

// aggregatorNamespace holds the aggregators; teamNamespaces the rest.
const aggregatorNamespace = "platform"

func teamNamespace(i int) string { return fmt.Sprintf("chaos-%d", i%8) }

// request is one request the test made and what it expects of it.
type request struct {
	gvr      schema.GroupVersionResource
	promise  string // the Promise's name, as in the store's layout
	obj      *unstructured.Unstructured
	plan     string // Database: shared or dedicated
	dbName   string // Database: spec.databaseName
	secret   string // Database: spec.secretName
	deletion string // Database: Retain or Delete
	uid      string // set once created
}

func (r *request) ns() string   { return r.obj.GetNamespace() }
func (r *request) name() string { return r.obj.GetName() }
func (r *request) ref() string  { return r.promise + " " + r.ns() + "/" + r.name() }

// mix makes n requests: a few aggregators, ApiAggregatorTargets under
// them, Databases on the shared plan (a real role and database each) and
// on the dedicated plan (half and a third with deletionPolicy Delete), and
// Teams for the rest.
func mix(n int) (aggregators, rest []*request) {
	nAgg := 1
	if n >= 200 {
		nAgg = 2
	}
	nShared := min(max(n/10, 3), 100)
	nDedicated := max(n/20, 2)
	nTargets := max(n/10, 3)
	nTeams := n - nAgg - nShared - nDedicated - nTargets
	for k := range nAgg {
		aggregators = append(aggregators, &request{gvr: gvrAggregator, promise: "apiaggregator", obj: &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "gateway.promised.dev/v1alpha1", "kind": "ApiAggregator",
			"metadata": map[string]any{"name": fmt.Sprintf("agg-%d", k), "namespace": aggregatorNamespace},
			"spec": map[string]any{
				"hostnames":        []any{fmt.Sprintf("api-%d.chaos.example.com", k)},
				"gateway":          map[string]any{"dedicated": map[string]any{"gatewayClassName": "eg"}},
				"targetNamespaces": map[string]any{"from": "All"},
			},
		}}})
	}
	for i := range nTargets {
		rest = append(rest, &request{gvr: gvrTarget, promise: "apiaggregatortarget", obj: &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "gateway.promised.dev/v1alpha1", "kind": "ApiAggregatorTarget",
			"metadata": map[string]any{"name": fmt.Sprintf("api-%04d", i), "namespace": teamNamespace(i)},
			"spec": map[string]any{
				"aggregator": map[string]any{"name": fmt.Sprintf("agg-%d", i%nAgg), "namespace": aggregatorNamespace},
				"routes":     []any{map[string]any{"path": map[string]any{"type": "PathPrefix", "value": fmt.Sprintf("/t%04d", i)}}},
				"backend":    map[string]any{"name": fmt.Sprintf("svc-%04d", i), "port": int64(8080)},
			},
		}}})
	}
	db := func(i int, plan, dbName, policy string) *request {
		name := fmt.Sprintf("%s-%04d", map[string]string{"shared": "sh", "dedicated": "dd"}[plan], i)
		return &request{gvr: gvrDatabase, promise: "database", plan: plan, dbName: dbName, secret: name + "-db", deletion: policy,
			obj: &unstructured.Unstructured{Object: map[string]any{
				"apiVersion": "database.promised.dev/v1", "kind": "Database",
				"metadata": map[string]any{"name": name, "namespace": teamNamespace(i)},
				"spec": map[string]any{"plan": plan, "databaseName": dbName, "secretName": name + "-db",
					"deletionPolicy": policy},
			}}}
	}
	for i := range nShared {
		policy := "Retain"
		if i%2 == 0 {
			policy = "Delete"
		}
		rest = append(rest, db(i, "shared", fmt.Sprintf("chaos_sh_%04d", i), policy))
	}
	for i := range nDedicated {
		policy := "Retain"
		if i%3 == 0 {
			policy = "Delete"
		}
		rest = append(rest, db(i, "dedicated", fmt.Sprintf("chaos_dd_%04d", i), policy))
	}
	for i := range nTeams {
		rest = append(rest, &request{gvr: gvrTeam, promise: "team", obj: &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "example.promised.dev/v1", "kind": "Team",
			"metadata": map[string]any{"name": fmt.Sprintf("team-%04d", i), "namespace": teamNamespace(i)},
			"spec":     map[string]any{"owner": fmt.Sprintf("owner%d@example.com", i), "slack": fmt.Sprintf("#team-%d", i)},
		}}})
	}
	return aggregators, rest
}

func runCrash(t *testing.T, o crashOptions) {
	ctx := context.Background()
	if o.seed == 0 {
		o.seed = uint64(time.Now().UnixNano())
	}
	rng := rand.New(rand.NewPCG(o.seed, o.seed^0x9e3779b97f4a7c15))
	t.Logf("seed %d (rerun with -args -seed %d): %d requests, %d kills", o.seed, o.seed, o.requests, o.kills)
	noteNatsUser(t)
	start := time.Now()
	p := startPlatform(ctx, t)
	tUp := time.Since(start)

	aggregators, rest := mix(o.requests)
	all := append(append([]*request{}, aggregators...), rest...)
	for _, ns := range []string{aggregatorNamespace} {
		must(t, p.EnsureNamespace(ctx, ns))
	}
	for i := range 8 {
		must(t, p.EnsureNamespace(ctx, teamNamespace(i)))
	}
	// The aggregators first: a target whose aggregator is not placed yet
	// waits a minute for the controller's retry, which only slows the run.
	for _, r := range aggregators {
		must(t, p.create(ctx, r))
	}
	must(t, p.waitReady(ctx, aggregators, 2*time.Minute))

	// Kills during creation and convergence; a quarter during deletion.
	createKills := o.kills - o.kills/4
	deleteKills := o.kills / 4

	phase := time.Now()
	chaosDone := p.chaos(rng, createKills)
	must(t, parallel(8, rest, func(r *request) error { return p.create(ctx, r) }))
	tCreate := time.Since(phase)
	if err := <-chaosDone; err != nil {
		t.Fatalf("during the kills: %v", err)
	}
	tChaos := time.Since(phase)
	if err := p.waitReady(ctx, all, o.timeout); err != nil {
		t.Fatal(err)
	}
	tConverge := time.Since(phase)

	phase = time.Now()
	rep := p.verify(ctx, t, all)
	tVerify := time.Since(phase)
	for _, f := range rep.failures {
		t.Error(f)
	}

	// Delete everything, killing the controller while it runs the delete
	// workflows, and check that everything of theirs goes.
	phase = time.Now()
	chaosDone = p.chaos(rng, deleteKills)
	must(t, parallel(8, all, func(r *request) error {
		err := p.Dynamic.Resource(r.gvr).Namespace(r.ns()).Delete(ctx, r.name(), metav1.DeleteOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		return err
	}))
	if err := <-chaosDone; err != nil {
		t.Fatalf("during the kills: %v", err)
	}
	if err := p.waitGone(ctx, all, o.timeout); err != nil {
		t.Fatal(err)
	}
	tDelete := time.Since(phase)
	drep := p.verifyDeleted(ctx, all)
	for _, f := range drep.failures {
		t.Error(f)
	}

	kills := p.restarts
	t.Logf("requests %d/%d Ready, %d duplicate credentials, %d orphans, %d plaintext leaks, %d kills survived",
		rep.ready, len(all), rep.duplicates, rep.orphans+drep.orphans, rep.leaks, kills)
	t.Logf("checked: %d outputs in Git (%d commits), %d shared roles in PostgreSQL, %d credentials unsealed and %d connected with, %d SealedSecret versions in the history unsealed, %d ledger entries; after deletion: %d folders, %d roles, %d ledger entries left (%d roles and %d ledger entries retained by deletionPolicy Retain)",
		rep.outputs, rep.commits, rep.roles, rep.credentials, rep.connected, rep.sealedVersions, rep.ledger,
		drep.folders, drep.roles, drep.ledger, drep.retainedRoles, drep.retainedLedger)
	t.Logf("timings: platform up %s, creation %s (kills done at %s), converged %s after creation began, checks %s, deletion %s; total %s",
		round(tUp), round(tCreate), round(tChaos), round(tConverge), round(tVerify), round(tDelete), round(time.Since(start)))
}

func round(d time.Duration) time.Duration { return d.Round(100 * time.Millisecond) }

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// parallel runs f over rs with n workers and returns the first error.
func parallel(n int, rs []*request, f func(*request) error) error {
	ch := make(chan *request)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	for range n {
		wg.Go(func() {
			for r := range ch {
				if err := f(r); err != nil {
					mu.Lock()
					if first == nil {
						first = fmt.Errorf("%s: %w", r.ref(), err)
					}
					mu.Unlock()
				}
			}
		})
	}
	for _, r := range rs {
		ch <- r
	}
	close(ch)
	wg.Wait()
	return first
}

func (p *platform) create(ctx context.Context, r *request) error {
	got, err := p.Dynamic.Resource(r.gvr).Namespace(r.ns()).Create(ctx, r.obj.DeepCopy(), metav1.CreateOptions{})
	if err != nil {
		return err
	}
	r.uid = string(got.GetUID())
	return nil
}

// chaos kills the controller n times, each after a random 0.2 to 3 s of
// work, restarting it at once on the same state folder.
func (p *platform) chaos(rng *rand.Rand, n int) <-chan error {
	done := make(chan error, 1)
	delays := make([]time.Duration, n)
	for i := range delays {
		delays[i] = 200*time.Millisecond + time.Duration(rng.Int64N(int64(2800*time.Millisecond)))
	}
	go func() {
		for _, d := range delays {
			time.Sleep(d)
			if err := p.kill(); err != nil {
				done <- err
				return
			}
			if err := p.StartController(context.Background()); err != nil {
				done <- fmt.Errorf("restarting after kill %d: %w", p.restarts+1, err)
				return
			}
			p.restarts++
		}
		done <- nil
	}()
	return done
}

// waitReady waits until every request is Ready for its current
// generation, and lists the ones that are not when it gives up.
func (p *platform) waitReady(ctx context.Context, rs []*request, timeout time.Duration) error {
	var notReady []string
	last := time.Now()
	err := p.poll(ctx, timeout, "requests Ready", func() (bool, error) {
		if time.Since(last) > 15*time.Second {
			last = time.Now()
			p.t.Logf("%d/%d requests Ready", len(rs)-len(notReady), len(rs))
		}
		notReady = notReady[:0]
		for _, r := range rs {
			got, err := p.Dynamic.Resource(r.gvr).Namespace(r.ns()).Get(ctx, r.name(), metav1.GetOptions{})
			if err != nil {
				notReady = append(notReady, r.ref()+": "+err.Error())
				continue
			}
			if !readyNow(got) {
				notReady = append(notReady, r.ref()+": "+readyMessage(got))
			}
		}
		return len(notReady) == 0, nil
	})
	if err != nil {
		return fmt.Errorf("%w: %d of %d requests not Ready, first ones:\n  %s", err, len(notReady), len(rs), strings.Join(notReady[:min(10, len(notReady))], "\n  "))
	}
	return nil
}

// waitGone waits until every request is gone (its finalizer released).
func (p *platform) waitGone(ctx context.Context, rs []*request, timeout time.Duration) error {
	var left []string
	err := p.poll(ctx, timeout, "requests deleted", func() (bool, error) {
		left = left[:0]
		for _, r := range rs {
			got, err := p.Dynamic.Resource(r.gvr).Namespace(r.ns()).Get(ctx, r.name(), metav1.GetOptions{})
			if apierrors.IsNotFound(err) {
				continue
			}
			if err != nil {
				left = append(left, r.ref()+": "+err.Error())
				continue
			}
			left = append(left, r.ref()+": "+readyMessage(got))
		}
		return len(left) == 0, nil
	})
	if err != nil {
		return fmt.Errorf("%w: %d of %d requests not deleted, first ones:\n  %s", err, len(left), len(rs), strings.Join(left[:min(10, len(left))], "\n  "))
	}
	return nil
}

// noteNatsUser says why the NatsUser promise is not part of the run: it
// joins only once its stages are built into promised (cmd/builtin).
func noteNatsUser(t *testing.T) {
	reg, err := builtin.Registry()
	if err != nil {
		t.Fatal(err)
	}
	pr, err := local.LoadPromise("../../promises/natsuser")
	if err != nil {
		t.Logf("NatsUser left out: %v", err)
		return
	}
	for _, pl := range pr.Spec.Workflows.Resource.Configure {
		for _, c := range pl.Spec.Containers {
			if _, ok := reg.Lookup(c.Image); !ok {
				t.Logf("NatsUser left out: its stage %s is not registered in cmd/builtin", c.Image)
				return
			}
		}
	}
	t.Logf("NatsUser is registered in cmd/builtin but this test does not request it yet")
}
