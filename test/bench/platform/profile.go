package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"promised.dev/promised/test/liveplatform"
)

// cpuRecorder records the controller's CPU profile for as long as a phase
// lasts: consecutive 5 s profiles, merged when the phase ends, so the
// profile covers the phase whatever its length (rounded up to 5 s).
type cpuRecorder struct {
	cancel context.CancelFunc
	done   chan []string
	dir    string
	name   string
}

const cpuChunkSeconds = 5

func recordCPU(ctx context.Context, c *liveplatform.Controller, dir, name string) *cpuRecorder {
	if dir == "" {
		return nil
	}
	ctx, cancel := context.WithCancel(ctx)
	r := &cpuRecorder{cancel: cancel, done: make(chan []string, 1), dir: dir, name: name}
	go func() {
		var chunks []string
		for i := 0; ctx.Err() == nil; i++ {
			path := filepath.Join(dir, fmt.Sprintf(".%s-%03d.pb.gz", name, i))
			// The fetch outlives ctx by design: a chunk under way is
			// finished so that the phase's last seconds are kept.
			if err := c.Fetch(context.Background(), "profile", path, cpuChunkSeconds); err != nil {
				progress("CPU profile chunk: %v", err)
				break
			}
			chunks = append(chunks, path)
		}
		r.done <- chunks
	}()
	return r
}

// stop ends the recording and writes <dir>/cpu-<name>.pb.gz.
func (r *cpuRecorder) stop() (string, error) {
	if r == nil {
		return "", nil
	}
	r.cancel()
	chunks := <-r.done
	if len(chunks) == 0 {
		return "", fmt.Errorf("no CPU profile recorded for %s", r.name)
	}
	out := filepath.Join(r.dir, "cpu-"+r.name+".pb.gz")
	args := append([]string{"tool", "pprof", "-proto"}, chunks...)
	cmd := exec.Command("go", args...)
	f, err := os.Create(out)
	if err != nil {
		return "", err
	}
	cmd.Stdout = f
	var stderr strings.Builder
	cmd.Stderr = &stderr
	err = cmd.Run()
	_ = f.Close()
	if err != nil {
		return "", fmt.Errorf("merging CPU profiles: %w: %s", err, stderr.String())
	}
	for _, c := range chunks {
		_ = os.Remove(c)
	}
	return out, nil
}

// pprofTop returns `go tool pprof -top` of a profile, its first n entries.
func pprofTop(path string, n int, extra ...string) string {
	args := append([]string{"tool", "pprof", "-top", fmt.Sprintf("-nodecount=%d", n)}, extra...)
	args = append(args, path)
	out, err := exec.Command("go", args...).CombinedOutput()
	if err != nil {
		return fmt.Sprintf("go tool pprof: %v: %s", err, out)
	}
	return string(out)
}
