// Package bench measures the whole platform: requests created against a
// real kube-apiserver, run by the controller, pushed to a real Git server.
package bench

import (
	"context"
	"flag"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"promised.dev/promised/cmd/builtin"
	"promised.dev/promised/test/harness"
)

var (
	requests = flag.Int("requests", 1000, "requests created by BenchmarkRequests")
	k8s      client.Client
)

func TestMain(m *testing.M) {
	flag.Parse()
	reg, err := builtin.Registry()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(harness.TestMain(m, "../../config/crd", reg, func(p *harness.Platform) { k8s = p.Client }))
}

// BenchmarkRequests applies -requests requests of the example promise and
// reports the time until every one is Ready with its commit pushed, the
// reconciles per request and the commits made. Run it once:
//
//	go test ./test/bench -run '^$' -bench Requests -benchtime 1x
func BenchmarkRequests(b *testing.B) {
	git := harness.GitStore(b, k8s, "bench")
	harness.Destination(b, k8s, "dev", "bench", map[string]string{"environment": "dev"})
	harness.InstallPromise(b, k8s, "../../examples/team")

	n := *requests
	reconcilesBefore := counter(b, "controller_runtime_reconcile_total", "request-team")
	commitsBefore := git.CommitCount("state.git", "main")
	b.ResetTimer()
	start := time.Now()
	createAll(b, n)
	created := time.Since(start)
	waitAllReady(b, n)
	elapsed := time.Since(start)
	b.StopTimer()

	reconciles := counter(b, "controller_runtime_reconcile_total", "request-team") - reconcilesBefore
	commits := git.CommitCount("state.git", "main") - commitsBefore
	b.ReportMetric(elapsed.Seconds(), "s-to-all-ready")
	b.ReportMetric(reconciles/float64(n), "reconciles/request")
	b.ReportMetric(float64(commits), "commits")
	b.Logf("%d requests: created in %s, all Ready and pushed after %s; %.2f reconciles per request; %d commits", n, created.Round(time.Millisecond), elapsed.Round(time.Millisecond), reconciles/float64(n), commits)
}

// createAll creates n Team requests from 16 goroutines, as many clients
// applying at once would.
func createAll(b *testing.B, n int) {
	var wg sync.WaitGroup
	errs := make(chan error, n)
	work := make(chan int, n)
	for i := range n {
		work <- i
	}
	close(work)
	for range 16 {
		wg.Go(func() {
			for i := range work {
				if err := k8s.Create(context.Background(), harness.Team("default", fmt.Sprintf("team-%05d", i))); err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatalf("creating a request: %v", err)
	}
}

func waitAllReady(b *testing.B, n int) {
	deadline := time.Now().Add(10 * time.Minute)
	for time.Now().Before(deadline) {
		list := &unstructured.UnstructuredList{}
		list.SetAPIVersion("example.promised.dev/v1")
		list.SetKind("TeamList")
		require.NoError(b, k8s.List(context.Background(), list))
		ready := 0
		for _, item := range list.Items {
			conds, _, _ := unstructured.NestedSlice(item.Object, "status", "conditions")
			for _, c := range conds {
				if m, ok := c.(map[string]any); ok && m["type"] == "Ready" && m["status"] == "True" {
					ready++
				}
			}
		}
		if ready == n {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	b.Fatalf("not every request became Ready within 10 minutes")
}

// counter sums a counter of the in-process controller's metrics with the
// given controller label.
func counter(b *testing.B, name, controllerName string) float64 {
	families, err := metrics.Registry.Gather()
	require.NoError(b, err)
	var sum float64
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "controller" && l.GetValue() == controllerName {
					sum += m.GetCounter().GetValue()
				}
			}
		}
	}
	return sum
}
