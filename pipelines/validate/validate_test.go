package validate_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"promised.dev/promised/pipelines/validate"
)

const cm = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n"

func TestPath(t *testing.T) {
	for _, tc := range []struct {
		path string
		ok   bool
	}{
		{"a.yaml", true},
		{"dir/sub/a.yaml", true},
		{"..a.yaml", true},
		{"", false},
		{"/etc/passwd", false},
		{"../a.yaml", false},
		{"dir/../../a.yaml", false},
		{"dir/./a.yaml", false},
		{"dir//a.yaml", false},
		{"dir/", false},
		{".", false},
		{"a\\..\\b.yaml", false},
		{"a\x00.yaml", false},
	} {
		t.Run(tc.path, func(t *testing.T) {
			err := validate.Path(tc.path)
			if tc.ok {
				require.NoError(t, err)
				return
			}
			var ve *validate.Error
			require.ErrorAs(t, err, &ve)
			require.Equal(t, validate.RulePath, ve.Rule)
			require.Contains(t, err.Error(), "path must be relative")
		})
	}
}

func TestObjects(t *testing.T) {
	for _, tc := range []struct {
		name    string
		content string
		rule    validate.Rule // empty: valid
		detail  string
		count   int
	}{
		{"one object", cm, "", "", 1},
		{"multi document", cm + "---\n" + strings.Replace(cm, "name: a", "name: b", 1), "", "", 2},
		{"empty and comment documents", "---\n# nothing\n---\n" + cm + "---\n", "", "", 1},
		{"json", `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"j"}}`, "", "", 1},
		{"empty file", "", "", "", 0},
		{"not yaml", "apiVersion: v1\nkind: [unclosed\n", validate.RuleYAML, "", 0},
		{"a list, not an object", "- a\n- b\n", validate.RuleYAML, "document 1", 0},
		{"missing kind", "apiVersion: v1\nmetadata:\n  name: a\n", validate.RuleObject, "kind missing", 0},
		{"missing apiVersion", "kind: ConfigMap\nmetadata:\n  name: a\n", validate.RuleObject, "apiVersion missing", 0},
		{"missing name", "apiVersion: v1\nkind: ConfigMap\nmetadata: {}\n", validate.RuleObject, "metadata.name missing", 0},
		{"numeric name", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: 7\n", validate.RuleObject, "metadata.name", 0},
		{"bad namespace type", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n  namespace: [x]\n", validate.RuleObject, "metadata.namespace", 0},
		{"plaintext secret", "apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\ndata:\n  password: aHVudGVyMg==\n", validate.RuleSecret, `Secret "db"`, 0},
		{"secret in second document", cm + "---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: s\n", validate.RuleSecret, "document 2", 0},
		{"sealed secret is fine", "apiVersion: bitnami.com/v1alpha1\nkind: SealedSecret\nmetadata:\n  name: s\n", "", "", 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			objs, err := validate.Objects("f.yaml", []byte(tc.content))
			if tc.rule == "" {
				require.NoError(t, err)
				require.Len(t, objs, tc.count)
				return
			}
			var ve *validate.Error
			require.ErrorAs(t, err, &ve)
			require.Equal(t, tc.rule, ve.Rule)
			require.Equal(t, "f.yaml", ve.File)
			require.Contains(t, err.Error(), `output file "f.yaml"`)
			require.Contains(t, err.Error(), tc.detail)
			require.NotContains(t, err.Error(), "aHVudGVyMg==", "secret data never appears in errors")
		})
	}
}

func TestFilesLimits(t *testing.T) {
	lim := validate.Limits{MaxFiles: 2, MaxBytes: 100}
	require.NoError(t, validate.Files(map[string][]byte{"a.yaml": []byte(cm)}, lim))

	err := validate.Files(map[string][]byte{"a": []byte(cm), "b": []byte(cm), "c": []byte(cm)}, lim)
	requireRule(t, err, validate.RuleFileCount)

	err = validate.Files(map[string][]byte{"a": []byte(cm), "b": []byte(cm + "# padding padding padding padding padding\n")}, lim)
	requireRule(t, err, validate.RuleSize)

	// Errors are reported in path order, so the same output always gives the same message.
	err = validate.Files(map[string][]byte{"z.yaml": []byte("nope: ["), "a.yaml": []byte("kind: X")}, validate.DefaultLimits)
	var ve *validate.Error
	require.ErrorAs(t, err, &ve)
	require.Equal(t, "a.yaml", ve.File)
}

func TestCollect(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "sub"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "sub", "a.yaml"), []byte(cm), 0o644))
	files, err := validate.Collect(dir, validate.DefaultLimits)
	require.NoError(t, err)
	require.Equal(t, map[string][]byte{"sub/a.yaml": []byte(cm)}, files)

	t.Run("symlink", func(t *testing.T) {
		require.NoError(t, os.Symlink("/etc/passwd", filepath.Join(dir, "link.yaml")))
		defer os.Remove(filepath.Join(dir, "link.yaml"))
		_, err := validate.Collect(dir, validate.DefaultLimits)
		requireRule(t, err, validate.RuleFileType)
		require.Contains(t, err.Error(), "link.yaml")
	})
	t.Run("symlinked folder", func(t *testing.T) {
		require.NoError(t, os.Symlink(t.TempDir(), filepath.Join(dir, "elsewhere")))
		defer os.Remove(filepath.Join(dir, "elsewhere"))
		_, err := validate.Collect(dir, validate.DefaultLimits)
		requireRule(t, err, validate.RuleFileType)
	})
	t.Run("too many files stops early", func(t *testing.T) {
		_, err := validate.Collect(dir, validate.Limits{MaxFiles: 0, MaxBytes: 1 << 20})
		requireRule(t, err, validate.RuleFileCount)
	})
	t.Run("too many bytes stops early", func(t *testing.T) {
		_, err := validate.Collect(dir, validate.Limits{MaxFiles: 10, MaxBytes: 10})
		requireRule(t, err, validate.RuleSize)
	})
}

func requireRule(t *testing.T, err error, rule validate.Rule) {
	t.Helper()
	var ve *validate.Error
	require.True(t, errors.As(err, &ve), "want a validation error, got %v", err)
	require.Equal(t, rule, ve.Rule, err.Error())
}

// FuzzOutput feeds arbitrary paths and contents to the validator. It must
// never panic, and whatever it accepts must be safe to write under a
// folder: a local path and objects with names.
func FuzzOutput(f *testing.F) {
	f.Add("a.yaml", []byte(cm))
	f.Add("../x", []byte(cm))
	f.Add("d/e.json", []byte(`{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"j"}}`))
	f.Add("s.yaml", []byte("apiVersion: v1\nkind: Secret\nmetadata:\n  name: s\n"))
	f.Add("m.yaml", []byte("---\n# c\n---\n"+cm+"---\n- 1\n"))
	f.Fuzz(func(t *testing.T, path string, content []byte) {
		err := validate.Files(map[string][]byte{path: content}, validate.DefaultLimits)
		if err == nil {
			if !filepath.IsLocal(path) || strings.Contains(path, "\\") {
				t.Fatalf("accepted path %q that leaves the output folder", path)
			}
			objs, oerr := validate.Objects(path, content)
			if oerr != nil {
				t.Fatalf("Files accepted what Objects refuses: %v", oerr)
			}
			for _, o := range objs {
				if o.APIVersion == "" || o.Kind == "" || o.Name == "" {
					t.Fatalf("accepted an object without identity: %+v", o)
				}
				if o.Kind == "Secret" && o.APIVersion == "v1" {
					t.Fatalf("accepted a plaintext Secret")
				}
			}
			return
		}
		var ve *validate.Error
		if !errors.As(err, &ve) {
			t.Fatalf("error is not a *validate.Error: %v", err)
		}
	})
}
