// Package gittest runs real Git servers for tests: bare repositories on
// disk, served over smart HTTP (git http-backend behind basic auth) and over
// SSH (git-upload-pack / git-receive-pack behind public key auth), both
// backed by the system git binary. It also drives the git CLI as an
// independent client to check what landed.
//
// It is a regular package so that tests elsewhere (the controller's) can
// use it. Nothing here is a mock: what passes against it passes against Git.
package gittest

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"promised.dev/promised/statestore/gitserver"
)

// Server holds bare repositories under a temporary root and serves them.
// Create it with New; it is torn down by the test's cleanup.
type Server struct {
	t        testing.TB
	gitPath  string
	root     string
	home     string
	username string
	password string

	mu                sync.Mutex
	httpSrv           *httptest.Server
	httpAddr          string
	beforeReceivePack func()
	ssh               *sshServer
}

// RequireGit returns the path of the git binary, failing the test (never
// skipping it) when git is not installed.
func RequireGit(t testing.TB) string {
	t.Helper()
	p, err := gitserver.GitPath()
	if err != nil {
		t.Fatalf("gittest: these tests run a real Git server: %v", err)
	}
	return p
}

// New starts a server with an HTTP endpoint (basic auth user "promised",
// a random password). SSH starts on first use of SSHURL.
func New(t testing.TB) *Server {
	t.Helper()
	s := &Server{
		t:        t,
		gitPath:  RequireGit(t),
		root:     t.TempDir(),
		home:     t.TempDir(),
		username: "promised",
		password: "pw-" + randomHex(12),
	}
	s.StartHTTP()
	t.Cleanup(s.close)
	return s
}

// Root is the directory holding the bare repositories.
func (s *Server) Root() string { return s.root }

// Username and Password are the HTTP basic credentials the server accepts.
func (s *Server) Username() string { return s.username }

// Password is the HTTP basic password the server accepts.
func (s *Server) Password() string { return s.password }

// Env is the environment every git command of this package runs with: an
// empty HOME and no system config, so the machine's Git settings cannot
// change the outcome.
func (s *Server) Env() []string {
	return append(os.Environ(),
		"HOME="+s.home,
		"XDG_CONFIG_HOME="+s.home,
		"GIT_CONFIG_NOSYSTEM=1",
		"GIT_TERMINAL_PROMPT=0",
		"GIT_AUTHOR_NAME=gittest", "GIT_AUTHOR_EMAIL=gittest@localhost",
		"GIT_COMMITTER_NAME=gittest", "GIT_COMMITTER_EMAIL=gittest@localhost",
	)
}

// InitBare creates an empty bare repository (default branch main) and
// returns its path on disk. name is relative to Root, e.g. "state.git".
func (s *Server) InitBare(name string) string {
	s.t.Helper()
	dir := filepath.Join(s.root, name)
	s.Git("", "init", "--quiet", "--bare", "--initial-branch=main", dir)
	s.Git(dir, "config", "http.receivepack", "true")
	return dir
}

// HTTPURL is the smart HTTP URL of repository name (no credentials in it).
func (s *Server) HTTPURL(name string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return "http://" + s.httpAddr + "/" + name
}

// BeforeReceivePack sets a function run when a push (a git-receive-pack
// POST) arrives, before git sees it; nil removes it. Tests use it to push a
// foreign commit between a client's ref advertisement and its push.
func (s *Server) BeforeReceivePack(fn func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.beforeReceivePack = fn
}

// StartHTTP starts (or restarts, on the same address) the HTTP endpoint.
func (s *Server) StartHTTP() {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.httpSrv != nil {
		return
	}
	addr := s.httpAddr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	var l net.Listener
	var err error
	for i := 0; i < 50; i++ { // the old socket may linger for a moment
		if l, err = net.Listen("tcp", addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		s.t.Fatalf("gittest: listening on %s: %v", addr, err)
	}
	srv := httptest.NewUnstartedServer(s.httpHandler())
	_ = srv.Listener.Close()
	srv.Listener = l
	srv.Start()
	s.httpSrv = srv
	s.httpAddr = l.Addr().String()
}

// StopHTTP stops the HTTP endpoint; clients get connection refused until
// StartHTTP.
func (s *Server) StopHTTP() {
	s.mu.Lock()
	srv := s.httpSrv
	s.httpSrv = nil
	s.mu.Unlock()
	if srv != nil {
		srv.CloseClientConnections()
		srv.Close()
	}
}

func (s *Server) httpHandler() http.Handler {
	return gitserver.Handler(gitserver.Config{
		Git: s.gitPath, Root: s.root, Username: s.username, Password: s.password, Home: s.home,
		BeforeReceivePack: func() {
			s.mu.Lock()
			fn := s.beforeReceivePack
			s.mu.Unlock()
			if fn != nil {
				fn()
			}
		},
	})
}

func (s *Server) close() {
	s.StopHTTP()
	s.mu.Lock()
	ssh := s.ssh
	s.ssh = nil
	s.mu.Unlock()
	if ssh != nil {
		ssh.close()
	}
}

// Git runs the git CLI in dir ("" for the current directory) and returns
// its trimmed output, failing the test on error.
func (s *Server) Git(dir string, args ...string) string {
	s.t.Helper()
	out, err := s.TryGit(dir, args...)
	if err != nil {
		s.t.Fatalf("gittest: %v", err)
	}
	return out
}

// TryGit is Git returning the error instead of failing the test.
func (s *Server) TryGit(dir string, args ...string) (string, error) {
	cmd := exec.Command(s.gitPath, args...)
	cmd.Dir = dir
	cmd.Env = s.Env()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("git %s: %w\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return strings.TrimSpace(stdout.String()), nil
}

// Clone clones bare repository name (from disk, independently of any server
// code) into a new temporary directory and returns it.
func (s *Server) Clone(name string) string {
	s.t.Helper()
	dir := filepath.Join(s.t.TempDir(), "clone")
	s.Git("", "clone", "--quiet", filepath.Join(s.root, name), dir)
	return dir
}

// Head returns the commit branch points at in bare repository name, or ""
// when the branch does not exist.
func (s *Server) Head(name, branch string) string {
	s.t.Helper()
	out, err := s.TryGit(filepath.Join(s.root, name), "rev-parse", "--verify", "--quiet", "refs/heads/"+branch)
	if err != nil {
		return ""
	}
	return out
}

// CommitCount returns the number of commits reachable from branch.
func (s *Server) CommitCount(name, branch string) int {
	s.t.Helper()
	if s.Head(name, branch) == "" {
		return 0
	}
	var n int
	out := s.Git(filepath.Join(s.root, name), "rev-list", "--count", "refs/heads/"+branch)
	if _, err := fmt.Sscan(out, &n); err != nil {
		s.t.Fatalf("gittest: parsing commit count %q: %v", out, err)
	}
	return n
}

// Files returns every file at commit-ish rev of bare repository name, keyed
// by path, read with the git CLI (ls-tree and cat-file).
func (s *Server) Files(name, rev string) map[string]string {
	s.t.Helper()
	dir := filepath.Join(s.root, name)
	files := map[string]string{}
	out := s.Git(dir, "ls-tree", "-r", "-z", "--full-tree", rev)
	if out == "" {
		return files
	}
	var blobs []string
	var paths []string
	for _, rec := range strings.Split(strings.TrimRight(out, "\x00"), "\x00") {
		// "<mode> blob <hash>\t<path>"
		meta, path, ok := strings.Cut(rec, "\t")
		fields := strings.Fields(meta)
		if !ok || len(fields) != 3 {
			s.t.Fatalf("gittest: unexpected ls-tree record %q", rec)
		}
		blobs = append(blobs, fields[2])
		paths = append(paths, path)
	}
	// One cat-file process for all blobs, not one per file.
	cmd := exec.Command(s.gitPath, "cat-file", "--batch")
	cmd.Dir = dir
	cmd.Env = s.Env()
	cmd.Stdin = strings.NewReader(strings.Join(blobs, "\n") + "\n")
	raw, err := cmd.Output()
	if err != nil {
		s.t.Fatalf("gittest: git cat-file --batch: %v", err)
	}
	for i := range blobs {
		// "<hash> blob <size>\n<content>\n"
		nl := bytes.IndexByte(raw, '\n')
		var h, typ string
		var size int
		if _, err := fmt.Sscan(string(raw[:nl]), &h, &typ, &size); err != nil {
			s.t.Fatalf("gittest: parsing cat-file header %q: %v", raw[:nl], err)
		}
		files[paths[i]] = string(raw[nl+1 : nl+1+size])
		raw = raw[nl+1+size+1:]
	}
	return files
}

// PushFile commits one file (creating or replacing it) on branch of bare
// repository name with the git CLI, as another user of the repository would,
// and returns the new commit.
func (s *Server) PushFile(name, branch, path, content string) string {
	s.t.Helper()
	dir := filepath.Join(s.t.TempDir(), "foreign")
	bare := filepath.Join(s.root, name)
	s.Git("", "init", "--quiet", "--initial-branch="+branch, dir)
	if s.Head(name, branch) != "" {
		s.Git(dir, "fetch", "--quiet", bare, branch)
		s.Git(dir, "reset", "--quiet", "--hard", "FETCH_HEAD")
	}
	full := filepath.Join(dir, filepath.FromSlash(path))
	if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
		s.t.Fatalf("gittest: %v", err)
	}
	if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
		s.t.Fatalf("gittest: %v", err)
	}
	s.Git(dir, "add", "--all")
	s.Git(dir, "commit", "--quiet", "-m", "foreign commit: "+path)
	s.Git(dir, "push", "--quiet", bare, "HEAD:refs/heads/"+branch)
	return s.Git(dir, "rev-parse", "HEAD")
}

// Fsck runs git fsck --strict on bare repository name and fails the test
// when it finds a problem.
func (s *Server) Fsck(name string) {
	s.t.Helper()
	if out, err := s.TryGit(filepath.Join(s.root, name), "fsck", "--strict", "--no-progress"); err != nil {
		s.t.Fatalf("gittest: fsck of %s: %v\n%s", name, err, out)
	}
}

var errBadPath = errors.New("repository path escapes the server root")

// repoPath maps a path from a request (SSH command) to a repository under
// root, refusing anything outside it.
func repoPath(root, p string) (string, error) {
	clean := filepath.Clean("/" + p)
	full := filepath.Join(root, clean)
	if full != root && !strings.HasPrefix(full, root+string(filepath.Separator)) {
		return "", errBadPath
	}
	return full, nil
}
