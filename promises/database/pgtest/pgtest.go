// Package pgtest runs a real, throwaway PostgreSQL server on this machine:
// a cluster made with the system's initdb in a folder of the caller's,
// served on a loopback port with password (SCRAM) authentication, for the
// database promise's tests, the crash test and `promised up`.
//
// Nothing here is a mock: a test that passes against it passed against
// PostgreSQL. The server binaries come from the system (Debian's
// postgresql package puts them in /usr/lib/postgresql/<major>/bin, off
// PATH); when they are missing, Start fails with ErrBinariesMissing, whose
// text says what to install, and the testing wrapper New fails the test
// rather than skipping it, so a machine without PostgreSQL never reports a
// green suite it did not run.
//
// initdb and postgres refuse to run as root. Run as root, this package runs
// them as the unprivileged "postgres" user the Debian package creates, in
// a folder owned by that user; run as anyone else, it runs them as that
// user.
package pgtest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// EnvBinDir names the variable that points at the folder holding initdb and
// postgres; it wins over the search of the system's install locations.
const EnvBinDir = "PROMISED_POSTGRES_BIN"

// ErrBinariesMissing is returned (wrapped) when initdb or postgres cannot
// be found. Its text is what a developer has to do about it.
var ErrBinariesMissing = errors.New("PostgreSQL server binaries (initdb, postgres) not found: install them with `apt-get update && apt-get install -y postgresql` (Debian puts them in /usr/lib/postgresql/<major>/bin), or set " + EnvBinDir + " to the folder holding them")

// Superuser is the name of the cluster's bootstrap superuser.
const Superuser = "postgres"

// serverUser is the account initdb and postgres run as when this process
// is root; Debian's postgresql package creates it.
const serverUser = "postgres"

// Files of the server's folder.
const (
	dataDir      = "data"
	logFile      = "postgres.log"
	passwordFile = "superuser-password"
)

// Options configures StartWith. The zero value is what tests want.
type Options struct {
	// Port to listen on; 0 picks a free one.
	Port int
	// Settings are extra server settings (postgresql.conf names), such as
	// {"log_statement": "all"}; they override this package's defaults.
	Settings map[string]string
}

// Server is a running PostgreSQL server. Stop it when done: it is also
// stopped when the process that started it exits, even by a crash.
type Server struct {
	// Host and Port are where it listens (a loopback address).
	Host string
	Port int
	// User and Password authenticate as its superuser.
	User     string
	Password string
	// Dir is the server's folder: the data folder, the log and the
	// superuser's password.
	Dir string

	cmd      *exec.Cmd
	exited   chan struct{}
	waitErr  error
	stopOnce sync.Once
	stopErr  error
}

// Start starts a server for the cluster in dir with default Options,
// creating the cluster first when dir holds none. See StartWith.
func Start(dir string) (*Server, error) { return StartWith(dir, Options{}) }

// StartWith starts a server for the cluster in dir, creating dir and the
// cluster (with a random superuser password, kept in dir) when dir holds
// none, so a second start on the same dir, as `promised up` does, finds the
// same databases. The server writes its log to dir/postgres.log.
//
// Run as root, dir is handed to the postgres user, and every folder above
// it must be searchable by that user: a folder under /tmp is, one under
// /root is not.
//
// Durability is traded for speed (fsync off): a machine crash may corrupt
// the cluster, a crash of this process does not.
func StartWith(dir string, opts Options) (*Server, error) {
	bin, err := BinDir()
	if err != nil {
		return nil, err
	}
	runAs, err := serverAccount()
	if err != nil {
		return nil, err
	}
	dir, err = filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("pgtest: %w", err)
	}
	if err := prepareDir(dir, runAs); err != nil {
		return nil, err
	}
	password, err := ensureCluster(bin, dir, runAs)
	if err != nil {
		return nil, err
	}
	attempts := 1
	if opts.Port == 0 {
		// A free port found by binding and closing can be taken by
		// someone else before postgres binds it; a retry picks another.
		attempts = 3
	}
	var lastErr error
	for range attempts {
		port := opts.Port
		if port == 0 {
			if port, err = freePort(); err != nil {
				return nil, err
			}
		}
		s := &Server{Host: "127.0.0.1", Port: port, User: Superuser, Password: password, Dir: dir}
		if lastErr = s.start(bin, runAs, opts.Settings); lastErr == nil {
			return s, nil
		}
	}
	return nil, lastErr
}

// BinDir returns the folder holding initdb and postgres: $PROMISED_POSTGRES_BIN
// when set, else the newest /usr/lib/postgresql/<major>/bin, else the
// folder of initdb on PATH. The error wraps ErrBinariesMissing.
func BinDir() (string, error) {
	if dir := os.Getenv(EnvBinDir); dir != "" {
		if err := checkBinaries(dir); err != nil {
			return "", fmt.Errorf("pgtest: %s (from $%s): %w", dir, EnvBinDir, err)
		}
		return dir, nil
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	// Newest major first: "9.6" < "10" numerically, not as strings.
	sort.Slice(dirs, func(i, j int) bool { return majorOf(dirs[i]) > majorOf(dirs[j]) })
	if p, err := exec.LookPath("initdb"); err == nil {
		dirs = append(dirs, filepath.Dir(p))
	}
	for _, d := range dirs {
		if checkBinaries(d) == nil {
			return d, nil
		}
	}
	return "", fmt.Errorf("pgtest: %w", ErrBinariesMissing)
}

func majorOf(binDir string) float64 {
	v, _ := strconv.ParseFloat(filepath.Base(filepath.Dir(binDir)), 64)
	return v
}

func checkBinaries(dir string) error {
	for _, name := range []string{"initdb", "postgres"} {
		info, err := os.Stat(filepath.Join(dir, name))
		if err != nil || !info.Mode().IsRegular() || info.Mode().Perm()&0o111 == 0 {
			return fmt.Errorf("no executable %s: %w", name, ErrBinariesMissing)
		}
	}
	return nil
}

// account is who runs the server's processes; nil credential means this
// process's own user.
type account struct {
	cred *syscall.Credential
	name string
}

func serverAccount() (account, error) {
	if os.Geteuid() != 0 {
		return account{name: "the current user"}, nil
	}
	u, err := user.Lookup(serverUser)
	if err != nil {
		return account{}, fmt.Errorf("pgtest: running as root, and PostgreSQL refuses to run as root, but there is no %q user to run it as (%w): install the postgresql package, which creates it", serverUser, err)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return account{}, fmt.Errorf("pgtest: user %s has uid %q: %w", serverUser, u.Uid, err)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return account{}, fmt.Errorf("pgtest: user %s has gid %q: %w", serverUser, u.Gid, err)
	}
	return account{cred: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, name: "user " + serverUser}, nil
}

// prepareDir creates dir for the server's account and checks that account
// can reach it: initdb's "permission denied" on a parent folder says
// nothing about why.
func prepareDir(dir string, runAs account) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("pgtest: creating %s: %w", dir, err)
	}
	if runAs.cred == nil {
		return nil
	}
	if err := os.Chown(dir, int(runAs.cred.Uid), int(runAs.cred.Gid)); err != nil {
		return fmt.Errorf("pgtest: handing %s to %s: %w", dir, runAs.name, err)
	}
	for p := filepath.Dir(dir); ; p = filepath.Dir(p) {
		info, err := os.Stat(p)
		if err != nil {
			return fmt.Errorf("pgtest: %w", err)
		}
		st, ok := info.Sys().(*syscall.Stat_t)
		searchable := info.Mode().Perm()&0o001 != 0 ||
			(ok && st.Uid == runAs.cred.Uid && info.Mode().Perm()&0o100 != 0) ||
			(ok && st.Gid == runAs.cred.Gid && info.Mode().Perm()&0o010 != 0)
		if !searchable {
			return fmt.Errorf("pgtest: %s cannot reach %s because %s (mode %s) is not searchable by it: put the server's folder under /tmp, or run `chmod o+x %s`", runAs.name, dir, p, info.Mode().Perm(), p)
		}
		if p == filepath.Dir(p) {
			return nil
		}
	}
}

// ensureCluster runs initdb unless dir already holds a cluster, and returns
// the superuser's password.
func ensureCluster(bin, dir string, runAs account) (string, error) {
	pwPath := filepath.Join(dir, passwordFile)
	if _, err := os.Stat(filepath.Join(dir, dataDir, "PG_VERSION")); err == nil {
		pw, err := os.ReadFile(pwPath)
		if err != nil {
			return "", fmt.Errorf("pgtest: %s holds a cluster but its superuser password is unreadable: %w", dir, err)
		}
		return strings.TrimSpace(string(pw)), nil
	}
	var b [18]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("pgtest: generating the superuser password: %w", err)
	}
	password := hex.EncodeToString(b[:])
	// initdb reads the password from a file its user can read; it is the
	// same file the password is kept in for the next start.
	if err := os.WriteFile(pwPath, []byte(password+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("pgtest: writing the superuser password: %w", err)
	}
	if runAs.cred != nil {
		if err := os.Chown(pwPath, int(runAs.cred.Uid), int(runAs.cred.Gid)); err != nil {
			return "", fmt.Errorf("pgtest: %w", err)
		}
	}
	cmd := exec.Command(filepath.Join(bin, "initdb"),
		"-D", filepath.Join(dir, dataDir), "-U", Superuser, "--pwfile", pwPath,
		// Password authentication on every connection, so that tests of
		// wrong and rotated passwords mean something.
		"--auth", "scram-sha-256", "--encoding", "UTF8", "--locale", "C", "--no-sync")
	cmd.Dir = dir
	cmd.Env = serverEnv()
	cmd.SysProcAttr = sysProcAttr(runAs.cred, false)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("pgtest: initdb as %s in %s: %w\n%s", runAs.name, dir, err, bytes.TrimSpace(out))
	}
	return password, nil
}

// serverEnv is a clean environment: a developer's PGDATA, PGPORT or locale
// must not change what the server does.
func serverEnv() []string {
	return []string{"PATH=/usr/bin:/bin", "LC_ALL=C", "LANG=C", "TZ=UTC"}
}

// defaultSettings make a throwaway server fast and self-contained: no
// Unix socket (whose default folder may belong to the system's own
// cluster), no durability work, logs on stderr.
var defaultSettings = map[string]string{
	"listen_addresses":        "127.0.0.1",
	"unix_socket_directories": "",
	"fsync":                   "off",
	"synchronous_commit":      "off",
	"full_page_writes":        "off",
	"max_connections":         "200",
	"log_destination":         "stderr",
	"logging_collector":       "off",
	"log_line_prefix":         "%m [%p] %q%u@%d ",
}

// startTimeout bounds how long a server may take to accept connections; a
// loaded CI machine running the race detector needs more than a laptop.
const startTimeout = 60 * time.Second

// start runs postgres itself rather than `pg_ctl start`: pg_ctl detaches
// the server, which would then outlive a test binary that crashes or is
// killed; as our child, it is told to shut down when we go (Pdeathsig).
func (s *Server) start(bin string, runAs account, extra map[string]string) error {
	settings := map[string]string{}
	for k, v := range defaultSettings {
		settings[k] = v
	}
	for k, v := range extra {
		settings[k] = v
	}
	settings["port"] = strconv.Itoa(s.Port)
	args := []string{"-D", filepath.Join(s.Dir, dataDir)}
	keys := make([]string, 0, len(settings))
	for k := range settings {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		args = append(args, "-c", k+"="+settings[k])
	}
	logPath := filepath.Join(s.Dir, logFile)
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("pgtest: opening the server log: %w", err)
	}
	defer logf.Close()
	logStart, _ := logf.Seek(0, 2)
	cmd := exec.Command(filepath.Join(bin, "postgres"), args...)
	cmd.Dir = s.Dir
	cmd.Env = serverEnv()
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = sysProcAttr(runAs.cred, true)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("pgtest: starting postgres as %s: %w", runAs.name, err)
	}
	s.cmd, s.exited = cmd, make(chan struct{})
	go func() {
		s.waitErr = cmd.Wait()
		close(s.exited)
	}()
	if err := s.waitReady(); err != nil {
		_ = s.Stop()
		return fmt.Errorf("pgtest: postgres on %s:%d did not start: %w\n%s", s.Host, s.Port, err, logTail(logPath, logStart))
	}
	return nil
}

func (s *Server) waitReady() error {
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	var last error
	for {
		select {
		case <-s.exited:
			return fmt.Errorf("postgres exited: %v", s.waitErr)
		default:
		}
		conn, err := s.Connect(ctx, "postgres")
		if err == nil {
			return conn.Close(ctx)
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("not accepting connections after %s: %w", startTimeout, last)
		case <-s.exited:
			return fmt.Errorf("postgres exited: %v", s.waitErr)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// logTail returns what the server logged since offset, bounded, for an
// error message.
func logTail(path string, offset int64) string {
	data, err := os.ReadFile(path)
	if err != nil || int64(len(data)) < offset {
		return ""
	}
	data = data[offset:]
	if len(data) > 4000 {
		data = data[len(data)-4000:]
	}
	return string(bytes.TrimSpace(data))
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pgtest: finding a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// ConnString returns a keyword/value connection string for user and
// password (left out when empty) to database on this server, without TLS:
// it listens on loopback only. It holds the password: do not log it.
func (s *Server) ConnString(user, password, database string) string {
	cs := fmt.Sprintf("host=%s port=%d user=%s dbname=%s sslmode=disable connect_timeout=10",
		s.Host, s.Port, quoteConnValue(user), quoteConnValue(database))
	if password != "" {
		cs += " password=" + quoteConnValue(password)
	}
	return cs
}

// quoteConnValue quotes a value for a keyword/value connection string, as
// libpq reads it: in single quotes, with \ and ' escaped by a backslash.
func quoteConnValue(v string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(v) + "'"
}

// Connect connects to database as the superuser.
func (s *Server) Connect(ctx context.Context, database string) (*pgx.Conn, error) {
	return s.ConnectAs(ctx, s.User, s.Password, database)
}

// ConnectAs connects to database as user with password, the way a
// workload would.
func (s *Server) ConnectAs(ctx context.Context, user, password, database string) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(s.ConnString(user, "", database))
	if err != nil {
		return nil, fmt.Errorf("pgtest: %w", err)
	}
	// Set after parsing so that the password never passes through the
	// parser, whose errors quote the connection string.
	cfg.Password = password
	return pgx.ConnectConfig(ctx, cfg)
}

// LogPath is the server's log file.
func (s *Server) LogPath() string { return filepath.Join(s.Dir, logFile) }

// Stop shuts the server down (fast shutdown: open sessions are ended) and
// waits for it. The cluster stays in Dir for a later Start. It is safe to
// call more than once; every call returns the first one's result.
func (s *Server) Stop() error {
	s.stopOnce.Do(func() {
		if s.cmd == nil || s.cmd.Process == nil {
			return
		}
		select {
		case <-s.exited:
			return
		default:
		}
		// SIGINT is PostgreSQL's "fast" shutdown.
		if err := s.cmd.Process.Signal(os.Interrupt); err != nil && !errors.Is(err, os.ErrProcessDone) {
			s.stopErr = fmt.Errorf("pgtest: stopping postgres: %w", err)
			return
		}
		select {
		case <-s.exited:
		case <-time.After(30 * time.Second):
			_ = s.cmd.Process.Kill()
			<-s.exited
			s.stopErr = errors.New("pgtest: postgres did not shut down within 30s and was killed")
		}
	})
	return s.stopErr
}

// TB is the part of testing.TB that New uses. Taking an interface keeps
// the testing package out of binaries that import this package for
// `promised up`.
type TB interface {
	Helper()
	Cleanup(func())
	Fatalf(format string, args ...any)
}

// New starts a server in a fresh folder for the test and stops it and
// removes the folder when the test ends. It fails the test, never skips
// it, when PostgreSQL cannot start, saying why (see ErrBinariesMissing).
func New(t TB) *Server {
	t.Helper()
	// A folder of its own under the system's temporary folder rather than
	// t.TempDir(): the test's temporary folders are private to this user,
	// and the postgres user must be able to reach the cluster.
	dir, err := os.MkdirTemp("", "pgtest-")
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	s, err := Start(dir)
	if err != nil {
		_ = os.RemoveAll(dir)
		t.Fatalf("%v", err)
	}
	t.Cleanup(func() {
		if err := s.Stop(); err != nil {
			t.Fatalf("%v", err)
		}
		_ = os.RemoveAll(dir)
	})
	return s
}
