package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"promised.dev/promised/statestore"
	"promised.dev/promised/statestore/pull"
)

// TestSyncAppliesWhatTheControllerWrote runs the whole path: a request,
// the controller's pipeline, its commit in Git, and `promised sync`
// pulling the destination's folder into a cluster (here the platform
// cluster itself).
func TestSyncAppliesWhatTheControllerWrote(t *testing.T) {
	p := newPlatform(t)
	req := p.request("orders", map[string]any{"value": "from-git"})
	p.waitRequest(req, "True")
	head := p.git.Head(p.repo, "main")
	cmKey := client.ObjectKey{Namespace: "default", Name: req.GetName()}
	syncArgs := []string{"sync", "--url", p.git.HTTPURL(p.repo), "--path", "platform/dev", "--destination", "sync-" + p.id, "--kubeconfig", kubeconfig}

	t.Setenv(envGitUsername, p.git.Username())
	t.Setenv(envGitPassword, p.git.Password())
	out, stderr, err := runCLI(t, syncArgs...)
	t.Logf("promised sync:\n%s%s", out, stderr)
	require.NoError(t, err)
	require.Equal(t, []string{
		"applied ConfigMap default/" + req.GetName() + " resources/default/" + p.promise + "/" + req.GetName() + "/render/cm.yaml#1",
		"sync-" + p.id + " at " + head[:12] + ": 1 applied, 0 failed",
	}, tableFields(out))
	cm := &corev1.ConfigMap{}
	require.NoError(t, k8s.Get(context.Background(), cmKey, cm))
	require.Equal(t, "from-git", cm.Data["value"])
	require.Equal(t, pull.ManagedBy, cm.Labels[pull.LabelManagedBy])

	// Someone commits an object the apiserver rejects next to it: sync
	// reports it, keeps the rest, and exits non-zero.
	p.git.PushFile(p.repo, "main", "platform/dev/extra/bad.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: bad-"+p.id+"\n  namespace: default\ndata:\n  \"no spaces allowed\": x\n")
	out, _, err = runCLI(t, append(syncArgs, "-o", "json")...)
	require.EqualError(t, err, "destination sync-"+p.id+": 1 of 2 objects failed")
	var rep pull.Report
	require.NoError(t, json.Unmarshal([]byte(out), &rep))
	require.Equal(t, pull.ActionFailed, rep.Objects[0].Action)
	require.Equal(t, "extra/bad.yaml#1", rep.Objects[0].File)
	require.Contains(t, rep.Objects[0].Reason, "Invalid value")
	require.Equal(t, pull.ActionUnchanged, rep.Objects[1].Action)

	// The request goes; the controller removes its folder; sync prunes.
	require.NoError(t, k8s.Delete(context.Background(), req))
	require.Eventually(t, func() bool {
		_, ok := p.git.Files(p.repo, "main")["platform/dev/resources/default/"+p.promise+"/"+req.GetName()+"/render/cm.yaml"]
		return !ok
	}, 30*time.Second, 50*time.Millisecond)
	out, _, _ = runCLI(t, syncArgs...)
	require.Contains(t, tableFields(out), "pruned ConfigMap default/"+req.GetName())
	err = k8s.Get(context.Background(), cmKey, cm)
	require.True(t, apierrors.IsNotFound(err), "pruned: %v", err)
}

func TestSyncCredentials(t *testing.T) {
	s := newPlatform(t)
	// A store with one object in the folder, written as the controller would.
	w, err := statestore.NewGit(context.Background(), statestore.GitConfig{URL: s.git.HTTPURL(s.repo), Path: filepath.Join(t.TempDir(), "w"),
		Basic: &statestore.BasicAuth{Username: s.git.Username(), Password: s.git.Password()}})
	require.NoError(t, err)
	defer w.Close()
	_, err = w.Write(context.Background(), statestore.Change{Dir: "creds/resources/default/p/r", Files: map[string][]byte{
		"cm.yaml": []byte("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: creds-" + s.id + "\n  namespace: default\n"),
	}})
	require.NoError(t, err)
	args := []string{"sync", "--url", s.git.HTTPURL(s.repo), "--path", "creds", "--destination", "creds-" + s.id, "--kubeconfig", kubeconfig}

	// A mounted Secret: a folder with files username and password.
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "username"), []byte(s.git.Username()), 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "password"), []byte(s.git.Password()+"\n"), 0o600))
	out, _, err := runCLI(t, append(args, "--credentials", dir)...)
	require.NoError(t, err)
	require.Contains(t, out, "1 applied")

	// A YAML file.
	file := filepath.Join(t.TempDir(), "creds.yaml")
	require.NoError(t, os.WriteFile(file, []byte("username: "+s.git.Username()+"\npassword: "+s.git.Password()+"\n"), 0o600))
	out, _, err = runCLI(t, append(args, "--credentials", file)...)
	require.NoError(t, err)
	require.Contains(t, out, "1 unchanged")

	// Wrong credentials fail without showing the password, in the error or
	// in the logs.
	out, stderr, err := runCLI(t, append(args, "--username", s.git.Username(), "--password", "not-the-password-42")...)
	require.Error(t, err)
	for _, text := range []string{err.Error(), out, stderr} {
		require.NotContains(t, text, "not-the-password-42")
	}
	// Nor do credentials embedded in the URL.
	withCreds := strings.Replace(s.git.HTTPURL(s.repo), "http://", "http://"+s.git.Username()+":wrong-in-url-99@", 1)
	out, stderr, err = runCLI(t, "sync", "--url", withCreds, "--path", "creds", "--destination", "creds-"+s.id, "--kubeconfig", kubeconfig)
	require.Error(t, err)
	for _, text := range []string{err.Error(), out, stderr} {
		require.NotContains(t, text, "wrong-in-url-99")
	}
}

func TestGitCredentialsPrecedence(t *testing.T) {
	env := map[string]string{envGitUsername: "env-user", envGitPassword: "env-pass"}
	getenv := func(k string) string { return env[k] }
	file := filepath.Join(t.TempDir(), "c.yaml")
	require.NoError(t, os.WriteFile(file, []byte("username: file-user\npassword: file-pass\n"), 0o600))

	got, err := gitCredentialFlags{username: "flag-user", password: "flag-pass", file: file}.resolve(getenv)
	require.NoError(t, err)
	require.Equal(t, &statestore.BasicAuth{Username: "flag-user", Password: "flag-pass"}, got)
	got, err = gitCredentialFlags{file: file}.resolve(getenv)
	require.NoError(t, err)
	require.Equal(t, &statestore.BasicAuth{Username: "env-user", Password: "env-pass"}, got)
	got, err = gitCredentialFlags{file: file}.resolve(func(string) string { return "" })
	require.NoError(t, err)
	require.Equal(t, &statestore.BasicAuth{Username: "file-user", Password: "file-pass"}, got)
	got, err = gitCredentialFlags{}.resolve(func(string) string { return "" })
	require.NoError(t, err)
	require.Nil(t, got, "no credentials: anonymous")
	_, err = gitCredentialFlags{username: "only-user"}.resolve(func(string) string { return "" })
	require.ErrorContains(t, err, "without a password")

	bad := filepath.Join(t.TempDir(), "bad.yaml")
	require.NoError(t, os.WriteFile(bad, []byte("password: [secret-value-x"), 0o600))
	_, err = gitCredentialFlags{file: bad}.resolve(func(string) string { return "" })
	require.Error(t, err)
	require.NotContains(t, err.Error(), "secret-value-x")
}

func TestSyncFlags(t *testing.T) {
	_, _, err := runCLI(t, "sync", "--path", "dev")
	require.EqualError(t, err, "--url and --path are required")
	_, _, err = runCLI(t, "sync", "--url", "u", "--path", "dev", "--once", "--interval", "1m")
	require.ErrorContains(t, err, "contradict")
	_, _, err = runCLI(t, "sync", "--url", "u", "--path", "dev", "-o", "xml")
	require.ErrorContains(t, err, `unknown output format "xml"`)
}
