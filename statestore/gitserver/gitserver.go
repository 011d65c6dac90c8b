// Package gitserver serves bare Git repositories over smart HTTP with
// basic auth, by running the system's `git http-backend`: the state store
// of `promised up`, and the real server the tests push to.
package gitserver

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cgi"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// ErrNoGit says the git binary, or its http-backend, is missing.
var ErrNoGit = errors.New("the git binary with git-http-backend is required: install it with `apt-get install git`")

// GitPath returns the git binary, checking that http-backend is there.
func GitPath() (string, error) {
	p, err := exec.LookPath("git")
	if err != nil {
		return "", ErrNoGit
	}
	out, err := exec.Command(p, "--exec-path").Output()
	if err != nil {
		return "", fmt.Errorf("running git --exec-path: %w", err)
	}
	if _, err := os.Stat(filepath.Join(strings.TrimSpace(string(out)), "git-http-backend")); err != nil {
		return "", ErrNoGit
	}
	return p, nil
}

// Config describes what to serve.
type Config struct {
	// Git is the git binary (GitPath).
	Git string
	// Root holds the bare repositories, served as /<name>.
	Root string
	// Username and Password are the basic-auth credentials accepted.
	Username, Password string
	// Home is the HOME of the git processes; Root when empty. No system
	// or user configuration is read, so the machine's settings cannot
	// change what is served.
	Home string
	// BeforeReceivePack, when set, runs before each push reaches git.
	BeforeReceivePack func()
}

// Handler serves c's repositories; every request needs the credentials.
func Handler(c Config) http.Handler {
	home := c.Home
	if home == "" {
		home = c.Root
	}
	backend := &cgi.Handler{
		Path: c.Git,
		Args: []string{"http-backend"},
		Env: []string{
			"GIT_PROJECT_ROOT=" + c.Root,
			"GIT_HTTP_EXPORT_ALL=1",
			"REMOTE_USER=" + c.Username,
			"HOME=" + home,
			"GIT_CONFIG_NOSYSTEM=1",
			// Pushing over HTTP is off unless enabled.
			"GIT_CONFIG_COUNT=1", "GIT_CONFIG_KEY_0=http.receivepack", "GIT_CONFIG_VALUE_0=true",
		},
		Stderr: io.Discard,
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		user, pass, ok := r.BasicAuth()
		if !ok || user != c.Username || pass != c.Password {
			w.Header().Set("WWW-Authenticate", `Basic realm="promised"`)
			http.Error(w, "authentication required", http.StatusUnauthorized)
			return
		}
		if c.BeforeReceivePack != nil && r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/git-receive-pack") {
			c.BeforeReceivePack()
		}
		// CGI cannot take chunked bodies (the git CLI sends large pushes
		// chunked): buffer them.
		if len(r.TransferEncoding) > 0 {
			body, err := io.ReadAll(r.Body)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			r.Body = io.NopCloser(bytes.NewReader(body))
			r.ContentLength = int64(len(body))
			r.TransferEncoding = nil
		}
		backend.ServeHTTP(w, r)
	})
}

// InitBare creates the bare repository name under root (default branch
// main, pushes over HTTP allowed) unless it exists.
func InitBare(git, root, name string) (string, error) {
	dir := filepath.Join(root, name)
	if _, err := os.Stat(filepath.Join(dir, "HEAD")); err == nil {
		return dir, nil
	}
	for _, args := range [][]string{
		{"init", "--quiet", "--bare", "--initial-branch=main", dir},
		{"-C", dir, "config", "http.receivepack", "true"},
	} {
		cmd := exec.Command(git, args...)
		cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "HOME="+root)
		if out, err := cmd.CombinedOutput(); err != nil {
			return "", fmt.Errorf("git %s: %w: %s", strings.Join(args, " "), err, out)
		}
	}
	return dir, nil
}

// Server is a running Git HTTP server.
type Server struct {
	srv  *http.Server
	addr string
}

// Start serves c on addr ("127.0.0.1:0" for any free port).
func Start(c Config, addr string) (*Server, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listening for the Git server on %s: %w", addr, err)
	}
	s := &Server{srv: &http.Server{Handler: Handler(c), ReadHeaderTimeout: 10 * time.Second}, addr: l.Addr().String()}
	go func() { _ = s.srv.Serve(l) }()
	return s, nil
}

// URL is the smart HTTP URL of repository name (without credentials).
func (s *Server) URL(name string) string { return "http://" + s.addr + "/" + name }

// Close stops the server.
func (s *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return s.srv.Shutdown(ctx)
}
