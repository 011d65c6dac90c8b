package pipelines

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"sort"
	"strings"
	"syscall"
	"time"

	"promised.dev/promised/api/v1alpha1"
	"promised.dev/promised/pipelines/contract"
)

// Exec runs each stage as a subprocess with the contract's folders rooted
// at the workspace through contract.RootEnv. Resolve maps an image to the
// command that runs it locally.
type Exec struct {
	Resolve func(image string) (argv []string, ok bool)
}

// RunContainer implements ContainerRunner.
func (r Exec) RunContainer(ctx context.Context, c v1alpha1.Container, ws contract.Workspace, env map[string]string) error {
	argv, ok := r.Resolve(c.Image)
	if !ok || len(argv) == 0 {
		return fmt.Errorf("no local command for image %s", c.Image)
	}
	argv = append(argv, c.Args...)
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = append(baseEnv(), envList(env)...)
	cmd.Env = append(cmd.Env, contract.RootEnv+"="+ws.Root)
	cmd.Dir = ws.Root
	// Its own process group, so a timeout kills whatever the stage started.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	return runCommand(cmd)
}

// runCommand runs cmd and folds the tail of its output into the error, so
// a failing stage's own message reaches the request's status.
func runCommand(cmd *exec.Cmd) error {
	out := &tailBuffer{max: 4096}
	cmd.Stdout = out
	cmd.Stderr = out
	if err := cmd.Run(); err != nil {
		if msg := strings.TrimSpace(out.String()); msg != "" {
			return fmt.Errorf("%w: %s", err, msg)
		}
		return err
	}
	return nil
}

// baseEnv is the part of our environment a stage may see: enough to run
// (PATH, HOME, TMPDIR), none of the controller's own configuration.
func baseEnv() []string {
	var out []string
	for _, k := range []string{"PATH", "HOME", "TMPDIR"} {
		if v, ok := os.LookupEnv(k); ok {
			out = append(out, k+"="+v)
		}
	}
	return out
}

func envList(env map[string]string) []string {
	out := make([]string, 0, len(env))
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return out
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	max int
	buf bytes.Buffer
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.buf.Write(p)
	if extra := t.buf.Len() - t.max; extra > 0 {
		t.buf.Next(extra)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string { return t.buf.String() }
