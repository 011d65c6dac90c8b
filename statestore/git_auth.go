package statestore

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/go-git/go-git/v5/plumbing/transport"
	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"
	gitssh "github.com/go-git/go-git/v5/plumbing/transport/ssh"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// BasicAuth authenticates over HTTP(S) with a username and a password or
// token (for GitHub and GitLab, the token goes in Password).
type BasicAuth struct {
	Username string
	Password string
}

// SSHAuth authenticates over SSH with a private key and checks the server
// against known hosts. There is deliberately no way to skip the host key
// check.
type SSHAuth struct {
	// User is the SSH user; when empty, the URL's user, else "git".
	User string
	// PrivateKey is a PEM or OpenSSH private key.
	PrivateKey []byte
	// Passphrase decrypts PrivateKey, if it is encrypted.
	Passphrase []byte
	// KnownHosts holds known_hosts lines for the server. Required.
	KnownHosts []byte
}

// redactor removes credentials from text before it reaches an error or a
// log line. go-git puts the endpoint, credentials included, into some of its
// error messages (for example unexpected HTTP statuses), so every error that
// crosses the transport passes through here.
type redactor struct {
	r *strings.Replacer
}

// minSecretLen: shorter secrets are not replaced in free text, as replacing
// every occurrence of a two-letter string would garble messages. They are
// still removed from URLs, which is where go-git puts them.
const minSecretLen = 4

func newRedactor(rawURL string, secrets ...string) redactor {
	var pairs []string
	if safe := redactURL(rawURL); safe != rawURL {
		pairs = append(pairs, rawURL, safe)
	}
	// The password exactly as spelled in the URL (its escaping may differ
	// from Go's, which the variants below cover).
	if _, rest, ok := strings.Cut(rawURL, "://"); ok {
		if userinfo, _, ok := strings.Cut(rest, "@"); ok && !strings.Contains(userinfo, "/") {
			if _, pass, ok := strings.Cut(userinfo, ":"); ok {
				secrets = append(secrets, pass)
			}
		}
	}
	for _, s := range secrets {
		if len(s) < minSecretLen {
			continue
		}
		pairs = append(pairs, s, "[redacted]")
		for _, esc := range []string{url.PathEscape(s), url.QueryEscape(s), url.UserPassword("", s).String()[1:]} {
			if esc != s {
				pairs = append(pairs, esc, "[redacted]")
			}
		}
	}
	return redactor{r: strings.NewReplacer(pairs...)}
}

func (r redactor) string(s string) string { return r.r.Replace(s) }

// err returns err with credentials removed from its message. The original
// stays reachable through errors.Is/As (to classify it), but its own
// message is never printed by anything in this package.
func (r redactor) err(err error) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	if safe := r.r.Replace(msg); safe != msg {
		return &redactedError{msg: safe, err: err}
	}
	return err
}

type redactedError struct {
	msg string
	err error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }

// redactURL hides the password of a URL with embedded credentials.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.User == nil {
		return raw
	}
	if _, has := u.User.Password(); !has {
		return raw
	}
	return u.Redacted()
}

// stripURLCredentials returns raw without user info for http(s) URLs, for
// storing in the clone's config and for logs.
func stripURLCredentials(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.User == nil || (u.Scheme != "http" && u.Scheme != "https") {
		return redactURL(raw)
	}
	u.User = nil
	return u.String()
}

// remote is where and how to reach the repository.
type remote struct {
	ep   *transport.Endpoint
	auth transport.AuthMethod
	red  redactor
	// display is the URL without credentials, for logs.
	display string
}

// endpoint returns a copy of the endpoint for one session: go-git's HTTP
// session rewrites its endpoint when the server redirects, and sessions
// run concurrently (a spare push session opens while a fetch runs).
func (rm *remote) endpoint() *transport.Endpoint {
	ep := *rm.ep
	return &ep
}

func newRemote(cfg *GitConfig) (*remote, error) {
	var secrets []string
	if cfg.Basic != nil {
		secrets = append(secrets, cfg.Basic.Password)
	}
	if u, err := url.Parse(cfg.URL); err == nil && u.User != nil {
		if p, ok := u.User.Password(); ok {
			secrets = append(secrets, p)
		}
	}
	if cfg.SSH != nil {
		secrets = append(secrets, string(cfg.SSH.Passphrase))
	}
	red := newRedactor(cfg.URL, secrets...)
	rm := &remote{red: red, display: stripURLCredentials(cfg.URL)}

	if cfg.URL == "" {
		return nil, errors.New("git URL is empty")
	}
	ep, err := transport.NewEndpoint(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("parsing git URL %s: %w", rm.display, red.err(err))
	}
	ep.CaBundle = cfg.CABundle
	rm.ep = ep

	if cfg.Basic != nil && cfg.SSH != nil {
		return nil, errors.New("both HTTP basic and SSH credentials are set; choose one")
	}
	switch ep.Protocol {
	case "http", "https":
		if cfg.SSH != nil {
			return nil, fmt.Errorf("SSH credentials given for %s URL %s", ep.Protocol, rm.display)
		}
		basic := cfg.Basic
		if basic == nil && (ep.User != "" || ep.Password != "") {
			// Credentials embedded in the URL: use them, but as auth, so that
			// the endpoint (which go-git prints) no longer carries them.
			basic = &BasicAuth{Username: ep.User, Password: ep.Password}
		}
		ep.User, ep.Password = "", ""
		if basic != nil {
			rm.auth = &githttp.BasicAuth{Username: basic.Username, Password: basic.Password}
		}
	case "ssh":
		if ep.Password != "" {
			return nil, fmt.Errorf("SSH URL %s carries a password; SSH authenticates with a key (SSHAuth)", rm.display)
		}
		if cfg.Basic != nil {
			return nil, fmt.Errorf("HTTP basic credentials given for SSH URL %s", rm.display)
		}
		if cfg.SSH == nil {
			return nil, fmt.Errorf("SSH URL %s needs SSHAuth (private key and known hosts)", rm.display)
		}
		auth, err := newSSHAuth(cfg.SSH, ep)
		if err != nil {
			return nil, red.err(err)
		}
		rm.auth = auth
	case "file":
		if cfg.Basic != nil || cfg.SSH != nil {
			return nil, fmt.Errorf("credentials given for local repository %s", rm.display)
		}
	default:
		return nil, fmt.Errorf("unsupported git URL scheme %q in %s (want https, http, ssh or file)", ep.Protocol, rm.display)
	}
	return rm, nil
}

// sshKeyAuth is go-git's ssh.AuthMethod built from SSHAuth: public key
// authentication, host keys checked against the given known_hosts only.
type sshKeyAuth struct {
	user     string
	signer   ssh.Signer
	hostKeys ssh.HostKeyCallback
	algos    []string
}

var _ gitssh.AuthMethod = (*sshKeyAuth)(nil)

func (a *sshKeyAuth) Name() string   { return "ssh-public-keys" }
func (a *sshKeyAuth) String() string { return "user: " + a.user + ", name: " + a.Name() }

func (a *sshKeyAuth) ClientConfig() (*ssh.ClientConfig, error) {
	return &ssh.ClientConfig{
		User:              a.user,
		Auth:              []ssh.AuthMethod{ssh.PublicKeys(a.signer)},
		HostKeyCallback:   a.hostKeys,
		HostKeyAlgorithms: a.algos,
		// go-git dials without the caller's context; this bounds the dial
		// and handshake instead.
		Timeout: 30 * time.Second,
	}, nil
}

func newSSHAuth(cfg *SSHAuth, ep *transport.Endpoint) (*sshKeyAuth, error) {
	if len(cfg.PrivateKey) == 0 {
		return nil, errors.New("SSH private key is empty")
	}
	if len(cfg.KnownHosts) == 0 {
		return nil, errors.New("SSH known hosts are empty: the server's host key must be known")
	}
	var signer ssh.Signer
	var err error
	if len(cfg.Passphrase) > 0 {
		signer, err = ssh.ParsePrivateKeyWithPassphrase(cfg.PrivateKey, cfg.Passphrase)
	} else {
		signer, err = ssh.ParsePrivateKey(cfg.PrivateKey)
	}
	if err != nil {
		return nil, fmt.Errorf("parsing SSH private key: %w", err)
	}
	hostKeys, err := knownHostsCallback(cfg.KnownHosts)
	if err != nil {
		return nil, err
	}
	user := cfg.User
	if user == "" {
		user = ep.User
	}
	if user == "" {
		user = "git"
	}
	port := ep.Port
	if port <= 0 {
		port = gitssh.DefaultPort
	}
	hostPort := net.JoinHostPort(ep.Host, strconv.Itoa(port))
	return &sshKeyAuth{user: user, signer: signer, hostKeys: hostKeys, algos: hostKeyAlgorithms(hostKeys, hostPort)}, nil
}

// knownHostsCallback parses known_hosts content. x/crypto's knownhosts
// reads files only, so the content goes through a temporary file that is
// removed as soon as it has been read.
func knownHostsCallback(content []byte) (ssh.HostKeyCallback, error) {
	f, err := os.CreateTemp("", "promised-known-hosts-*")
	if err != nil {
		return nil, fmt.Errorf("parsing SSH known hosts: %w", err)
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(content); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("parsing SSH known hosts: %w", err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("parsing SSH known hosts: %w", err)
	}
	cb, err := knownhosts.New(f.Name())
	if err != nil {
		return nil, fmt.Errorf("parsing SSH known hosts: %w", err)
	}
	return cb, nil
}

// hostKeyAlgorithms lists the algorithms of the keys known for hostPort, so
// that the server is asked for a key type we can verify. Without it, a
// server with several host keys may offer one that known_hosts does not
// list, and the handshake fails with a key mismatch although a good key is
// known. The known keys are learnt by presenting a throwaway key: the
// mismatch error lists what is known (matching, hashed names and patterns
// included, exactly as the real check will do).
func hostKeyAlgorithms(cb ssh.HostKeyCallback, hostPort string) []string {
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil
	}
	probe, err := ssh.NewPublicKey(pub)
	if err != nil {
		return nil
	}
	addr := &net.TCPAddr{IP: net.IPv4zero, Port: 22}
	var keyErr *knownhosts.KeyError
	if !errors.As(cb(hostPort, addr, probe), &keyErr) {
		return nil
	}
	var algos []string
	seen := map[string]bool{}
	for _, k := range keyErr.Want {
		for _, a := range algorithmsForKeyType(k.Key.Type()) {
			if !seen[a] {
				seen[a] = true
				algos = append(algos, a)
			}
		}
	}
	return algos
}

func algorithmsForKeyType(t string) []string {
	if t == ssh.KeyAlgoRSA {
		return []string{ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256, ssh.KeyAlgoRSA}
	}
	return []string{t}
}

// isPermanent reports errors that retrying cannot fix: bad credentials, an
// unknown or changed host key, a missing repository.
func isPermanent(err error) bool {
	var keyErr *knownhosts.KeyError
	var revoked *knownhosts.RevokedError
	switch {
	case errors.Is(err, transport.ErrAuthenticationRequired),
		errors.Is(err, transport.ErrAuthorizationFailed),
		errors.Is(err, transport.ErrRepositoryNotFound),
		errors.Is(err, transport.ErrInvalidAuthMethod),
		errors.As(err, &keyErr), errors.As(err, &revoked):
		return true
	}
	msg := err.Error()
	return strings.Contains(msg, "ssh: unable to authenticate") || strings.Contains(msg, "knownhosts: key")
}
