// Package natstest gives tests a real NATS deployment in operator mode, as
// an operator sets one up with nsc (an operator with a signing key, a
// system account and application accounts, each with a signing key), served
// by an embedded nats-server on loopback with a full (directory) account
// resolver, and a client that connects as a workload does and records what
// the server reports asynchronously.
package natstest

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
	"github.com/stretchr/testify/require"
)

// System is a NATS deployment's keys and, once served, its server.
type System struct {
	Operator, OperatorSigner nkeys.KeyPair
	OperatorJWT              string
	// SysPub is the system account's public key; SysCreds a .creds file
	// of a user of it.
	SysPub   string
	SysCreds []byte
	// Accounts are keyed by name; "SYS" is the system account.
	Accounts map[string]*Account
	// URL is the client URL once served.
	URL string
	srv *server.Server
}

// Account is an account's identity key, signing key and JWT.
type Account struct {
	Key, Signer    nkeys.KeyPair
	Pub, SignerPub string
	JWT            string
}

// Seed returns a key pair's seed.
func Seed(t testing.TB, kp nkeys.KeyPair) string {
	t.Helper()
	s, err := kp.Seed()
	require.NoError(t, err)
	return string(s)
}

// Pub returns a key pair's public key.
func Pub(t testing.TB, kp nkeys.KeyPair) string {
	t.Helper()
	p, err := kp.PublicKey()
	require.NoError(t, err)
	return p
}

// NewKeys creates the operator, the system account and the named accounts,
// without a server. The operator is strict, as recommended for production:
// identity keys sign only their own JWTs, signing keys sign the rest.
func NewKeys(t testing.TB, accounts ...string) *System {
	t.Helper()
	s := &System{Accounts: map[string]*Account{}}
	var err error
	s.Operator, err = nkeys.CreateOperator()
	require.NoError(t, err)
	s.OperatorSigner, err = nkeys.CreateOperator()
	require.NoError(t, err)

	sys := s.newAccount(t, "SYS")
	s.SysPub = sys.Pub
	sysUser, err := nkeys.CreateUser()
	require.NoError(t, err)
	uc := jwt.NewUserClaims(Pub(t, sysUser))
	uc.Name = "platform"
	uc.IssuerAccount = sys.Pub
	userJWT, err := uc.Encode(sys.Signer)
	require.NoError(t, err)
	s.SysCreds, err = jwt.FormatUserConfig(userJWT, []byte(Seed(t, sysUser)))
	require.NoError(t, err)

	oc := jwt.NewOperatorClaims(Pub(t, s.Operator))
	oc.Name = "test"
	oc.SigningKeys.Add(Pub(t, s.OperatorSigner))
	oc.SystemAccount = s.SysPub
	oc.StrictSigningKeyUsage = true
	s.OperatorJWT, err = oc.Encode(s.Operator)
	require.NoError(t, err)
	for _, name := range accounts {
		s.newAccount(t, name)
	}
	return s
}

func (s *System) newAccount(t testing.TB, name string) *Account {
	t.Helper()
	a := &Account{}
	var err error
	a.Key, err = nkeys.CreateAccount()
	require.NoError(t, err)
	a.Signer, err = nkeys.CreateAccount()
	require.NoError(t, err)
	a.Pub, a.SignerPub = Pub(t, a.Key), Pub(t, a.Signer)
	ac := jwt.NewAccountClaims(a.Pub)
	ac.Name = name
	ac.SigningKeys.Add(a.SignerPub)
	a.JWT, err = ac.Encode(s.OperatorSigner)
	require.NoError(t, err)
	s.Accounts[name] = a
	return a
}

// Serve creates a system and serves it until the test ends. Set
// NATS_TEST_LOG to see the server's debug log.
func Serve(t testing.TB, accounts ...string) *System {
	t.Helper()
	s := NewKeys(t, accounts...)
	dir := t.TempDir()
	opPath := filepath.Join(dir, "operator.jwt")
	require.NoError(t, os.WriteFile(opPath, []byte(s.OperatorJWT), 0o600))
	names := make([]string, 0, len(s.Accounts))
	for name := range s.Accounts {
		names = append(names, name)
	}
	sort.Strings(names)
	var preload strings.Builder
	for _, name := range names {
		fmt.Fprintf(&preload, "    %s: %q\n", s.Accounts[name].Pub, s.Accounts[name].JWT)
	}
	conf := fmt.Sprintf(`host: 127.0.0.1
port: -1
operator: %q
system_account: %s
resolver: {
  type: full
  dir: %q
  allow_delete: false
  interval: "2m"
}
resolver_preload: {
%s}
`, opPath, s.SysPub, filepath.Join(dir, "jwt"), preload.String())
	confPath := filepath.Join(dir, "server.conf")
	require.NoError(t, os.WriteFile(confPath, []byte(conf), 0o600))
	opts, err := server.ProcessConfigFile(confPath)
	require.NoError(t, err)
	logs := os.Getenv("NATS_TEST_LOG") != ""
	opts.NoSigs, opts.NoLog, opts.Debug = true, !logs, logs
	s.srv, err = server.NewServer(opts)
	require.NoError(t, err)
	if logs {
		s.srv.ConfigureLogger()
	}
	go s.srv.Start()
	require.True(t, s.srv.ReadyForConnections(10*time.Second), "nats-server did not start")
	t.Cleanup(func() {
		s.srv.Shutdown()
		s.srv.WaitForShutdown()
	})
	s.URL = s.srv.ClientURL()
	return s
}

// Secrets returns every seed of the system and the system user's .creds:
// what must never appear in output, status or errors.
func (s *System) Secrets(t testing.TB) []string {
	t.Helper()
	out := []string{Seed(t, s.Operator), Seed(t, s.OperatorSigner), strings.TrimSpace(string(s.SysCreds))}
	for _, a := range s.Accounts {
		out = append(out, Seed(t, a.Key), Seed(t, a.Signer))
	}
	return out
}

// AccountClaims returns an account's JWT as the resolver holds it now.
func (s *System) AccountClaims(t testing.TB, name string) *jwt.AccountClaims {
	t.Helper()
	nc := s.SystemConn(t)
	msg, err := nc.Request(fmt.Sprintf("$SYS.REQ.ACCOUNT.%s.CLAIMS.LOOKUP", s.Accounts[name].Pub), nil, 5*time.Second)
	require.NoError(t, err)
	ac, err := jwt.DecodeAccountClaims(string(msg.Data))
	require.NoError(t, err)
	return ac
}

// SystemConn connects as the system account's user.
func (s *System) SystemConn(t testing.TB) *nats.Conn {
	t.Helper()
	userJWT, err := jwt.ParseDecoratedJWT(s.SysCreds)
	require.NoError(t, err)
	kp, err := jwt.ParseDecoratedUserNKey(s.SysCreds)
	require.NoError(t, err)
	nc, err := nats.Connect(s.URL, nats.UserJWTAndSeed(userJWT, Seed(t, kp)))
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	return nc
}

// Workload is what a workload gets from its Secret: the URL and the .creds
// file, mounted in a folder.
type Workload struct {
	Creds string
	URL   string
	dir   string
}

// Mount writes the .creds file where the workload reads it.
func Mount(t testing.TB, creds, url string) Workload {
	t.Helper()
	w := Workload{Creds: creds, URL: url, dir: t.TempDir()}
	require.NoError(t, os.WriteFile(w.CredsPath(), []byte(creds), 0o600))
	return w
}

// CredsPath is the mounted .creds file.
func (w Workload) CredsPath() string { return filepath.Join(w.dir, "nats.creds") }

// Claims returns the claims of the workload's user.
func (w Workload) Claims(t testing.TB) *jwt.UserClaims {
	t.Helper()
	token, err := jwt.ParseDecoratedJWT([]byte(w.Creds))
	require.NoError(t, err)
	uc, err := jwt.DecodeUserClaims(token)
	require.NoError(t, err)
	return uc
}

// Client is a workload's connection and the errors the server sent it
// asynchronously (permission violations, revocation).
type Client struct {
	NC *nats.Conn
	// Closed is closed when the connection is closed for good.
	Closed chan struct{}
	mu     sync.Mutex
	errs   []error
}

// Errors returns the asynchronous errors so far.
func (c *Client) Errors() []error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]error(nil), c.errs...)
}

// HasError says whether an asynchronous error matching target, or holding
// text (case-insensitively), has arrived.
func (c *Client) HasError(target error, text string) bool {
	for _, err := range c.Errors() {
		if (target != nil && errors.Is(err, target)) || (text != "" && strings.Contains(strings.ToLower(err.Error()), strings.ToLower(text))) {
			return true
		}
	}
	return false
}

// Connect connects as the workload does, with the URL and the mounted
// .creds file, reconnecting a few times as a client library would.
func (w Workload) Connect(t testing.TB, opts ...nats.Option) (*Client, error) {
	t.Helper()
	c := &Client{Closed: make(chan struct{})}
	opts = append([]nats.Option{
		nats.UserCredentials(w.CredsPath()),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			c.mu.Lock()
			c.errs = append(c.errs, err)
			c.mu.Unlock()
		}),
		nats.ClosedHandler(func(*nats.Conn) { close(c.Closed) }),
		nats.MaxReconnects(3), nats.ReconnectWait(20 * time.Millisecond),
	}, opts...)
	nc, err := nats.Connect(w.URL, opts...)
	if err != nil {
		return nil, err
	}
	c.NC = nc
	t.Cleanup(nc.Close)
	return c, nil
}

// MustConnect is Connect failing the test on error.
func (w Workload) MustConnect(t testing.TB) *Client {
	t.Helper()
	c, err := w.Connect(t)
	require.NoError(t, err)
	return c
}
