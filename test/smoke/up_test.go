// Package smoke runs the README's main command the way a newcomer does:
// `promised up --with-examples --exit-when-ready` on a fresh state folder.
package smoke

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestUpWithExamplesConverges(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "promised")
	build := exec.Command("go", "build", "-o", bin, "../../cmd/promised")
	out, err := build.CombinedOutput()
	require.NoError(t, err, "building promised: %s", out)

	// Not t.TempDir(): its parent is private to this user, and the
	// throwaway PostgreSQL runs as its own user and must reach its folder.
	state, err := os.MkdirTemp("", "promised-smoke-")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(state) })
	run := func() string {
		ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin, "up", "--with-examples", "--exit-when-ready", "--state-dir", state, "--root", "../..")
		cmd.Env = os.Environ()
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "promised up failed:\n%s", out)
		return string(out)
	}
	first := run()
	t.Logf("first run:\n%s", first)
	require.Contains(t, first, "requests Ready and applied on their clusters")
	require.Contains(t, first, "applied on dev")
	require.NotContains(t, first, "NotReady")
	require.Contains(t, first, "connected to database orders", "the delivered database credentials work")
	require.Contains(t, first, "connected to NATS with the delivered credentials", "the delivered NATS credentials work")

	// A second up reuses the state folder: same Git history, same keys,
	// nothing to redo.
	second := run()
	t.Logf("second run:\n%s", second)
	require.Contains(t, second, "applied on dev")
	for _, f := range []string{"platform.kubeconfig", "dev.kubeconfig", "prod.kubeconfig", "git-password", "dev/sealing.key"} {
		_, err := os.Stat(filepath.Join(state, f))
		require.NoError(t, err, f)
	}
	require.False(t, strings.Contains(second, "panic"), "no panic")
}
