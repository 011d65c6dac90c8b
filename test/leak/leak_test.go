// Package leak checks that the controller's memory and goroutines stay
// flat over many create/delete cycles: a controller that leaks a
// goroutine or a cache entry per request dies slowly in production.
package leak

import (
	"context"
	"flag"
	"fmt"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"promised.dev/promised/cmd/builtin"
	"promised.dev/promised/test/harness"
)

var (
	cycles = flag.Int("cycles", 200, "create/delete cycles (make chaos runs 1000)")
	k8s    client.Client
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

func TestMemoryAndGoroutinesStayFlat(t *testing.T) {
	harness.GitStore(t, k8s, "git")
	harness.Destination(t, k8s, "dev", "git", map[string]string{"environment": "dev"})
	harness.InstallPromise(t, k8s, "../../examples/team")

	const parallel = 10
	round := func(r int) {
		var wg sync.WaitGroup
		for i := range parallel {
			wg.Go(func() { cycle(t, fmt.Sprintf("c%d-%d", r, i)) })
		}
		wg.Wait()
	}
	rounds := *cycles / parallel
	warm := max(rounds/10, 2)
	for r := range warm {
		round(r)
	}
	g0, h0 := sample()
	for r := warm; r < rounds; r++ {
		round(r)
	}
	g1, h1 := sample()
	t.Logf("%d create/delete cycles: goroutines %d -> %d, heap in use %.1f MiB -> %.1f MiB (after %d warm-up cycles)",
		rounds*parallel, g0, g1, mib(h0), mib(h1), warm*parallel)
	require.LessOrEqual(t, g1, g0+20, "goroutines grow with requests handled")
	require.LessOrEqual(t, h1, h0+h0/2+8<<20, "heap grows with requests handled")
}

// cycle creates a request, waits until it is Ready, deletes it and waits
// until it is gone (finalizer removed).
func cycle(t *testing.T, name string) {
	ctx := context.Background()
	u := harness.Team("default", name)
	require.NoError(t, k8s.Create(ctx, u))
	key := client.ObjectKeyFromObject(u)
	require.Eventually(t, func() bool { return harness.Ready(ctx, k8s, harness.TeamGVK, key) }, time.Minute, 20*time.Millisecond, "request %s never Ready", name)
	require.NoError(t, k8s.Delete(ctx, u))
	require.Eventually(t, func() bool {
		got := &unstructured.Unstructured{}
		got.SetGroupVersionKind(harness.TeamGVK)
		return apierrors.IsNotFound(k8s.Get(ctx, key, got))
	}, time.Minute, 20*time.Millisecond, "request %s never deleted", name)
}

// sample returns the goroutine count and heap in use after two GCs, once
// in-flight work has settled.
func sample() (int, uint64) {
	time.Sleep(2 * time.Second)
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return runtime.NumGoroutine(), ms.HeapInuse
}

func mib(b uint64) float64 { return float64(b) / (1 << 20) }
