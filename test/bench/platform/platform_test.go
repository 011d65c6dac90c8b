package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestSplit(t *testing.T) {
	for _, tc := range []struct {
		n      int
		limits []int
		want   []int
	}{
		{1000, []int{0}, []int{1000}},
		{1000, []int{0, 0, 0}, []int{334, 333, 333}},
		{10, []int{0, 4}, []int{6, 4}},
		{1000, []int{0, 100}, []int{900, 100}},
		{7, []int{0, 0, 0, 0}, []int{4, 1, 1, 1}},
	} {
		got := split(tc.n, tc.limits)
		require.Equal(t, tc.want, got, "split(%d, %v)", tc.n, tc.limits)
		sum := 0
		for _, v := range got {
			sum += v
		}
		require.Equal(t, tc.n, sum)
	}
}

func TestPercentile(t *testing.T) {
	var ds []time.Duration
	for i := 1; i <= 100; i++ {
		ds = append(ds, time.Duration(i)*time.Second)
	}
	require.Equal(t, 50*time.Second, percentile(ds, 50))
	require.Equal(t, 99*time.Second, percentile(ds, 99))
	require.Equal(t, 100*time.Second, percentile(ds, 100))
	require.Equal(t, time.Second, percentile(ds[:1], 99))
	require.Zero(t, percentile(nil, 50))
}

func TestParseProc(t *testing.T) {
	// A command name with spaces and parentheses must not shift fields.
	stat := "1234 (promised (x) y) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 12 0 100 0 0"
	cpu, err := parseStatCPU(stat)
	require.NoError(t, err)
	require.InDelta(t, 3.0, cpu, 1e-9)
	st, err := parseStat(stat)
	require.NoError(t, err)
	require.Equal(t, "promised (x) y", st.comm)
	require.Equal(t, 1, st.ppid)
	require.InDelta(t, 0.0, st.children, 1e-9)
	busy, total, err := parseProcStat("cpu  100 5 50 800 40 3 2 0 7 0\ncpu0 1 2 3\n")
	require.NoError(t, err)
	require.InDelta(t, 1.6, busy, 1e-9)
	require.InDelta(t, 10.0, total, 1e-9)
	_, _, err = parseProcStat("intr 1 2 3")
	require.Error(t, err)
	n, err := parseKB("  123456 kB")
	require.NoError(t, err)
	require.Equal(t, int64(123456*1024), n)
	_, err = parseKB("12 MB")
	require.Error(t, err)
}

func TestCounts(t *testing.T) {
	text := `# TYPE controller_runtime_reconcile_total counter
controller_runtime_reconcile_total{controller="request-team",result="success"} 10
controller_runtime_reconcile_total{controller="request-team",result="error"} 2
controller_runtime_reconcile_total{controller="promise",result="success"} 99
# TYPE workqueue_depth gauge
workqueue_depth{controller="request-team",name="request-team"} 3
workqueue_depth{controller="promise",name="promise"} 7
# TYPE rest_client_requests_total counter
rest_client_requests_total{code="200",host="x",method="GET"} 5
rest_client_requests_total{code="201",host="x",method="POST"} 4
rest_client_requests_total{code="200",host="x",method="PATCH"} 6
# TYPE promised_pipeline_duration_seconds histogram
promised_pipeline_duration_seconds_bucket{action="configure",promise="team",result="success",le="+Inf"} 4
promised_pipeline_duration_seconds_sum{action="configure",promise="team",result="success"} 2
promised_pipeline_duration_seconds_count{action="configure",promise="team",result="success"} 4
`
	m, err := parseMetrics(strings.NewReader(text))
	require.NoError(t, err)
	c := m.counts()
	require.Equal(t, 12.0, c.Reconciles)
	require.Equal(t, 3.0, c.QueueDepth)
	require.Equal(t, 10.0, c.APIWrites)
	require.Equal(t, 5.0, c.APIReads)
	require.Equal(t, timing{Sum: 2, Count: 4}, c.Pipeline)
	require.Equal(t, 0.5, c.Pipeline.meanSince(timing{}))
	require.Equal(t, map[string]float64{"GET": 5, "POST": 4, "PATCH": 6}, m.byMethod())
	require.Equal(t, map[string]float64{"GET": 2}, subMethods(map[string]float64{"GET": 7, "POST": 4}, m.byMethod()))
}

func TestTargetsScaleWithN(t *testing.T) {
	r := &report{Requests: 1000, Included: []included{{Promise: "team", Requests: 1000}}}
	r.Create.Seconds, r.Create.P99 = 5.9, 3.1
	r.Create.ReconcilesPerRequest, r.Create.APIWritesPerRequest = 1, 3
	r.Controller.PeakRSSBytes, r.Controller.PeakRSSMiB = 1, 200
	r.Change.Requests, r.Change.Seconds, r.Change.Commits = 1000, 9, 10
	r.Ceilings.APISeconds = 3
	r.evaluate()
	got := map[string]target{}
	for _, tg := range r.Targets {
		got[tg.Name] = tg
	}
	require.True(t, got["all Ready, commits pushed"].OK, "5.9 s for 1,000 is within 60 s × 0.1")
	require.False(t, got["p99 latency"].OK, "3.1 s is over 30 s × 0.1")
	require.True(t, got["promise change commits"].OK)
	require.True(t, got["vs bare-client ceiling"].OK, "5.9/3 is under 2")
	require.False(t, got["forced re-reconcile"].Measured)
	var out bytes.Buffer
	r.print(&out)
	require.Contains(t, out.String(), "✓ all Ready, commits pushed")
	require.Contains(t, out.String(), "– forced re-reconcile")
}
