package main

import (
	"fmt"
	"io"
	"sort"
	"strings"
)

// report is everything a run measured; it prints as a table or JSON.
type report struct {
	Requests    int `json:"requests"`
	Concurrency int `json:"concurrency"`
	// ControllerArgs are extra controller flags of an experiment; the
	// targets are for the defaults.
	ControllerArgs []string   `json:"controllerArgs,omitempty"`
	CPUs           int        `json:"cpus"`
	GoVersion      string     `json:"goVersion"`
	LoadBefore     string     `json:"loadAverageBefore"`
	LoadAfter      string     `json:"loadAverageAfter"`
	Included       []included `json:"included"`
	Excluded       []excluded `json:"excluded,omitempty"`

	Create      createFigures      `json:"create"`
	Rereconcile rereconcileFigures `json:"forcedRereconcile"`
	Change      changeFigures      `json:"promiseChange"`
	Ceilings    ceilingFigures     `json:"ceilings"`
	Controller  controllerFigures  `json:"controller"`
	Profiles    profiles           `json:"profiles,omitzero"`
	// Scale is N/10,000, by which the time and commit targets are scaled.
	Scale   float64  `json:"targetScale"`
	Targets []target `json:"targets"`
}

type included struct {
	Promise  string `json:"promise"`
	Requests int    `json:"requests"`
	Note     string `json:"note,omitempty"`
}

type excluded struct {
	Promise string `json:"promise"`
	Reason  string `json:"reason"`
}

// phaseFigures are what every phase reports, from the controller's
// /metrics, /proc and the Git server.
type phaseFigures struct {
	Reconciles           float64            `json:"reconciles"`
	ReconcilesPerRequest float64            `json:"reconcilesPerRequest"`
	Commits              int                `json:"commits"`
	ChangedWrites        float64            `json:"changedWrites"`
	StatusWrites         float64            `json:"statusWrites"`
	APIWrites            float64            `json:"apiWrites"`
	APIReads             float64            `json:"apiReads"`
	APIWritesPerRequest  float64            `json:"apiWritesPerRequest"`
	APIReadsPerRequest   float64            `json:"apiReadsPerRequest"`
	APIByMethod          map[string]float64 `json:"apiByMethod"`
	ControllerCPUSeconds float64            `json:"controllerCPUSeconds"`
	// CPUByProcess is the phase's CPU seconds by process (controller,
	// kube-apiserver, etcd, benchmark, other) and MachineBusy the share of
	// all CPUs' time that was busy: together, where the phase's time went.
	CPUByProcess map[string]float64 `json:"cpuSecondsByProcess"`
	MachineBusy  float64            `json:"machineBusy"`
	// Means are where a reconcile's time goes, from the controller's
	// histograms, in seconds.
	Means means `json:"meanSeconds"`
	// PipelineByPromise is the mean configure pipeline time by promise.
	PipelineByPromise map[string]float64 `json:"meanPipelineSecondsByPromise,omitempty"`
}

type means struct {
	QueueWait  float64 `json:"queueWait"`
	Reconcile  float64 `json:"reconcile"`
	Pipeline   float64 `json:"pipeline"`
	StoreWrite float64 `json:"stateStoreWrite"`
	// APIRequest is an apiserver request's mean time, RateLimitedTotal
	// the seconds all of them spent waiting for the client-side limiter.
	APIRequest       float64 `json:"apiRequest"`
	RateLimitedTotal float64 `json:"rateLimitedTotal"`
}

type createFigures struct {
	phaseFigures
	// Seconds is from the first create to the last request first seen
	// Ready (Ready means its commit was pushed).
	Seconds       float64 `json:"seconds"`
	CreateSeconds float64 `json:"createSeconds"`
	// Latencies: create returned → first seen Ready, by an informer.
	P50             float64 `json:"p50Seconds"`
	P99             float64 `json:"p99Seconds"`
	Max             float64 `json:"maxSeconds"`
	DistinctCommits int     `json:"distinctCommitsInStatus"`
	FoldersOnHead   int     `json:"requestFoldersOnPushedHead"`
}

type rereconcileFigures struct {
	phaseFigures
	// Seconds is from the first annotation patch until the reconcile
	// counter grew by N and the queue is empty with no worker busy.
	Seconds float64 `json:"seconds"`
	// AnnotateSeconds is how long the clients took to patch them all.
	AnnotateSeconds float64 `json:"annotateSeconds"`
}

type changeFigures struct {
	phaseFigures
	Changes []string `json:"changes,omitempty"`
	// Requests is how many requests' output the change alters.
	Requests int `json:"requests"`
	// Seconds is from the first Promise update until every altered
	// request is Ready with a new output digest.
	Seconds float64 `json:"seconds"`
	Skipped string  `json:"skipped,omitempty"`
}

type ceilingFigures struct {
	APISeconds    float64 `json:"bareClientSeconds"`
	RenderSeconds float64 `json:"inProcessRenderSeconds"`
	GitSeconds    float64 `json:"gitWriteSeconds"`
	GitCommits    int     `json:"gitWriteCommits"`
}

type controllerFigures struct {
	PeakRSSBytes int64   `json:"peakRSSBytes"`
	PeakRSSMiB   float64 `json:"peakRSSMiB"`
	CPUSeconds   float64 `json:"cpuSeconds"`
}

type profiles struct {
	CPUCreate      string `json:"cpuCreate,omitempty"`
	CPURereconcile string `json:"cpuRereconcile,omitempty"`
	CPUChange      string `json:"cpuChange,omitempty"`
	Heap           string `json:"heap,omitempty"`
	CPUTop         string `json:"cpuTop,omitempty"`
	HeapTop        string `json:"heapTop,omitempty"`
}

type target struct {
	Name   string `json:"name"`
	Target string `json:"target"`
	Value  string `json:"value"`
	OK     bool   `json:"ok"`
	// Measured is false when the run did not get to measure it.
	Measured bool `json:"measured"`
}

// evaluate compares the figures with the targets, which are stated for
// 10,000 requests. Times and commits of a run of N scale by N/10,000: the
// requests arrive at once, so every one of them is throughput-bound, and a
// commit's batch grows with the run. Per-request counts, memory and the
// ratio to the ceiling are not scaled; memory grows with N, so at N below
// 10,000 the memory target is easier than it looks.
func (r *report) evaluate() {
	r.Scale = float64(r.Requests) / 10000
	s := r.Scale
	secs := func(v float64) string { return fmt.Sprintf("%.1f s", v) }
	r.Targets = nil
	add := func(name, want string, value string, ok, measured bool) {
		r.Targets = append(r.Targets, target{Name: name, Target: want, Value: value, OK: ok && measured, Measured: measured})
	}
	created := r.Create.Seconds > 0
	add("all Ready, commits pushed", "≤ "+secs(60*s), secs(r.Create.Seconds), r.Create.Seconds <= 60*s, created)
	add("p99 latency", "≤ "+secs(30*s), secs(r.Create.P99), r.Create.P99 <= 30*s, created)
	add("reconciles per request", "≤ 3", fmt.Sprintf("%.2f", r.Create.ReconcilesPerRequest), r.Create.ReconcilesPerRequest <= 3, created)
	add("apiserver writes per request", "≤ 6", fmt.Sprintf("%.2f", r.Create.APIWritesPerRequest), r.Create.APIWritesPerRequest <= 6, created)
	add("controller peak RSS", "≤ 500 MiB", fmt.Sprintf("%.0f MiB", r.Controller.PeakRSSMiB), r.Controller.PeakRSSMiB <= 500, r.Controller.PeakRSSBytes > 0)
	rr := r.Rereconcile.Seconds > 0
	add("forced re-reconcile", "≤ "+secs(20*s), secs(r.Rereconcile.Seconds), r.Rereconcile.Seconds <= 20*s, rr)
	add("forced re-reconcile commits", "0", fmt.Sprint(r.Rereconcile.Commits), r.Rereconcile.Commits == 0, rr)
	add("forced re-reconcile status writes", "0", fmt.Sprintf("%.0f", r.Rereconcile.StatusWrites), r.Rereconcile.StatusWrites == 0, rr)
	cs := float64(r.Change.Requests) / 10000
	ch := r.Change.Seconds > 0
	add("promise change re-rendered", "≤ "+secs(90*cs), secs(r.Change.Seconds), r.Change.Seconds <= 90*cs, ch)
	maxCommits := max(1, int(100*cs+0.5))
	add("promise change commits", fmt.Sprintf("≤ %d", maxCommits), fmt.Sprint(r.Change.Commits), r.Change.Commits <= maxCommits, ch)
	ratio := 0.0
	if r.Ceilings.APISeconds > 0 {
		ratio = r.Create.Seconds / r.Ceilings.APISeconds
	}
	add("vs bare-client ceiling", "≤ 2.0×", fmt.Sprintf("%.1f×", ratio), ratio <= 2, created && r.Ceilings.APISeconds > 0)
}

func (r *report) print(w io.Writer) {
	p := func(format string, args ...any) { fmt.Fprintf(w, format+"\n", args...) }
	row := func(name, value string, note ...string) {
		line := fmt.Sprintf("  %-34s %14s", name, value)
		if len(note) > 0 && note[0] != "" {
			line += "   " + note[0]
		}
		p("%s", line)
	}
	p("promised platform benchmark: %d requests, %d clients, %d CPUs, %s", r.Requests, r.Concurrency, r.CPUs, r.GoVersion)
	if len(r.ControllerArgs) > 0 {
		p("EXPERIMENT: controller run with %s (the targets are for its defaults)", strings.Join(r.ControllerArgs, " "))
	}
	p("load average before %s, after %s (other work on this machine competes for the same CPUs)", r.LoadBefore, r.LoadAfter)
	var inc []string
	for _, i := range r.Included {
		s := fmt.Sprintf("%s %d", i.Promise, i.Requests)
		if i.Note != "" {
			s += " (" + i.Note + ")"
		}
		inc = append(inc, s)
	}
	p("included: %s", strings.Join(inc, "; "))
	for _, e := range r.Excluded {
		p("left out: %s: %s", e.Promise, e.Reason)
	}
	if len(r.Included) == 0 {
		return
	}
	p("")
	c := r.Create
	p("CREATE: N requests created at once; time from the first create until every request is Ready (its commit pushed)")
	p("        latency = create returned → first seen Ready by an informer (a watch, no polling)")
	row("all Ready, commits pushed", fmt.Sprintf("%.1f s", c.Seconds), fmt.Sprintf("creates took %.1f s; %.0f requests/s", c.CreateSeconds, safeDiv(float64(r.Requests), c.Seconds)))
	row("latency p50 / p99 / max", fmt.Sprintf("%.1f / %.1f / %.1f s", c.P50, c.P99, c.Max))
	r.phaseRows(row, c.phaseFigures)
	row("pushed", fmt.Sprintf("%d/%d", c.FoldersOnHead, r.Requests), fmt.Sprintf("request folders on the server's head; %d distinct commits named in status, all on main", c.DistinctCommits))
	p("")
	rr := r.Rereconcile
	p("FORCED RE-RECONCILE: promised.dev/reconcile-at bumped on all N unchanged requests")
	row("all re-run, queue empty", fmt.Sprintf("%.1f s", rr.Seconds), fmt.Sprintf("the annotation patches took %.1f s", rr.AnnotateSeconds))
	r.phaseRows(row, rr.phaseFigures)
	p("")
	ch := r.Change
	p("PROMISE CHANGE: one change per promise that alters its requests' output")
	if ch.Skipped != "" {
		p("  skipped: %s", ch.Skipped)
	} else {
		for _, d := range ch.Changes {
			p("  - %s", d)
		}
		row("re-rendered and committed", fmt.Sprintf("%.1f s", ch.Seconds), fmt.Sprintf("%d requests with a new output digest, Ready", ch.Requests))
		p("  (per-request figures divide by those %d; the unaltered requests of a changed promise re-run too, and count)", ch.Requests)
		r.phaseRows(row, ch.phaseFigures)
	}
	p("")
	cl := r.Ceilings
	p("CEILINGS on the same machine, same run")
	if cl.APISeconds > 0 {
		row("bare client: create + status patch", fmt.Sprintf("%.1f s", cl.APISeconds), fmt.Sprintf("ours %.1f× (same objects and statuses, CRD copies no promise serves, %d clients)", safeDiv(c.Seconds, cl.APISeconds), r.Concurrency))
	}
	if cl.GitSeconds > 0 {
		row("state store alone: Git writes", fmt.Sprintf("%.1f s", cl.GitSeconds), fmt.Sprintf("ours %.1f× (%d commits; every output rendered first, written by 64 callers to a fresh repo)", safeDiv(c.Seconds, cl.GitSeconds), cl.GitCommits))
		row("in-process render of every output", fmt.Sprintf("%.1f s", cl.RenderSeconds), "(not part of the Git ceiling; what the stages alone cost in one process)")
	}
	p("")
	p("CONTROLLER PROCESS (promised controller, default settings)")
	row("peak RSS (VmHWM)", fmt.Sprintf("%.0f MiB", r.Controller.PeakRSSMiB))
	row("CPU (utime+stime), whole run", fmt.Sprintf("%.1f s", r.Controller.CPUSeconds))
	p("")
	p("TARGETS (stated for 10,000 requests; times and commits scaled by N/10,000 = %.2f since requests arrive at once and the run is throughput-bound; per-request counts, memory and ratios unscaled)", r.Scale)
	for _, t := range r.Targets {
		mark := "✗"
		if t.OK {
			mark = "✓"
		}
		if !t.Measured {
			mark = "–"
		}
		p("  %s %-34s %12s   target %s", mark, t.Name, t.Value, t.Target)
	}
	if r.Profiles.CPUTop != "" || r.Profiles.HeapTop != "" {
		p("")
		p("PROFILES")
		for _, f := range []string{r.Profiles.CPUCreate, r.Profiles.CPURereconcile, r.Profiles.CPUChange, r.Profiles.Heap} {
			if f != "" {
				p("  %s", f)
			}
		}
		if r.Profiles.CPUTop != "" {
			p("\nCPU, create phase (go tool pprof -top):\n%s", r.Profiles.CPUTop)
		}
		if r.Profiles.HeapTop != "" {
			p("Heap in use after the create phase (go tool pprof -top -sample_index=inuse_space):\n%s", r.Profiles.HeapTop)
		}
	}
}

func (r *report) phaseRows(row func(string, string, ...string), f phaseFigures) {
	row("reconciles per request", fmt.Sprintf("%.2f", f.ReconcilesPerRequest), fmt.Sprintf("%.0f reconciles", f.Reconciles))
	row("commits (git rev-list --count)", fmt.Sprint(f.Commits), fmt.Sprintf("%.0f changed writes in them", f.ChangedWrites))
	row("request status writes", fmt.Sprintf("%.0f", f.StatusWrites))
	row("apiserver writes per request", fmt.Sprintf("%.2f", f.APIWritesPerRequest), methods(f.APIByMethod, true))
	row("apiserver reads per request", fmt.Sprintf("%.2f", f.APIReadsPerRequest), methods(f.APIByMethod, false))
	row("controller CPU", fmt.Sprintf("%.1f s", f.ControllerCPUSeconds), cpuShares(f.CPUByProcess, f.MachineBusy))
	m := f.Means
	row("mean queue wait / reconcile", fmt.Sprintf("%.0f / %.0f ms", m.QueueWait*1000, m.Reconcile*1000),
		fmt.Sprintf("of which pipeline %.0f ms (%s), state-store write (queue to push) %.0f ms", m.Pipeline*1000, byPromise(f.PipelineByPromise), m.StoreWrite*1000))
	row("mean apiserver request", fmt.Sprintf("%.0f ms", m.APIRequest*1000), fmt.Sprintf("client-side rate limiter: %.1f s waited in all", m.RateLimitedTotal))
}

// cpuShares says where the machine's CPU went in a phase.
func cpuShares(by map[string]float64, busy float64) string {
	if len(by) == 0 {
		return ""
	}
	var parts []string
	for _, k := range []string{procAPIServer, procEtcd, procBench, procOther} {
		parts = append(parts, fmt.Sprintf("%s %.1f", k, by[k]))
	}
	return fmt.Sprintf("beside it: %s s; CPUs %.0f%% busy", strings.Join(parts, ", "), busy*100)
}

func byPromise(m map[string]float64) string {
	var parts []string
	for k, v := range m {
		parts = append(parts, fmt.Sprintf("%s %.0f", k, v*1000))
	}
	sort.Strings(parts)
	return strings.Join(parts, ", ")
}

func methods(m map[string]float64, writes bool) string {
	var parts []string
	for k, v := range m {
		if (k == "GET") == writes {
			continue
		}
		parts = append(parts, fmt.Sprintf("%s %.0f", k, v))
	}
	sort.Strings(parts)
	return strings.Join(parts, ", ")
}

func safeDiv(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}
