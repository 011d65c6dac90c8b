package liveplatform

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"time"
)

// Controller is `promised controller` running as its own process.
type Controller struct {
	cmd  *exec.Cmd
	done chan error
	// MetricsURL is its /metrics.
	MetricsURL string
	// LogPath is where its output goes.
	LogPath   string
	pprofBase string // "" without profiling
	killed    bool
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// startController runs bin's controller with args, on free addresses, and
// waits until it serves /metrics (it registers no readiness check of its
// own).
func startController(bin, logPath string, pprof bool, args []string) (*Controller, error) {
	metricsAddr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	probeAddr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	c := &Controller{MetricsURL: "http://" + metricsAddr + "/metrics", LogPath: logPath, done: make(chan error, 1)}
	args = append([]string{"controller", "--metrics-bind-address", metricsAddr, "--health-probe-bind-address", probeAddr}, args...)
	if pprof {
		addr, err := freeAddr()
		if err != nil {
			return nil, err
		}
		args = append(args, "--pprof-bind-address", addr)
		c.pprofBase = "http://" + addr + "/debug/pprof/"
	}
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	c.cmd = exec.Command(bin, args...)
	c.cmd.Stdout, c.cmd.Stderr = logf, logf
	// Its own process group: a Ctrl-C of the caller reaches it through
	// Stop, not half-way through a write, and Kill takes all of it.
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := c.cmd.Start(); err != nil {
		_ = logf.Close()
		return nil, fmt.Errorf("starting %s controller: %w", bin, err)
	}
	go func() {
		c.done <- c.cmd.Wait()
		_ = logf.Close()
	}()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		if err := c.Alive(); err != nil {
			return nil, err
		}
		if resp, err := http.Get(c.MetricsURL); err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return c, nil
			}
		}
		if time.Now().After(deadline) {
			c.Stop()
			return nil, fmt.Errorf("the controller did not serve /metrics within 2 minutes; its log: %s", logPath)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// PID is the controller's process ID.
func (c *Controller) PID() int { return c.cmd.Process.Pid }

// Alive returns an error, with the end of its log, when the controller
// exited without being killed.
func (c *Controller) Alive() error {
	select {
	case err := <-c.done:
		c.done <- err
		if c.killed {
			return nil
		}
		return fmt.Errorf("the controller exited by itself (%v); its log: %s\n%s", err, c.LogPath, Tail(c.LogPath, 3000))
	default:
		return nil
	}
}

// Kill sends SIGKILL to the controller's process group and waits for it.
func (c *Controller) Kill() error {
	if err := c.Alive(); err != nil {
		return err
	}
	c.killed = true
	if err := syscall.Kill(-c.cmd.Process.Pid, syscall.SIGKILL); err != nil {
		return fmt.Errorf("kill -9 %d: %w", c.cmd.Process.Pid, err)
	}
	err := <-c.done
	c.done <- err
	return nil
}

// Stop sends SIGTERM and waits (SIGKILL after 20 s).
func (c *Controller) Stop() {
	if c == nil || c.cmd.Process == nil || c.killed {
		return
	}
	select {
	case err := <-c.done:
		c.done <- err
		return
	default:
	}
	_ = syscall.Kill(-c.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case err := <-c.done:
		c.done <- err
	case <-time.After(20 * time.Second):
		_ = syscall.Kill(-c.cmd.Process.Pid, syscall.SIGKILL)
		<-c.done
	}
}

// Fetch saves one of the controller's pprof endpoints to path (seconds > 0
// for a profile over that long).
func (c *Controller) Fetch(ctx context.Context, endpoint, path string, seconds int) error {
	if c.pprofBase == "" {
		return errors.New("profiling is off")
	}
	url := c.pprofBase + endpoint
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

// Tail returns the last n bytes of the file at path ("" when unreadable).
func Tail(path string, n int64) string {
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
