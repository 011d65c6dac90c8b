// Command bench measures the Git state store writer against a local bare
// repository, with the git CLI doing the same work in the same run as the
// baseline, and prints a table. Run it with `make bench-statestore`.
//
// The remote is a bare repository on local disk reached through go-git's
// file transport (which runs git-receive-pack / git-upload-pack, as a real
// server would). The baseline is a script of git commands on a working
// clone: write the files, git add, git commit, git push.
//
// Flags select part of the run: for instance
//
//	go run ./statestore/bench -scenarios bulk -remotes git -baseline=false -v -cpuprofile cpu.out
//
// measures only the bulk scenario against git-receive-pack, without the git
// CLI baselines, logs every push (with its timings) and writes a CPU
// profile.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/go-git/go-git/v5/plumbing/protocol/packp"
	"github.com/go-git/go-git/v5/plumbing/transport"
	"github.com/go-git/go-git/v5/plumbing/transport/client"
	"github.com/go-git/go-git/v5/plumbing/transport/file"
	"github.com/go-git/go-git/v5/plumbing/transport/server"
	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"

	"promised.dev/promised/statestore"
)

var (
	requests   = flag.Int("requests", 10000, "requests in the bulk scenario")
	callers    = flag.Int("callers", 64, "concurrent callers in the bulk scenario")
	sizes      = flag.String("sizes", "1000,10000,100000", "repository sizes (files) for the single-change scenario")
	samples    = flag.Int("samples", 20, "single changes measured per size")
	perWrite   = flag.Int("per-write-sample", 200, "writes measured for the git CLI one-commit-per-write baseline (extrapolated)")
	keep       = flag.Bool("keep", false, "keep the work directory")
	cpuProfile = flag.String("cpuprofile", "", "write a CPU profile of the run to this file")
	verbose    = flag.Bool("v", false, "log every push")
	remotesF   = flag.String("remotes", "go-git,git", "remotes to measure: go-git (pure-Go in-process server) and/or git (file transport, git-receive-pack)")
	scenariosF = flag.String("scenarios", "bulk,single", "scenarios to run: bulk (10k requests, then the unchanged rewrite) and/or single (one change at each of -sizes)")
	baselines  = flag.Bool("baseline", true, "also measure the git CLI baselines (they take most of the run's time)")
	logger     logr.Logger
	namespaces = 20
	promises   = 5
)

const filesPerRequest = 5

func main() {
	flag.Parse()
	if *verbose {
		logger = funcr.New(func(prefix, args string) { fmt.Fprintln(os.Stderr, prefix, args) }, funcr.Options{Verbosity: 1})
	}
	if _, err := exec.LookPath("git"); err != nil {
		fail("the git binary is required: install it with `apt-get install git`")
	}
	work, err := os.MkdirTemp("", "statestore-bench-")
	check(err)
	if !*keep {
		defer os.RemoveAll(work)
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		check(err)
		check(pprof.StartCPUProfile(f))
		defer pprof.StopCPUProfile()
	}
	scenarios := list(*scenariosF, "bulk", "single")
	var rows []row
	for _, kind := range list(*remotesF, "go-git", "git") {
		useRemote(kind)
		rows = append(rows, row{name: "promised -> " + remoteKinds[kind]})
		if has(scenarios, "bulk") {
			rows = append(rows, bulk(work, kind)...)
		}
		if has(scenarios, "single") {
			for _, s := range strings.Split(*sizes, ",") {
				n, err := strconv.Atoi(strings.TrimSpace(s))
				check(err)
				rows = append(rows, single(work, kind, n))
			}
		}
	}
	printTable(rows)
}

// list parses a comma-separated flag value into the allowed names it
// holds, in allowed's order, refusing unknown names.
func list(v string, allowed ...string) []string {
	given := map[string]bool{}
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			given[s] = true
		}
	}
	var out []string
	for _, a := range allowed {
		if given[a] {
			out = append(out, a)
			delete(given, a)
		}
	}
	for s := range given {
		fail(fmt.Sprintf("unknown value %q (want some of %s)", s, strings.Join(allowed, ",")))
	}
	return out
}

func has(names []string, name string) bool {
	for _, n := range names {
		if n == name {
			return true
		}
	}
	return false
}

var remoteKinds = map[string]string{
	"go-git": "local bare repo over go-git's pure-Go transport (in-process go-git server)",
	"git":    "local bare repo over go-git's file transport (git-receive-pack, same server as the CLI)",
}

// useRemote selects what serves file:// URLs for the writer.
func useRemote(kind string) {
	if kind == "go-git" {
		client.InstallProtocol("file", timedTransport{server.NewClient(server.DefaultLoader)})
	} else {
		client.InstallProtocol("file", file.DefaultClient)
	}
}

// serverTime adds up the time go-git's in-process server spends receiving
// pushes. It runs in this process, on the writer's goroutine: the writer
// waits for it as it would for a remote server.
var serverTime atomic.Int64

type timedTransport struct{ transport.Transport }

func (t timedTransport) NewReceivePackSession(ep *transport.Endpoint, auth transport.AuthMethod) (transport.ReceivePackSession, error) {
	s, err := t.Transport.NewReceivePackSession(ep, auth)
	if err != nil {
		return nil, err
	}
	return timedSession{s}, nil
}

type timedSession struct{ transport.ReceivePackSession }

func (s timedSession) ReceivePack(ctx context.Context, req *packp.ReferenceUpdateRequest) (*packp.ReportStatus, error) {
	start := time.Now()
	defer func() { serverTime.Add(int64(time.Since(start))) }()
	return s.ReceivePackSession.ReceivePack(ctx, req)
}

// cli caches the git CLI baselines, measured once and shown for both remotes.
var cli = map[string]time.Duration{}

// baseline measures a git CLI baseline once; it returns 0 (shown as "-")
// when -baseline=false.
func baseline(key string, measure func() time.Duration) time.Duration {
	if !*baselines {
		return 0
	}
	if d, ok := cli[key]; ok {
		return d
	}
	d := measure()
	cli[key] = d
	return d
}

type row struct {
	name, ours, git, ratio, target, verdict string
}

func printTable(rows []row) {
	fmt.Printf("\nstatestore benchmark  (GOMAXPROCS=%d, %s, %s)\n\n", runtime.GOMAXPROCS(0), runtime.Version(), gitVersion())
	fmt.Printf("%-52s %-16s %-16s %-8s %-12s %s\n", "scenario", "promised", "git CLI", "ratio", "target", "")
	fmt.Println(strings.Repeat("-", 116))
	for _, r := range rows {
		fmt.Printf("%-52s %-16s %-16s %-8s %-12s %s\n", r.name, r.ours, r.git, r.ratio, r.target, r.verdict)
	}
	fmt.Println()
}

// request returns the folder and files of request i.
func request(i int, version string) statestore.Change {
	name := fmt.Sprintf("req-%05d", i)
	dir, err := statestore.ResourceDir("", "cluster-1", fmt.Sprintf("ns-%02d", i%namespaces), fmt.Sprintf("promise-%d", (i/namespaces)%promises), name)
	check(err)
	files := map[string][]byte{}
	for f := 0; f < filesPerRequest; f++ {
		files[fmt.Sprintf("object-%d.yaml", f)] = []byte(fmt.Sprintf("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: %s-%d\n  namespace: ns\ndata:\n  version: %q\n  payload: %q\n", name, f, version, strings.Repeat("x", 200)))
	}
	return statestore.Change{Dir: dir, Files: files}
}

func newRemote(work, name string) string {
	dir := filepath.Join(work, name+".git")
	git("", "init", "--quiet", "--bare", "--initial-branch=main", dir)
	return dir
}

func newWriter(remote, clone string) *statestore.GitWriter {
	w, err := statestore.NewGit(context.Background(), statestore.GitConfig{URL: remote, Path: clone, MaxBatchChanges: 100000, Logger: logger})
	check(err)
	return w
}

// memSampler records the peak heap in use and the peak memory obtained from
// the OS while it runs.
type memSampler struct {
	stop           chan struct{}
	done           chan struct{}
	peakHeap, peak uint64
}

func sampleMemory() *memSampler {
	runtime.GC()
	m := &memSampler{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(m.done)
		t := time.NewTicker(5 * time.Millisecond)
		defer t.Stop()
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			m.peakHeap = max(m.peakHeap, ms.HeapInuse)
			m.peak = max(m.peak, ms.Sys)
			select {
			case <-m.stop:
				return
			case <-t.C:
			}
		}
	}()
	return m
}

// cpuMeter measures the CPU time (user + system) used by this process, and
// by the child processes that ended (git-receive-pack and what it runs).
type cpuMeter struct{ self, children time.Duration }

func rusage(who int) time.Duration {
	var ru syscall.Rusage
	check(syscall.Getrusage(who, &ru))
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func startCPU() cpuMeter {
	return cpuMeter{self: rusage(syscall.RUSAGE_SELF), children: rusage(syscall.RUSAGE_CHILDREN)}
}

func (c cpuMeter) since() (self, children time.Duration) {
	return rusage(syscall.RUSAGE_SELF) - c.self, rusage(syscall.RUSAGE_CHILDREN) - c.children
}

func (m *memSampler) finish() { close(m.stop); <-m.done }

func bulk(work, kind string) []row {
	remote := newRemote(work, "bulk-"+kind)
	w := newWriter("file://"+remote, filepath.Join(work, "bulk-clone-"+kind))
	defer w.Close()

	run := func(version string) (time.Duration, error) {
		var next atomic.Int64
		var firstErr error
		var mu sync.Mutex
		var wg sync.WaitGroup
		start := time.Now()
		for c := 0; c < *callers; c++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					i := int(next.Add(1)) - 1
					if i >= *requests {
						return
					}
					if _, err := w.Write(context.Background(), request(i, version)); err != nil {
						mu.Lock()
						if firstErr == nil {
							firstErr = err
						}
						mu.Unlock()
						return
					}
				}
			}()
		}
		wg.Wait()
		return time.Since(start), firstErr
	}

	mem := sampleMemory()
	cpu := startCPU()
	serverTime.Store(0)
	took, err := run("v1")
	self, children := cpu.since()
	inServer := time.Duration(serverTime.Load())
	mem.finish()
	check(err)
	commits := commitCount(remote)
	files := len(strings.Split(git(remote, "ls-tree", "-r", "--name-only", "main"), "\n"))
	if files != *requests*filesPerRequest {
		fail(fmt.Sprintf("expected %d files in the remote, found %d", *requests*filesPerRequest, files))
	}

	start := time.Now()
	cpu = startCPU()
	_, err = run("v1")
	check(err)
	unchanged := time.Since(start)
	unchangedSelf, unchangedChildren := cpu.since()
	unchangedCommits := commitCount(remote) - commits

	// Baseline 1: the git CLI making the same number of commits (the same
	// grouping), each: write files, add, commit, push.
	perCommit := (*requests + commits - 1) / commits
	var cliCommits int
	var wt string
	cliTook := baseline("bulk", func() time.Duration {
		cliRemote := newRemote(work, "bulk-cli")
		wt = filepath.Join(work, "bulk-cli-wt")
		git("", "clone", "--quiet", cliRemote, wt)
		start := time.Now()
		for i := 0; i < *requests; i += perCommit {
			for j := i; j < min(i+perCommit, *requests); j++ {
				writeChange(wt, request(j, "v1"))
			}
			git(wt, "add", "--all")
			git(wt, "commit", "--quiet", "-m", "batch")
			git(wt, "push", "--quiet", "origin", "HEAD:main")
		}
		took := time.Since(start)
		cli["bulk-commits"] = time.Duration(commitCount(cliRemote))
		return took
	})
	cliCommits = int(cli["bulk-commits"])

	// Baseline 2: one commit and push per write (the reference product's
	// way), on a sample, extrapolated to all requests.
	perWriteTook := baseline("per-write", func() time.Duration {
		oneRemote := newRemote(work, "per-write-cli")
		owt := filepath.Join(work, "per-write-wt")
		git("", "clone", "--quiet", oneRemote, owt)
		start := time.Now()
		for i := 0; i < *perWrite; i++ {
			writeChange(owt, request(i, "v1"))
			git(owt, "add", "--all")
			git(owt, "commit", "--quiet", "-m", "write")
			git(owt, "push", "--quiet", "origin", "HEAD:main")
		}
		return time.Since(start) * time.Duration(*requests) / time.Duration(*perWrite)
	})

	// Baseline 3: rewriting unchanged content with the git CLI: write all
	// files, add, see that nothing is staged.
	cliUnchanged := baseline("unchanged", func() time.Duration {
		start := time.Now()
		for i := 0; i < *requests; i++ {
			writeChange(wt, request(i, "v1"))
		}
		git(wt, "add", "--all")
		if _, err := gitTry(wt, "diff", "--cached", "--quiet"); err != nil {
			fail("git CLI baseline: unchanged rewrite staged changes")
		}
		return time.Since(start)
	})

	n := fmt.Sprintf("%dk requests x %d files", *requests/1000, filesPerRequest)
	return []row{
		{name: "  " + n + ", " + strconv.Itoa(*callers) + " callers: time", ours: dur(took), git: dur(cliTook), ratio: ratio(took, cliTook), target: "<= 10s", verdict: verdict(took <= 10*time.Second)},
		{name: "    commits", ours: strconv.Itoa(commits), git: count(cliCommits), target: "<= 200", verdict: verdict(commits <= 200)},
		{name: "    vs git CLI one commit+push per write (extrap.)", git: dur(perWriteTook), ours: dur(took), ratio: ratio(took, perWriteTook)},
		{name: "    writer peak heap in use / peak Sys", ours: mb(mem.peakHeap) + " / " + mb(mem.peak)},
		// CPU time is what the run needs from a machine whose cores other
		// processes compete for; the wall time above depends on that load.
		{name: "    CPU: this process / git child processes", ours: dur(self) + " / " + dur(children)},
		serverRow(kind, inServer),
		{name: fmt.Sprintf("  rewrite %dk unchanged requests: time", *requests/1000), ours: dur(unchanged), git: dur(cliUnchanged), ratio: ratio(unchanged, cliUnchanged), target: "<= 3s", verdict: verdict(unchanged <= 3*time.Second)},
		{name: "    commits", ours: strconv.Itoa(unchangedCommits), git: "0", target: "0", verdict: verdict(unchangedCommits == 0)},
		{name: "    CPU: this process / git child processes", ours: dur(unchangedSelf) + " / " + dur(unchangedChildren)},
	}
}

func serverRow(kind string, inServer time.Duration) row {
	if kind != "go-git" {
		return row{name: "    of which in go-git's server receiving pushes", ours: "-"}
	}
	return row{name: "    of which in go-git's server receiving pushes", ours: dur(inServer)}
}

func single(work, kind string, files int) row {
	name := fmt.Sprintf("size-%d-%s", files, kind)
	remote := newRemote(work, name)
	w := newWriter("file://"+remote, filepath.Join(work, name+"-clone"))
	defer w.Close()
	reqs := files / filesPerRequest
	seed := make([]statestore.Change, reqs)
	for i := range seed {
		seed[i] = request(i, "v1")
	}
	_, err := w.Write(context.Background(), seed...)
	check(err)

	var ours []time.Duration
	for s := 0; s < *samples; s++ {
		c := request(s*7919%reqs, fmt.Sprintf("v%d", s+2))
		start := time.Now()
		res, err := w.Write(context.Background(), c)
		check(err)
		if !res.Changed {
			fail("single change made no commit")
		}
		ours = append(ours, time.Since(start))
	}

	mc := baseline(fmt.Sprintf("single-%d", files), func() time.Duration {
		wt := filepath.Join(work, name+"-wt")
		git("", "clone", "--quiet", remote, wt)
		var took []time.Duration
		for s := 0; s < *samples; s++ {
			c := request(s*7919%reqs, fmt.Sprintf("cli-v%d", s+2))
			start := time.Now()
			writeChange(wt, c)
			git(wt, "add", "--all")
			git(wt, "commit", "--quiet", "-m", "change")
			git(wt, "push", "--quiet", "origin", "HEAD:main")
			took = append(took, time.Since(start))
		}
		return median(took)
	})
	mo := median(ours)
	return row{
		name:    fmt.Sprintf("  one request changed, repo of %dk files: median", files/1000),
		ours:    ms(mo),
		git:     ms(mc),
		ratio:   ratio(mo, mc),
		target:  "<= 100ms",
		verdict: verdict(mo <= 100*time.Millisecond),
	}
}

// writeChange replaces the request's folder in a working tree, as the
// writer does in the store.
func writeChange(wt string, c statestore.Change) {
	dir := filepath.Join(wt, filepath.FromSlash(c.Dir))
	check(os.RemoveAll(dir))
	for p, content := range c.Files {
		full := filepath.Join(dir, filepath.FromSlash(p))
		check(os.MkdirAll(filepath.Dir(full), 0o755))
		check(os.WriteFile(full, content, 0o644))
	}
}

func commitCount(remote string) int {
	n, err := strconv.Atoi(git(remote, "rev-list", "--count", "main"))
	check(err)
	return n
}

func gitEnv() []string {
	return append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "GIT_TERMINAL_PROMPT=0",
		"GIT_AUTHOR_NAME=bench", "GIT_AUTHOR_EMAIL=bench@localhost",
		"GIT_COMMITTER_NAME=bench", "GIT_COMMITTER_EMAIL=bench@localhost")
}

func git(dir string, args ...string) string {
	out, err := gitTry(dir, args...)
	check(err)
	return out
}

func gitTry(dir string, args ...string) (string, error) {
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = gitEnv()
	out, err := cmd.Output()
	if err != nil {
		msg := ""
		if ee, ok := err.(*exec.ExitError); ok {
			msg = string(ee.Stderr)
		}
		return "", fmt.Errorf("git %s: %w %s", strings.Join(args, " "), err, msg)
	}
	return strings.TrimSpace(string(out)), nil
}

func gitVersion() string {
	out, _ := exec.Command("git", "--version").Output()
	return strings.TrimSpace(string(out))
}

func median(d []time.Duration) time.Duration {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

func dur(d time.Duration) string {
	if d == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2fs", d.Seconds())
}

func ms(d time.Duration) string {
	if d == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1fms", float64(d.Microseconds())/1000)
}
func mb(b uint64) string { return fmt.Sprintf("%.0f MiB", float64(b)/(1<<20)) }

func ratio(ours, base time.Duration) string {
	if ours <= 0 || base <= 0 {
		return ""
	}
	return fmt.Sprintf("%.1fx", float64(base)/float64(ours))
}

func count(n int) string {
	if !*baselines {
		return "-"
	}
	return strconv.Itoa(n)
}

func verdict(ok bool) string {
	if ok {
		return "ok"
	}
	return "MISSED"
}

func check(err error) {
	if err != nil {
		fail(err.Error())
	}
}

func fail(msg string) {
	fmt.Fprintln(os.Stderr, "bench:", msg)
	os.Exit(1)
}
