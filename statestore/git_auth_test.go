package statestore

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/ssh/knownhosts"

	"promised.dev/promised/statestore/gittest"
)

func TestGitWrongPasswordIsRefusedWithoutLeakingIt(t *testing.T) {
	srv := gittest.New(t)
	srv.InitBare(testRepo)
	const wrong = "not-the-password-42"

	cfg := gitConfig(t, srv)
	cfg.Basic = &BasicAuth{Username: srv.Username(), Password: wrong}
	_, err := NewGit(context.Background(), cfg)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "authentication required")
	assert.NotContains(t, err.Error(), wrong)

	// The same credentials embedded in the URL.
	u, err := url.Parse(srv.HTTPURL(testRepo))
	require.NoError(t, err)
	u.User = url.UserPassword(srv.Username(), wrong)
	cfg = gitConfig(t, srv)
	cfg.URL, cfg.Basic = u.String(), nil
	_, err = NewGit(context.Background(), cfg)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "authentication required")
	assert.NotContains(t, err.Error(), wrong)
}

// Credentials that stop working after start (rotated, revoked) fail writes
// at once, not after a round of retries, and the error names the cause.
func TestGitRevokedCredentialsFailFast(t *testing.T) {
	srv := gittest.New(t)
	srv.InitBare(testRepo)
	cfg := gitConfig(t, srv)
	w, err := NewGit(context.Background(), cfg)
	require.NoError(t, err)
	_, err = w.Write(context.Background(), Change{Dir: resDir(t, "a", "b", "c"), Files: requestFiles("c")})
	require.NoError(t, err)
	require.NoError(t, w.Close())

	const wrong = "revoked-token-0000"
	cfg.Basic = &BasicAuth{Username: srv.Username(), Password: wrong}
	cfg.Retry = RetryPolicy{Attempts: 50, InitialBackoff: time.Second}
	w = newTestWriter(t, cfg) // starts from the existing clone
	start := time.Now()
	_, err = w.Write(context.Background(), Change{Dir: resDir(t, "a", "b", "d"), Files: requestFiles("d")})
	require.Error(t, err)
	assert.Less(t, time.Since(start), 5*time.Second, "no retries for bad credentials")
	assert.Contains(t, err.Error(), "authentication required")
	assert.NotContains(t, err.Error(), wrong)
}

func TestGitURLCredentialsWork(t *testing.T) {
	srv := gittest.New(t)
	srv.InitBare(testRepo)
	u, err := url.Parse(srv.HTTPURL(testRepo))
	require.NoError(t, err)
	u.User = url.UserPassword(srv.Username(), srv.Password())
	cfg := gitConfig(t, srv)
	cfg.URL, cfg.Basic = u.String(), nil
	w := newTestWriter(t, cfg)
	_, err = w.Write(context.Background(), Change{Dir: resDir(t, "a", "b", "c"), Files: requestFiles("c")})
	require.NoError(t, err)
	assert.Equal(t, 1, srv.CommitCount(testRepo, "main"))
	// Nothing secret went to disk.
	conf := srv.Git(cfg.Path, "config", "--get", "remote.origin.url")
	assert.NotContains(t, conf, srv.Password())
}

func TestRedactor(t *testing.T) {
	raw := "https://bot:s3cr%2Ft!@git.example.com/org/repo.git"
	r := newRedactor(raw, "s3cr/t!")
	err := r.err(fmt.Errorf("unexpected requesting %q: token s3cr/t! rejected; escaped s3cr%%2Ft!", raw))
	assert.NotContains(t, err.Error(), "s3cr")
	assert.Contains(t, err.Error(), "git.example.com/org/repo.git")
	inner := errors.New("x")
	assert.ErrorIs(t, r.err(fmt.Errorf("s3cr/t!: %w", inner)), inner, "classification survives redaction")
	assert.Equal(t, "https://git.example.com/org/repo.git", stripURLCredentials(raw))
}

func sshConfig(t *testing.T, srv *gittest.Server) GitConfig {
	cfg := gitConfig(t, srv)
	cfg.URL = srv.SSHURL(testRepo)
	cfg.Basic = nil
	cfg.SSH = &SSHAuth{PrivateKey: srv.SSHClientKey(), KnownHosts: srv.SSHKnownHosts()}
	return cfg
}

func TestGitOverSSH(t *testing.T) {
	srv := gittest.New(t)
	srv.InitBare(testRepo)
	w := newTestWriter(t, sshConfig(t, srv))
	dir := resDir(t, "default", "nats", "over-ssh")
	res, err := w.Write(context.Background(), Change{Dir: dir, Files: requestFiles("over-ssh")})
	require.NoError(t, err)
	assert.Equal(t, srv.Head(testRepo, "main"), res.Commit)
	assert.Len(t, filter(srv.Files(testRepo, "main"), dir+"/"), 5)
	require.NoError(t, w.Probe(context.Background()))
}

func TestGitSSHWrongHostKeyIsRefused(t *testing.T) {
	srv := gittest.New(t)
	srv.InitBare(testRepo)
	_, otherKey, err := gittest.NewSSHKey()
	require.NoError(t, err)

	cfg := sshConfig(t, srv)
	cfg.SSH.KnownHosts = []byte(knownhosts.Line([]string{knownhosts.Normalize(srv.SSHAddr())}, otherKey) + "\n")
	_, err = NewGit(context.Background(), cfg)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "knownhosts: key mismatch")

	cfg = sshConfig(t, srv)
	cfg.SSH.KnownHosts = []byte(knownhosts.Line([]string{"other.example.com"}, otherKey) + "\n")
	_, err = NewGit(context.Background(), cfg)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "knownhosts: key is unknown")

	cfg = sshConfig(t, srv)
	cfg.SSH.KnownHosts = nil
	_, err = NewGit(context.Background(), cfg)
	require.ErrorContains(t, err, "known hosts are empty")
}

func TestGitSSHUnknownClientKeyIsRefused(t *testing.T) {
	srv := gittest.New(t)
	srv.InitBare(testRepo)
	key, _, err := gittest.NewSSHKey()
	require.NoError(t, err)
	cfg := sshConfig(t, srv)
	cfg.SSH.PrivateKey = key
	_, err = NewGit(context.Background(), cfg)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "unable to authenticate")
}

func TestGitConfigErrors(t *testing.T) {
	path := filepath.Join(t.TempDir(), "clone")
	for name, cfg := range map[string]GitConfig{
		"no url":           {Path: path},
		"bad scheme":       {URL: "ftp://example.com/repo.git", Path: path},
		"ssh without auth": {URL: "ssh://git@example.com/repo.git", Path: path},
		"both auths":       {URL: "https://example.com/r.git", Path: path, Basic: &BasicAuth{}, SSH: &SSHAuth{}},
		"no path":          {URL: "https://example.com/r.git"},
		"bad branch":       {URL: "https://example.com/r.git", Path: path, Branch: "a..b"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := NewGit(context.Background(), cfg)
			require.Error(t, err)
		})
	}
	// A directory that holds something else is not adopted as a clone.
	dir := t.TempDir()
	require.NoError(t, writeFile(filepath.Join(dir, "precious.txt"), "keep me"))
	_, err := NewGit(context.Background(), GitConfig{URL: "https://example.com/r.git", Path: dir})
	require.ErrorContains(t, err, "neither empty nor a bare Git repository")
	assert.True(t, strings.HasSuffix(dir, filepath.Base(dir)))
}
