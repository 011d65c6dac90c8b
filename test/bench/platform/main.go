// Command platform benchmarks the whole platform at scale and prints what
// it measured beside the targets and beside the limits of the machine it
// ran on:
//
//  1. a platform control plane (kube-apiserver + etcd), a real Git server,
//     two destinations with sealing certificates, and `promised controller`
//     built from this tree and run as its own process with its default
//     settings;
//  2. N requests created at once, spread over the promises that are
//     present and Ready, until every one is Ready with its commit pushed;
//  3. a forced re-reconcile of all of them, which must commit and write
//     nothing;
//  4. one Promise change that alters every request's output;
//  5. the same objects written by a bare client to the same apiserver, and
//     the same output written by the state store alone to the same Git
//     server: the ceilings our figures are compared with.
//
// Run it with `make bench` (1,000 requests) or `make bench-10k`:
//
//	go run ./test/bench/platform -requests 1000 [-json] [-profile DIR]
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"promised.dev/promised/test/liveplatform"
)

type options struct {
	requests        int
	concurrency     int
	gitCallers      int
	json            bool
	profileDir      string
	promisedBin     string
	root            string
	keep            bool
	sharedDatabases int
	aggregators     int
	timeout         time.Duration
	only            map[string]bool
	ceilings        bool
	controllerArgs  []string
}

func main() {
	var o options
	var only string
	flag.IntVar(&o.requests, "requests", 1000, "requests to create")
	flag.IntVar(&o.concurrency, "concurrency", 16, "clients creating and annotating requests at once (and the bare client's ceiling)")
	flag.IntVar(&o.gitCallers, "git-callers", 64, "concurrent callers of the state store's Git ceiling")
	flag.BoolVar(&o.json, "json", false, "print the report as JSON instead of a table")
	flag.StringVar(&o.profileDir, "profile", "", "save the controller's CPU (per phase) and heap profiles to this folder and print their tops")
	flag.StringVar(&o.promisedBin, "promised", "", "a promised binary to run (default: go build ./cmd/promised from this tree)")
	flag.StringVar(&o.root, "root", "", "the repository's root (default: found from the working directory)")
	flag.BoolVar(&o.keep, "keep", false, "keep the work folder (logs, Git repositories, kubeconfig)")
	flag.IntVar(&o.sharedDatabases, "shared-databases", 200, "at most this many Database requests on the shared plan (a real PostgreSQL)")
	flag.IntVar(&o.aggregators, "aggregators", 5, "ApiAggregators the targets are spread over")
	flag.DurationVar(&o.timeout, "timeout", 0, "how long each phase may take (default 3m + 100ms per request)")
	flag.StringVar(&only, "promises", "", "comma-separated workloads to include (default: every one present and Ready)")
	flag.BoolVar(&o.ceilings, "ceilings", true, "measure the bare-client and Git ceilings")
	var ctrlArgs string
	flag.StringVar(&ctrlArgs, "controller-args", "", "extra flags for promised controller, space-separated, for experiments (the report's figures and targets are for its defaults)")
	flag.Parse()
	o.controllerArgs = strings.Fields(ctrlArgs)
	if o.timeout == 0 {
		o.timeout = 3*time.Minute + time.Duration(o.requests)*100*time.Millisecond
	}
	if only != "" {
		o.only = map[string]bool{}
		for _, s := range strings.Split(only, ",") {
			o.only[strings.TrimSpace(s)] = true
		}
	}
	if o.root == "" {
		root, err := findRoot()
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(2)
		}
		o.root = root
	}
	if o.profileDir != "" {
		if err := os.MkdirAll(o.profileDir, 0o755); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(2)
		}
		o.profileDir, _ = filepath.Abs(o.profileDir)
	}
	// The clients log through controller-runtime; the report is the output.
	ctrllog.SetLogger(logr.Discard())
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, err := run(ctx, o)
	if rep != nil {
		if o.json {
			enc := json.NewEncoder(os.Stdout)
			enc.SetIndent("", "  ")
			_ = enc.Encode(rep)
		} else {
			rep.print(os.Stdout)
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, ">> %s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

func findRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && strings.Contains(string(b), "module promised.dev/promised\n") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("not inside the promised repository: pass -root")
		}
		dir = parent
	}
}

// planned is one request of the run.
type planned struct {
	w   *workload
	key string
	obj *unstructured.Unstructured
}

func run(ctx context.Context, o options) (*report, error) {
	rep := &report{Requests: o.requests, Concurrency: o.concurrency, CPUs: runtime.NumCPU(), GoVersion: runtime.Version(), LoadBefore: loadAverage(), ControllerArgs: o.controllerArgs}
	start := time.Now()
	progress("starting the platform: control plane, Git server, controller (go build ./cmd/promised)")
	p, err := startPlatform(ctx, o)
	if err != nil {
		return nil, err
	}
	defer p.close(o.keep)
	progress("platform up in %s; controller pid %d, log %s", time.Since(start).Round(time.Millisecond), p.Controller.PID(), p.Controller.LogPath)
	for _, ns := range benchNamespaces {
		if err := p.EnsureNamespace(ctx, ns); err != nil {
			return nil, err
		}
	}

	ws, err := includeWorkloads(ctx, o, p, rep)
	if err != nil {
		return rep, err
	}
	defer func() {
		for _, w := range ws {
			if w.close != nil {
				w.close()
			}
		}
	}()
	reqs, err := plan(o.requests, ws, rep)
	if err != nil {
		return rep, err
	}
	gvrs := map[schema.GroupVersionResource]bool{}
	var list []schema.GroupVersionResource
	for _, w := range ws {
		if !gvrs[w.gvr] {
			gvrs[w.gvr] = true
			list = append(list, w.gvr)
		}
	}
	tr, err := newTracker(ctx, p.Dynamic, list)
	if err != nil {
		return rep, err
	}
	defer tr.stop()
	keys := make([]string, len(reqs))
	for i, r := range reqs {
		keys[i] = r.key
	}
	ph := &phases{o: o, p: p, tr: tr, reqs: reqs, keys: keys, rep: rep}
	for _, step := range []func(context.Context) error{ph.create, ph.rereconcile, ph.change, ph.ceilings} {
		if err := step(ctx); err != nil {
			ph.finish()
			return rep, err
		}
	}
	ph.finish()
	return rep, nil
}

// includeWorkloads loads, sets up, installs and probes every candidate,
// keeping those whose requests become Ready here.
func includeWorkloads(ctx context.Context, o options, p *platform, rep *report) ([]*workload, error) {
	var ok []*workload
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, w := range candidates(o) {
		wg.Go(func() {
			err := func() error {
				if err := w.load(o.root); err != nil {
					return err
				}
				if w.setup != nil {
					if err := w.setup(ctx, p); err != nil {
						return fmt.Errorf("platform setup: %w", err)
					}
				}
				if err := w.install(ctx, p); err != nil {
					return err
				}
				if w.prepare != nil {
					if err := w.prepare(ctx, p); err != nil {
						return err
					}
				}
				if w.allocate != nil {
					w.allocate(o.requests)
				}
				return w.probe(ctx, p)
			}()
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				progress("leaving out %s: %v", w.name, err)
				rep.Excluded = append(rep.Excluded, excluded{Promise: w.name, Reason: err.Error()})
				if w.close != nil {
					w.close()
				}
				return
			}
			ok = append(ok, w)
		})
	}
	wg.Wait()
	if len(ok) == 0 {
		return nil, fmt.Errorf("no promise could be included")
	}
	// Keep the team example first: it takes the remainder of the split.
	sort.Slice(ok, func(i, j int) bool { return order(ok[i].name) < order(ok[j].name) })
	sort.Slice(rep.Excluded, func(i, j int) bool { return order(rep.Excluded[i].Promise) < order(rep.Excluded[j].Promise) })
	return ok, nil
}

func order(name string) int {
	for i, n := range []string{"team", "natsuser", "database", "apiaggregator-target"} {
		if n == name {
			return i
		}
	}
	return 99
}

// split divides n requests between workloads: equal shares within each
// one's limit, the remainder to the first.
func split(n int, limits []int) []int {
	out := make([]int, len(limits))
	left, open := n, 0
	for _, l := range limits {
		if l == 0 {
			open++
		}
	}
	// Capped workloads first take what they can of an equal share.
	share := n / max(1, len(limits))
	for i, l := range limits {
		if l > 0 {
			out[i] = min(l, share)
			left -= out[i]
		}
	}
	if open == 0 {
		return out
	}
	each := left / open
	first := true
	for i, l := range limits {
		if l == 0 {
			out[i] = each
			if first {
				out[i] += left - each*open
				first = false
			}
		}
	}
	return out
}

// plan makes the run's requests, interleaving the workloads so that every
// promise's requests arrive throughout the create phase.
func plan(n int, ws []*workload, rep *report) ([]planned, error) {
	limits := make([]int, len(ws))
	for i, w := range ws {
		limits[i] = w.limit
	}
	counts := split(n, limits)
	per := make([][]planned, len(ws))
	for wi, w := range ws {
		if w.allocate != nil {
			w.allocate(counts[wi])
		}
		for i := range counts[wi] {
			u, err := w.request(i, benchNamespaces[i%len(benchNamespaces)])
			if err != nil {
				return nil, err
			}
			per[wi] = append(per[wi], planned{w: w, key: key(w.gvr, u.GetNamespace(), u.GetName()), obj: u})
		}
		rep.Included = append(rep.Included, included{Promise: w.name, Requests: counts[wi], Note: w.note})
	}
	var out []planned
	for i := 0; len(out) < n; i++ {
		for wi := range per {
			if i < len(per[wi]) {
				out = append(out, per[wi][i])
			}
		}
	}
	return out, nil
}

// phases runs the measured phases over one platform.
type phases struct {
	o    options
	p    *platform
	tr   *tracker
	reqs []planned
	keys []string
	rep  *report
	// final is every request's state when the last phase ended.
	final map[string]reqState
}

// mark is the controller's counters and the Git history at one moment.
type mark struct {
	at      time.Time
	counts  counts
	methods map[string]float64
	proc    procStats
	machine machineCPU
	commits int
}

func (ph *phases) mark(ctx context.Context) (mark, error) {
	m := mark{at: time.Now()}
	ms, err := scrape(ctx, ph.p.Controller.MetricsURL)
	if err != nil {
		return m, err
	}
	m.counts, m.methods = ms.counts(), ms.byMethod()
	if m.proc, err = readProc(ph.p.Controller.PID()); err != nil {
		return m, err
	}
	if m.machine, err = readMachineCPU(); err != nil {
		return m, fmt.Errorf("reading CPU times: %w", err)
	}
	m.commits, err = ph.p.CommitCount(liveplatform.StateRepo)
	return m, err
}

// delta fills the common figures of a phase from two marks.
func delta(a, b mark, n int) phaseFigures {
	d := b.counts.sub(a.counts)
	f := phaseFigures{
		Reconciles: d.Reconciles, ReconcilesPerRequest: d.Reconciles / float64(n),
		Commits: b.commits - a.commits, ChangedWrites: d.ChangedWrites, StatusWrites: d.StatusWrites,
		APIWrites: d.APIWrites, APIReads: d.APIReads,
		APIWritesPerRequest: d.APIWrites / float64(n), APIReadsPerRequest: d.APIReads / float64(n),
		APIByMethod:          subMethods(b.methods, a.methods),
		ControllerCPUSeconds: b.proc.CPUSeconds - a.proc.CPUSeconds,
		Means: means{
			Reconcile:  b.counts.ReconcileTime.meanSince(a.counts.ReconcileTime),
			QueueWait:  b.counts.QueueWait.meanSince(a.counts.QueueWait),
			Pipeline:   b.counts.Pipeline.meanSince(a.counts.Pipeline),
			StoreWrite: b.counts.StoreWrite.meanSince(a.counts.StoreWrite),
			APIRequest: b.counts.APILatency.meanSince(a.counts.APILatency),
			// A sum, not a mean: the total says whether the limit matters.
			RateLimitedTotal: b.counts.RateLimited.Sum - a.counts.RateLimited.Sum,
		},
		PipelineByPromise: map[string]float64{},
	}
	f.CPUByProcess, f.MachineBusy = b.machine.sub(a.machine, f.ControllerCPUSeconds)
	for promise, t := range b.counts.PipelineBy {
		if m := t.meanSince(a.counts.PipelineBy[promise]); m > 0 {
			f.PipelineByPromise[promise] = m
		}
	}
	return f
}

// forEach runs f over the requests from the configured number of clients
// and returns the first error.
func (ph *phases) forEach(ctx context.Context, f func(planned) error) error {
	work := make(chan planned, len(ph.reqs))
	for _, r := range ph.reqs {
		work <- r
	}
	close(work)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	for range ph.o.concurrency {
		wg.Go(func() {
			for r := range work {
				if err := f(r); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	return first
}

func (ph *phases) create(ctx context.Context) error {
	n := len(ph.reqs)
	before, err := ph.mark(ctx)
	if err != nil {
		return err
	}
	ready := ph.tr.expect(ph.keys, func(_ string, s *reqState) bool { return s.ready })
	cpu := recordCPU(ctx, ph.p.Controller, ph.o.profileDir, "create")
	progress("creating %d requests from %d clients", n, ph.o.concurrency)
	var mu sync.Mutex
	created := make(map[string]time.Time, n)
	start := time.Now()
	err = ph.forEach(ctx, func(r planned) error {
		_, err := ph.p.Dynamic.Resource(r.w.gvr).Namespace(r.obj.GetNamespace()).Create(ctx, r.obj, metav1.CreateOptions{})
		now := time.Now()
		mu.Lock()
		created[r.key] = now
		mu.Unlock()
		return err
	})
	if err != nil {
		return fmt.Errorf("creating requests: %w", err)
	}
	createdIn := time.Since(start)
	progress("created in %s; waiting for every request to be Ready with its commit pushed", createdIn.Round(time.Millisecond))
	met, err := ph.tr.wait(ctx, ready, ph.o.timeout, ph.p.Controller.Alive)
	if err != nil {
		_, _ = cpu.stop()
		return err
	}
	// The counters move when a reconcile returns, just after the status
	// that made a request Ready: let the last ones finish.
	ph.drain(ctx)
	after, err := ph.mark(ctx)
	if err != nil {
		return err
	}
	var last time.Time
	lat := make([]time.Duration, 0, n)
	for k, t := range met {
		if t.After(last) {
			last = t
		}
		lat = append(lat, max(0, t.Sub(created[k])))
	}
	f := delta(before, after, n)
	ph.rep.Create = createFigures{phaseFigures: f, Seconds: last.Sub(start).Seconds(), CreateSeconds: createdIn.Seconds(),
		P50: percentile(lat, 50).Seconds(), P99: percentile(lat, 99).Seconds(), Max: percentile(lat, 100).Seconds()}
	progress("all %d Ready after %.1fs (p50 %.1fs, p99 %.1fs); %d commits", n, ph.rep.Create.Seconds, ph.rep.Create.P50, ph.rep.Create.P99, f.Commits)
	if path, err := cpu.stop(); err == nil && path != "" {
		ph.rep.Profiles.CPUCreate = path
	} else if err != nil {
		progress("CPU profile: %v", err)
	}
	if ph.o.profileDir != "" {
		path := filepath.Join(ph.o.profileDir, "heap.pb.gz")
		if err := ph.p.Controller.Fetch(ctx, "heap", path, 0); err != nil {
			progress("heap profile: %v", err)
		} else {
			ph.rep.Profiles.Heap = path
		}
	}
	return ph.verifyPushed()
}

// verifyPushed checks what Ready claims: every request's status names a
// commit on the server's branch, and its folder is in the branch's head.
func (ph *phases) verifyPushed() error {
	st := ph.tr.snapshot(ph.keys)
	commits := map[string]bool{}
	for _, s := range st {
		commits[s.commit] = true
	}
	for c := range commits {
		if c == "" {
			return fmt.Errorf("a Ready request has no commit in its status")
		}
		if _, err := ph.p.Git(liveplatform.StateRepo, "merge-base", "--is-ancestor", c, "main"); err != nil {
			return fmt.Errorf("commit %s named by a request's status is not on the server's main: %w", c, err)
		}
	}
	out, err := ph.p.Git(liveplatform.StateRepo, "ls-tree", "-r", "--name-only", "main")
	if err != nil {
		return err
	}
	dirs := map[string]bool{}
	for _, line := range strings.Split(out, "\n") {
		// <destination>/resources/<namespace>/<promise>/<name>/<pipeline>/...
		parts := strings.Split(line, "/")
		if len(parts) >= 6 && parts[1] == "resources" {
			dirs[parts[2]+"/"+parts[3]+"/"+parts[4]] = true
		}
	}
	missing := 0
	for _, r := range ph.reqs {
		if !dirs[r.obj.GetNamespace()+"/"+r.w.promise.Name+"/"+r.obj.GetName()] {
			missing++
		}
	}
	ph.rep.Create.DistinctCommits = len(commits)
	ph.rep.Create.FoldersOnHead = len(ph.reqs) - missing
	if missing > 0 {
		return fmt.Errorf("%d Ready requests have no folder in the pushed head", missing)
	}
	return nil
}

func (ph *phases) rereconcile(ctx context.Context) error {
	n := len(ph.reqs)
	before, err := ph.mark(ctx)
	if err != nil {
		return err
	}
	cpu := recordCPU(ctx, ph.p.Controller, ph.o.profileDir, "rereconcile")
	patch := fmt.Appendf(nil, `{"metadata":{"annotations":{"promised.dev/reconcile-at":%q}}}`, time.Now().Format(time.RFC3339Nano))
	progress("forcing a re-reconcile of all %d requests (promised.dev/reconcile-at)", n)
	start := time.Now()
	err = ph.forEach(ctx, func(r planned) error {
		_, err := ph.p.Dynamic.Resource(r.w.gvr).Namespace(r.obj.GetNamespace()).Patch(ctx, r.obj.GetName(), types.MergePatchType, patch, metav1.PatchOptions{})
		return err
	})
	if err != nil {
		return fmt.Errorf("annotating requests: %w", err)
	}
	annotated := time.Since(start)
	var done time.Time
	err = ph.p.Poll(ctx, ph.o.timeout, 100*time.Millisecond, "the forced re-reconcile to finish", func() (bool, error) {
		if err := ph.p.Controller.Alive(); err != nil {
			return false, err
		}
		ms, err := scrape(ctx, ph.p.Controller.MetricsURL)
		if err != nil {
			return false, err
		}
		c := ms.counts()
		done = time.Now()
		return c.Reconciles-before.counts.Reconciles >= float64(n) && c.QueueDepth == 0 && c.ActiveWorkers == 0, nil
	})
	if err != nil {
		_, _ = cpu.stop()
		return err
	}
	after, err := ph.mark(ctx)
	if err != nil {
		return err
	}
	ph.rep.Rereconcile = rereconcileFigures{phaseFigures: delta(before, after, n), Seconds: done.Sub(start).Seconds(), AnnotateSeconds: annotated.Seconds()}
	progress("re-reconciled in %.1fs: %d commits, %.0f status writes", ph.rep.Rereconcile.Seconds, ph.rep.Rereconcile.Commits, ph.rep.Rereconcile.StatusWrites)
	if path, err := cpu.stop(); err == nil {
		ph.rep.Profiles.CPURereconcile = path
	}
	return nil
}

func (ph *phases) change(ctx context.Context) error {
	ws := map[*workload]bool{}
	for _, r := range ph.reqs {
		ws[r.w] = true
	}
	var affected []string
	old := ph.tr.snapshot(ph.keys)
	for _, r := range ph.reqs {
		if r.w.change != nil && r.w.affected(r.obj) {
			affected = append(affected, r.key)
		}
	}
	if len(affected) == 0 {
		ph.rep.Change.Skipped = "no included promise has a change that alters its requests' output"
		return nil
	}
	before, err := ph.mark(ctx)
	if err != nil {
		return err
	}
	rerendered := ph.tr.expect(affected, func(k string, s *reqState) bool { return s.ready && s.digest != old[k].digest })
	cpu := recordCPU(ctx, ph.p.Controller, ph.o.profileDir, "change")
	start := time.Now()
	for _, name := range []string{"team", "natsuser", "database", "apiaggregator-target"} {
		for w := range ws {
			if w.name != name || w.change == nil {
				continue
			}
			desc, err := w.change(ctx, ph.p)
			if err != nil {
				return fmt.Errorf("changing promise %s: %w", w.promise.Name, err)
			}
			ph.rep.Change.Changes = append(ph.rep.Change.Changes, desc)
		}
	}
	progress("changed the promises; waiting for %d requests to be re-rendered and committed", len(affected))
	met, err := ph.tr.wait(ctx, rerendered, ph.o.timeout, ph.p.Controller.Alive)
	if err != nil {
		_, _ = cpu.stop()
		return err
	}
	var last time.Time
	for _, t := range met {
		if t.After(last) {
			last = t
		}
	}
	// Count what the whole change cost: wait for the queue to drain (the
	// unaffected requests of a changed promise run too).
	ph.drain(ctx)
	after, err := ph.mark(ctx)
	if err != nil {
		return err
	}
	ph.rep.Change.phaseFigures = delta(before, after, len(affected))
	ph.rep.Change.Requests = len(affected)
	ph.rep.Change.Seconds = last.Sub(start).Seconds()
	progress("re-rendered in %.1fs: %d commits", ph.rep.Change.Seconds, ph.rep.Change.Commits)
	if path, err := cpu.stop(); err == nil {
		ph.rep.Profiles.CPUChange = path
	}
	return nil
}

// drain waits, a minute at most, until no request is queued or being
// reconciled, so that the counters include the last reconciles.
func (ph *phases) drain(ctx context.Context) {
	_ = ph.p.Poll(ctx, time.Minute, 100*time.Millisecond, "the queue to drain", func() (bool, error) {
		ms, err := scrape(ctx, ph.p.Controller.MetricsURL)
		if err != nil {
			return false, err
		}
		c := ms.counts()
		return c.QueueDepth == 0 && c.ActiveWorkers == 0, nil
	})
}

func (ph *phases) ceilings(ctx context.Context) error {
	ph.final = ph.tr.snapshot(ph.keys)
	if !ph.o.ceilings {
		return nil
	}
	progress("ceiling 1/2: the same %d objects created and status-patched by a bare client (%d at once)", len(ph.reqs), ph.o.concurrency)
	d, err := ph.p.apiCeiling(ctx, ph.o.concurrency, ph.reqs, ph.final)
	if err != nil {
		return fmt.Errorf("bare-client ceiling: %w", err)
	}
	ph.rep.Ceilings.APISeconds = d.Seconds()
	progress("ceiling 2/2: rendering every output in-process, then writing it with the state store alone (%d callers)", ph.o.gitCallers)
	render, write, commits, err := ph.p.gitCeiling(ctx, ph.o.gitCallers, ph.reqs, ph.final)
	if err != nil {
		return fmt.Errorf("Git ceiling: %w", err)
	}
	ph.rep.Ceilings.RenderSeconds, ph.rep.Ceilings.GitSeconds, ph.rep.Ceilings.GitCommits = render.Seconds(), write.Seconds(), commits
	return nil
}

// finish records the controller's totals and the profiles' tops.
func (ph *phases) finish() {
	if st, err := readProc(ph.p.Controller.PID()); err == nil {
		ph.rep.Controller = controllerFigures{PeakRSSBytes: st.PeakRSS, PeakRSSMiB: float64(st.PeakRSS) / (1 << 20), CPUSeconds: st.CPUSeconds}
	}
	ph.rep.LoadAfter = loadAverage()
	if ph.rep.Profiles.CPUCreate != "" {
		ph.rep.Profiles.CPUTop = pprofTop(ph.rep.Profiles.CPUCreate, 10)
	}
	if ph.rep.Profiles.Heap != "" {
		ph.rep.Profiles.HeapTop = pprofTop(ph.rep.Profiles.Heap, 10, "-sample_index=inuse_space")
	}
	ph.rep.evaluate()
}

// percentile is the nearest-rank percentile of ds (q in 0..100).
func percentile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	rank := int(q/100*float64(len(s))+0.999999) - 1
	return s[min(max(rank, 0), len(s)-1)]
}
