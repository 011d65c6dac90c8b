package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// controllerProc is `promised controller` running as its own process, so
// that its memory and CPU are its own and not the benchmark's.
type controllerProc struct {
	cmd        *exec.Cmd
	done       chan error
	metricsURL string
	pprofBase  string // "" without profiling
	logPath    string
}

// buildPromised compiles ./cmd/promised into dir.
func buildPromised(ctx context.Context, root, dir string) (string, error) {
	out := filepath.Join(dir, "promised")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, "./cmd/promised")
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/promised: %w\n%s", err, b)
	}
	return out, nil
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// startController runs bin's controller against kubeconfig with its
// default settings; only addresses and folders are given.
func startController(bin, kubeconfig, stateDir, logPath string, pprof bool, extra []string) (*controllerProc, error) {
	metricsAddr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	probeAddr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	args := []string{"controller", "--kubeconfig", kubeconfig, "--state-dir", stateDir,
		"--metrics-bind-address", metricsAddr, "--health-probe-bind-address", probeAddr}
	p := &controllerProc{metricsURL: "http://" + metricsAddr + "/metrics", logPath: logPath, done: make(chan error, 1)}
	if pprof {
		addr, err := freeAddr()
		if err != nil {
			return nil, err
		}
		args = append(args, "--pprof-bind-address", addr)
		p.pprofBase = "http://" + addr + "/debug/pprof/"
	}
	args = append(args, extra...)
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	// Its own process group, so a Ctrl-C of the benchmark reaches it
	// through our shutdown, not half-way through a write.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := p.cmd.Start(); err != nil {
		_ = logf.Close()
		return nil, fmt.Errorf("starting %s controller: %w", bin, err)
	}
	go func() {
		p.done <- p.cmd.Wait()
		_ = logf.Close()
	}()
	// The controller registers no readiness check (its /readyz is a 404),
	// so it counts as started once it serves /metrics.
	deadline := time.Now().Add(2 * time.Minute)
	for {
		select {
		case err := <-p.done:
			p.done <- err
			return nil, fmt.Errorf("the controller exited at start (%v); its log: %s\n%s", err, logPath, tail(logPath, 2000))
		case <-time.After(100 * time.Millisecond):
		}
		if _, err := scrape(context.Background(), p.metricsURL); err == nil {
			return p, nil
		}
		if time.Now().After(deadline) {
			p.stop()
			return nil, fmt.Errorf("the controller was not ready within 2 minutes; its log: %s", logPath)
		}
	}
}

func (p *controllerProc) pid() int { return p.cmd.Process.Pid }

func (p *controllerProc) alive() error {
	select {
	case err := <-p.done:
		p.done <- err
		return fmt.Errorf("the controller exited (%v); its log: %s\n%s", err, p.logPath, tail(p.logPath, 2000))
	default:
		return nil
	}
}

// stop sends SIGTERM and waits (SIGKILL after 20 s).
func (p *controllerProc) stop() {
	if p == nil || p.cmd.Process == nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.done:
		p.done <- err
	case <-time.After(20 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

func tail(path string, n int64) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.Size() > n {
		_, _ = f.Seek(-n, io.SeekEnd)
	}
	b, _ := io.ReadAll(f)
	return string(b)
}

// fetch saves one pprof endpoint's answer to path.
func (p *controllerProc) fetch(ctx context.Context, endpoint, path string, seconds int) error {
	if p.pprofBase == "" {
		return errors.New("profiling is off")
	}
	url := p.pprofBase + endpoint
	if seconds > 0 {
		url += "?seconds=" + strconv.Itoa(seconds)
	}
	ctx, cancel := context.WithTimeout(ctx, time.Duration(seconds+30)*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("fetching %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("fetching %s: %s: %s", url, resp.Status, b)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}
