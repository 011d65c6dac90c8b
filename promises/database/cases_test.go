package database_test

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"sigs.k8s.io/yaml"

	"promised.dev/promised/pipelines/ledger"
	"promised.dev/promised/pipelines/local"
	"promised.dev/promised/pipelines/seal"
	"promised.dev/promised/pipelines/stage"
	"promised.dev/promised/promises/database"
)

// Placeholders the testdata snapshots show in place of what sealing
// randomises.
const (
	maskedCiphertext  = "<sealed>"
	maskedFingerprint = "<fingerprint>"
)

// maskedSeal stands in for the seal stage in the testdata cases. It seals
// the output with the real sealing code (so a Secret that could not be
// sealed still fails the case), then masks each SealedSecret's ciphertext
// and fingerprint, which differ on every run; the rest of the
// SealedSecret (name, namespace, keys, template) is compared.
func maskedSeal(certPEM []byte) stage.Func {
	return func(_ context.Context, c *stage.Context) error {
		files := map[string][]byte{}
		root := c.Workspace.Output()
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			rel, err := filepath.Rel(root, p)
			if err != nil {
				return err
			}
			files[filepath.ToSlash(rel)], err = os.ReadFile(p)
			return err
		})
		if err != nil {
			return err
		}
		sealed, report, err := seal.SealFiles(seal.Config{CertPEM: certPEM, FingerprintKey: platformKey}, files, nil)
		if err != nil {
			return err
		}
		for _, r := range report {
			if r.Document != 1 || bytes.Contains(sealed[r.File], []byte("\n---")) {
				return fmt.Errorf("masking %s: the promise writes one object per file", r.File)
			}
			var doc map[string]any
			if err := yaml.Unmarshal(sealed[r.File], &doc); err != nil {
				return err
			}
			md, _ := doc["metadata"].(map[string]any)
			annotations, _ := md["annotations"].(map[string]any)
			annotations[seal.FingerprintAnnotation] = maskedFingerprint
			spec, _ := doc["spec"].(map[string]any)
			data, _ := spec["encryptedData"].(map[string]any)
			for k := range data {
				data[k] = maskedCiphertext
			}
			out, err := yaml.Marshal(doc)
			if err != nil {
				return err
			}
			if err := c.WriteFile(filepath.FromSlash(r.File), out); err != nil {
				return err
			}
		}
		return nil
	}
}

// TestCases runs testdata/ the way `promised test` does, with two
// stand-ins for what makes a run differ from the last: a ledger that
// already holds each request's password (a fixed test value, as on any
// re-run after the first), and maskedSeal. The shared plan's successful
// runs need a PostgreSQL server, whose address no case folder can know in
// advance: they are tested against a real server by the Go tests, and the
// cases cover its refusals and its Retain delete, which need none.
func TestCases(t *testing.T) {
	ctx := context.Background()
	p, err := local.LoadPromise(".")
	require.NoError(t, err)
	l, err := ledger.NewFolder(t.TempDir())
	require.NoError(t, err)
	dirs, err := filepath.Glob(filepath.Join("testdata", "*", local.CaseRequest))
	require.NoError(t, err)
	require.NotEmpty(t, dirs)
	for _, reqFile := range dirs {
		obj, err := local.LoadObject(reqFile)
		require.NoError(t, err)
		if obj.GetNamespace() == "" {
			obj.SetNamespace("default")
		}
		key, entry, err := database.CaseCredential(p.Name, obj)
		if err != nil {
			continue // a case of a refused request: it never gets a password
		}
		if _, found, err := l.Get(ctx, key); err != nil || found {
			require.NoError(t, err)
			continue // two cases of one request (configure, delete) share it
		}
		_, err = l.Put(ctx, key, entry)
		require.NoError(t, err, reqFile)
	}

	reg := stage.NewRegistry()
	for name, f := range database.Stages() {
		require.NoError(t, reg.Register(name, f))
	}
	require.NoError(t, reg.Register(seal.StageName, maskedSeal(testSealingKey(t).CertPEM)))
	update := os.Getenv("UPDATE_TESTDATA") != ""
	results, err := local.RunCases(ctx, local.Options{Registry: reg, Runtime: local.RuntimeInProcess, Ledger: l}, ".", update)
	require.NoError(t, err)
	for _, r := range results {
		t.Run(r.Name, func(t *testing.T) {
			require.True(t, r.Passed(), "%s", r.Diff)
		})
	}
	// Every case that ran to the end shows a masked SealedSecret, never
	// a plaintext one.
	snaps, err := filepath.Glob(filepath.Join("testdata", "*", local.CaseExpected, "configure", "database", "*credentials.yaml"))
	require.NoError(t, err)
	for _, s := range snaps {
		data, err := os.ReadFile(s)
		require.NoError(t, err)
		require.True(t, strings.Contains(string(data), "kind: SealedSecret") && strings.Contains(string(data), maskedCiphertext), s)
		require.NotContains(t, string(data), "testdata-password-not-a-secret", s)
	}
}
