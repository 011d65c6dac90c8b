package pull

import (
	"bytes"
	"flag"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/util/validation"
)

func TestDecodeFiles(t *testing.T) {
	got := decodeFiles(map[string][]byte{
		"b.yaml": []byte("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: one}\n---\n# only a comment\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: two}\n"),
		"a.yml": []byte(`apiVersion: v1
kind: List
items:
- {apiVersion: v1, kind: ConfigMap, metadata: {name: in-list-1}}
- {apiVersion: v1, kind: ConfigMap, metadata: {name: in-list-2}}
`),
		"c.json":          []byte(`{"apiVersion":"v1"}`),
		"d/gen.yaml":      []byte("apiVersion: v1\nkind: ConfigMap\nmetadata: {generateName: x-}\n"),
		"d/scalar.yaml":   []byte("just a string\n"),
		"d/no-kind.yaml":  []byte("apiVersion: v1\nmetadata: {name: x}\n"),
		"d/bad-gv.yaml":   []byte("apiVersion: a/b/c\nkind: X\nmetadata: {name: x}\n"),
		"e/UPPER.YAML":    []byte("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: upper}\n"),
		"f/empty.yaml":    nil,
		"g/bad-list.yaml": []byte("apiVersion: v1\nkind: List\nitems: [42]\n"),
	})
	var names []string
	for _, m := range got.manifests {
		names = append(names, m.source()+" "+m.obj.GetName())
	}
	require.Equal(t, []string{"a.yml#1 in-list-1", "a.yml#1 in-list-2", "b.yaml#1 one", "b.yaml#3 two", "e/UPPER.YAML#1 upper"}, names)
	require.Equal(t, []string{"c.json"}, got.skipped)
	require.Equal(t, []fileFailure{
		{file: "d/bad-gv.yaml", doc: 1, reason: `apiVersion "a/b/c": unexpected GroupVersion string: a/b/c`},
		{file: "d/gen.yaml", doc: 1, reason: "ConfigMap has generateName but no name: server-side apply needs a fixed name"},
		{file: "d/no-kind.yaml", doc: 1, reason: "apiVersion and kind are required"},
		{file: "d/scalar.yaml", doc: 1, reason: "the document is not a YAML mapping (a Kubernetes object): json: cannot unmarshal string into Go value of type map[string]interface {}"},
		{file: "g/bad-list.yaml", doc: 1, reason: "v1 List: item 0 is not an object"},
	}, got.failures)
}

func TestInventoryName(t *testing.T) {
	require.Equal(t, "sync-dev", InventoryName("dev"), "a valid name is kept as it is")
	require.Equal(t, "sync-platform-dev", InventoryName("platform-dev"))
	// Names that had to be cleaned get a hash of the original, so that
	// destinations that clean to the same text keep separate inventories.
	seen := map[string]string{}
	for _, in := range []string{"platform-dev", "platform/dev", "platform/Dev", "platform.dev", "platform_dev", "--", "/", strings.Repeat("a/", 300)} {
		got := InventoryName(in)
		require.Empty(t, validation.IsDNS1123Subdomain(got), "%q gives %q", in, got)
		require.NotContains(t, seen, got, "%q and %q share an inventory", in, seen[got])
		seen[got] = in
	}
	require.Regexp(t, `^sync-platform-dev-[0-9a-f]{8}$`, InventoryName("platform/Dev"))
}

func TestReportText(t *testing.T) {
	rep := Report{
		Destination: "dev",
		Commit:      "0123456789abcdef0123",
		Objects: []ObjectResult{
			{File: "broken.yaml#2", Action: ActionFailed, Reason: "parsing YAML: line 3"},
			{Object: ObjectRef{APIVersion: "apiextensions.k8s.io/v1", Kind: "CustomResourceDefinition", Name: "widgets.example.com"}, File: "crd.yaml#1", Action: ActionUnchanged},
			{Object: ObjectRef{APIVersion: "v1", Kind: "ConfigMap", Namespace: "default", Name: "app"}, File: "resources/default/w/app/cm.yaml#1", Action: ActionApplied},
			{Object: ObjectRef{APIVersion: "v1", Kind: "ConfigMap", Namespace: "default", Name: "bad"}, File: "bad.yaml#1", Action: ActionFailed, Reason: "ConfigMap \"bad\" is invalid:\n  data: Invalid value"},
			{Object: ObjectRef{APIVersion: "example.com/v1", Kind: "Widget", Namespace: "team", Name: "old"}, Action: ActionPruned},
			{Object: ObjectRef{APIVersion: "v1", Kind: "Namespace", Name: "team"}, Action: ActionKept, Reason: "not deleted: it existed before sync first applied it"},
		},
		Notes: []string{"skipped README.md: not a .yaml or .yml file"},
	}
	var b bytes.Buffer
	require.NoError(t, rep.WriteText(&b))
	golden(t, "testdata/report.golden", b.Bytes())
	require.EqualError(t, rep.Err(), "destination dev: 2 of 6 objects failed")
}

var update = flag.Bool("update", false, "rewrite golden files from the output")

// golden compares got with a file under testdata/, or rewrites the file
// with -update.
func golden(t *testing.T, path string, got []byte) {
	t.Helper()
	if *update {
		require.NoError(t, os.MkdirAll("testdata", 0o755))
		require.NoError(t, os.WriteFile(path, got, 0o644))
	}
	want, err := os.ReadFile(path)
	require.NoError(t, err, "run the test with -update to create it")
	require.Equal(t, string(want), string(got))
}
