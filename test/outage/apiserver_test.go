package outage

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"promised.dev/promised/cmd/builtin"
	"promised.dev/promised/controller"
	"promised.dev/promised/test/controlplane"
	"promised.dev/promised/test/harness"
)

var cp *controlplane.ControlPlane

func TestMain(m *testing.M) {
	os.Exit(controlplane.RunTests(m, controlplane.Options{CRDDirectoryPaths: []string{"../../config/crd"}, ErrorIfCRDPathMissing: true},
		func(c *controlplane.ControlPlane) error { cp = c; return nil }))
}

// TestControllerResumesAfterTheAPIServerGoesAway runs the controller
// through a proxy to the kube-apiserver and cuts it for 15 s: every watch
// and connection drops, as when the apiserver restarts. Requests made
// meanwhile converge once it is back, with nothing done twice.
func TestControllerResumesAfterTheAPIServerGoesAway(t *testing.T) {
	u, err := url.Parse(cp.Config.Host)
	require.NoError(t, err)
	px, err := newProxy(u.Host)
	require.NoError(t, err)
	cfg := rest.CopyConfig(cp.Config)
	cfg.Host = "https://" + px.addr
	cfg.Timeout = 10 * time.Second
	reg, err := builtin.Registry()
	require.NoError(t, err)
	platform, err := harness.StartOn(cfg, reg)
	require.NoError(t, err)
	defer platform.Stop()

	// The test's own client talks to the apiserver directly.
	scheme, err := controller.Scheme()
	require.NoError(t, err)
	k8s, err := client.New(cp.Config, client.Options{Scheme: scheme})
	require.NoError(t, err)
	ctx := context.Background()

	git := harness.GitStore(t, k8s, "git")
	harness.Destination(t, k8s, "dev", "git", map[string]string{"environment": "dev"})
	harness.InstallPromise(t, k8s, "../../examples/team")
	ready := func(name string) func() bool {
		return func() bool {
			return harness.Ready(ctx, k8s, harness.TeamGVK, client.ObjectKey{Namespace: "default", Name: name})
		}
	}
	team := func(name string) *unstructured.Unstructured { return harness.Team("default", name) }
	require.NoError(t, k8s.Create(ctx, team("before")))
	require.Eventually(t, ready("before"), time.Minute, 100*time.Millisecond)
	commits := git.CommitCount("state.git", "main")

	px.cut()
	cut := time.Now()
	for i := range 3 {
		require.NoError(t, k8s.Create(ctx, team(fmt.Sprintf("during-%d", i))))
	}
	time.Sleep(15*time.Second - time.Since(cut))
	require.NoError(t, px.restore())
	back := time.Now()
	for i := range 3 {
		require.Eventually(t, ready(fmt.Sprintf("during-%d", i)), 2*time.Minute, 100*time.Millisecond)
	}
	t.Logf("apiserver unreachable for 15s: the 3 requests made meanwhile were Ready %s after it came back", time.Since(back).Round(time.Millisecond))
	made := git.CommitCount("state.git", "main") - commits
	require.True(t, made >= 1 && made <= 3, "three new requests make one to three commits, not %d", made)
	files := git.Files("state.git", "main")
	for i := range 3 {
		require.Contains(t, files, fmt.Sprintf("dev/resources/default/team/during-%d/render/namespace.yaml", i))
	}
}
