package ytt

import (
	"bytes"
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	yttcmd "carvel.dev/ytt/pkg/cmd/template"
	"carvel.dev/ytt/pkg/files"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"sigs.k8s.io/yaml"
)

//go:embed testdata/typical
var typicalFS embed.FS

// typical is a promise's template folder as a stage binary would embed it:
// a schema, a YAML library, a Starlark library and one template producing a
// Namespace, a ConfigMap and a ServiceAccount.
func typical(t testing.TB) fs.FS {
	t.Helper()
	sub, err := fs.Sub(typicalFS, "testdata/typical")
	require.NoError(t, err)
	return sub
}

// typicalValues is a request spec with the dozen fields typical's schema
// declares, shaped as it arrives from an unstructured object.
func typicalValues() map[string]any {
	return map[string]any{
		"name":        "billing",
		"namespace":   "team-payments",
		"team":        "payments",
		"environment": "prod",
		"costCenter":  "cc-4711",
		"owner":       "alice@example.com",
		"region":      "eu-central-1",
		"tier":        "gold",
		"replicas":    int64(3),
		"debug":       true,
		"logLevel":    "warn",
		"image":       "registry.example.com/billing:1.4.2",
	}
}

// docs splits rendered output into documents, as a consumer of the output
// folder reads them (sigs.k8s.io/yaml, a YAML 1.1 reader like ytt).
func docs(t *testing.T, out []byte) []map[string]any {
	t.Helper()
	var result []map[string]any
	for _, raw := range bytes.Split(out, []byte("\n---\n")) {
		var doc map[string]any
		require.NoError(t, yaml.Unmarshal(raw, &doc), "document:\n%s", raw)
		require.NotNil(t, doc, "empty document in output:\n%s", out)
		result = append(result, doc)
	}
	return result
}

func TestRenderTypicalRequest(t *testing.T) {
	out, err := Render(context.Background(), typical(t), typicalValues())
	require.NoError(t, err)

	// Only the template is output: the schema and both libraries are not.
	require.Equal(t, []string{"request.yml"}, keys(out))

	got := docs(t, out["request.yml"])
	require.Len(t, got, 3)
	wantLabels := map[string]any{
		"app.kubernetes.io/name":       "billing",
		"app.kubernetes.io/managed-by": "promised",
		"team":                         "payments",
		"environment":                  "prod",
	}

	assert.Equal(t, "Namespace", got[0]["kind"])
	assert.Equal(t, map[string]any{
		"name":        "team-payments",
		"labels":      wantLabels,
		"annotations": map[string]any{"cost-center": "cc-4711", "owner": "alice@example.com"},
	}, got[0]["metadata"])

	assert.Equal(t, "ConfigMap", got[1]["kind"])
	assert.Equal(t, map[string]any{
		"region":   "eu-central-1",
		"tier":     "gold",
		"replicas": "3",
		"debug":    "true",
		"logLevel": "warn",
		"image":    "registry.example.com/billing:1.4.2",
	}, got[1]["data"])

	assert.Equal(t, "ServiceAccount", got[2]["kind"])
	assert.Equal(t, "billing-runner", got[2]["metadata"].(map[string]any)["name"], "name from names.star")
	assert.Equal(t, wantLabels, got[2]["metadata"].(map[string]any)["labels"], "labels from helpers.lib.yml")
}

func TestRenderSchemaDefaultsFillMissingValues(t *testing.T) {
	values := typicalValues()
	delete(values, "region")
	delete(values, "replicas")

	out, err := Render(context.Background(), typical(t), values)
	require.NoError(t, err)

	data := docs(t, out["request.yml"])[1]["data"].(map[string]any)
	assert.Equal(t, "eu-west-1", data["region"])
	assert.Equal(t, "1", data["replicas"])
}

// configMapTemplate renders data values v (a string) and m (a map of
// strings) into a ConfigMap, the place a mangled string does most harm.
const configMapTemplate = `#@ load("@ytt:data", "data")
apiVersion: v1
kind: ConfigMap
metadata:
  name: guard
data:
  value: #@ data.values.v
  #@ for k in data.values.m:
  #@yaml/text-templated-strings
  (@= k @): #@ data.values.m[k]
  #@ end
`

// TestRenderKeepsYAML11LookalikesAsStrings is the guard for the values
// boundary: every string below is something else when read bare as YAML 1.1
// (bool, null, int, float, octal, hex, sexagesimal, timestamp, merge key),
// and must come out of the render as the same string, both as a value and
// as a map key.
func TestRenderKeepsYAML11LookalikesAsStrings(t *testing.T) {
	for _, s := range []string{
		"n", "y", "yes", "no", "on", "off", "~", "1e3", "0x10", "010",
		"N", "Y", "YES", "NO", "On", "OFF", "true", "False", "null", "Null", "NULL",
		"", "0", "-1", "+1", "1.0", ".5", "1_000", "0b101", "0o10", ".inf", "-.Inf", ".NaN",
		"12:30", "190:20:30", "2001-12-14", "2001-12-14t21:59:43.10-05:00",
		"<<", "=", "- a", "a: b", "#@ data.values", "{}", "[]", "*ref", "&anchor", "!tag", "| x", "> x",
		" lead", "trail ", "l1\nl2", "tab\there", "quote\"s", `back\slash`, "\b\f", "\u2028", "é😀",
	} {
		t.Run(fmt.Sprintf("%q", s), func(t *testing.T) {
			data := map[string]any{"key-" + s: s}
			// ytt's YAML printer writes a "<<" key bare, which a YAML 1.1
			// reader takes as a merge key. That is on ytt's output side, not
			// the values boundary, and "<<" is no valid ConfigMap key anyway.
			if s != "<<" {
				data[s] = "as-key"
			}
			out, err := Render(context.Background(),
				fstest.MapFS{"cm.yml": {Data: []byte(configMapTemplate)}},
				map[string]any{"v": s, "m": data})
			require.NoError(t, err)

			var cm struct {
				Data map[string]any `json:"data"`
			}
			require.NoError(t, yaml.Unmarshal(out["cm.yml"], &cm), "output:\n%s", out["cm.yml"])
			data["value"] = s
			assert.Equal(t, data, cm.Data,
				"output:\n%s", out["cm.yml"])
		})
	}
}

func TestRenderKeepsNumberAndBoolTypes(t *testing.T) {
	tpl := "#@ load(\"@ytt:data\", \"data\")\nv: #@ data.values\n"
	values := map[string]any{
		"int":   int64(1) << 53,
		"float": 2.5,
		// encoding/json writes an integral float64 without a fraction, so a
		// count decoded from JSON (always float64) reaches ytt as an int and
		// satisfies a schema's integer default.
		"whole": float64(3),
		"bool":  false,
		"null":  nil,
		"list":  []any{"on", int64(1)},
	}
	out, err := Render(context.Background(), fstest.MapFS{"t.yml": {Data: []byte(tpl)}}, values)
	require.NoError(t, err)
	assert.Equal(t, "v:\n  bool: false\n  float: 2.5\n  int: 9007199254740992\n  list:\n  - \"on\"\n  - 1\n  \"null\": null\n  whole: 3\n",
		string(out["t.yml"]))
}

func TestRenderTemplateErrorNamesFileAndLine(t *testing.T) {
	for name, tc := range map[string]struct {
		template string
		want     []string
	}{
		"starlark syntax error": {
			template: "a: b\n#@ if True\nc: d\n#@ end\n",
			want:     []string{"sub/broken.yml:3", "want ':'"},
		},
		"undefined variable": {
			template: "a: b\nc: #@ nope\n",
			want:     []string{"sub/broken.yml:2", "undefined: nope"},
		},
		"assert.fail": {
			template: "#@ load(\"@ytt:assert\", \"assert\")\na: b\nc: #@ assert.fail(\"replicas must be odd\")\n",
			want:     []string{"sub/broken.yml:3", "replicas must be odd"},
		},
		"YAML syntax error": {
			template: "a: b\n c: [\n",
			want:     []string{"'sub/broken.yml'", "line 2"},
		},
		"missing library": {
			template: "#@ load(\"missing.lib.yml\", \"x\")\na: 1\n",
			want:     []string{"sub/broken.yml:1", "missing.lib.yml"},
		},
	} {
		t.Run(name, func(t *testing.T) {
			templates := fstest.MapFS{
				"fine.yml":       {Data: []byte("a: 1\n")},
				"sub/broken.yml": {Data: []byte(tc.template)},
			}
			out, err := Render(context.Background(), templates, nil)
			require.Error(t, err)
			assert.Nil(t, out)
			assert.True(t, strings.HasPrefix(err.Error(), "rendering ytt templates: "), err.Error())
			assert.NotNil(t, errors.Unwrap(err), "ytt's error is wrapped, not flattened")
			for _, w := range tc.want {
				assert.Contains(t, err.Error(), w)
			}
		})
	}
}

func TestRenderSchemaViolationNamesValuesLine(t *testing.T) {
	values := typicalValues()
	values["replicas"] = "three"

	_, err := Render(context.Background(), typical(t), values)
	require.Error(t, err)
	// The values file is one key per line, so ytt's excerpt is the bad key,
	// not the whole spec, and the message names the schema line it broke.
	assert.Contains(t, err.Error(), `request-values.json:`)
	assert.Contains(t, err.Error(), `"replicas": "three"`)
	assert.NotContains(t, err.Error(), `"owner"`)
	assert.Contains(t, err.Error(), "schema.yml:14")
}

func TestRenderUndeclaredValueFailsWithSchema(t *testing.T) {
	values := typicalValues()
	values["colour"] = "blue"

	_, err := Render(context.Background(), typical(t), values)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "not declared in schema")
}

func TestRenderUnencodableValues(t *testing.T) {
	_, err := Render(context.Background(), typical(t), map[string]any{"c": make(chan int)})
	var unsupported *json.UnsupportedTypeError
	require.ErrorAs(t, err, &unsupported)
	assert.Contains(t, err.Error(), "rendering ytt templates: encoding data values as JSON")
}

func TestRenderIsDeterministic(t *testing.T) {
	// Many keys, so that Go's randomised map order would show if it leaked
	// into the data values file.
	extra := map[string]any{}
	for i := range 50 {
		extra[fmt.Sprintf("k%02d", i)] = fmt.Sprintf("v%d", i)
	}
	tpl := "#@ load(\"@ytt:data\", \"data\")\nextra: #@ data.values.extra\n---\nall: #@ data.values\n"
	templates := fstest.MapFS{
		"a.yml": {Data: []byte(tpl)},
		"b.yml": {Data: []byte(configMapTemplate)},
	}
	render := func() map[string][]byte {
		values := map[string]any{"extra": extra, "v": "x", "m": extra}
		out, err := Render(context.Background(), templates, values)
		require.NoError(t, err)
		return out
	}

	first := render()
	for range 20 {
		assert.Equal(t, first, render())
	}
}

func TestRenderDropsEmptyDocumentsAndFiles(t *testing.T) {
	templates := fstest.MapFS{
		"disabled.yml": {Data: []byte("#@ if False:\nkind: Ignored\n#@ end\n")},
		"gaps.yml":     {Data: []byte("---\n---\nkind: A\n---\n#@ if False:\nkind: B\n#@ end\n---\nkind: C\n---\n")},
	}
	out, err := Render(context.Background(), templates, nil)
	require.NoError(t, err)
	assert.Equal(t, map[string][]byte{"gaps.yml": []byte("kind: A\n---\nkind: C\n")}, out)
}

func TestRenderDataValuesFileInTemplatesIsOverriddenByValues(t *testing.T) {
	templates := fstest.MapFS{
		"defaults.yml": {Data: []byte("#@data/values\n---\nsize: small\nzone: a\n")},
		"t.yml":        {Data: []byte("#@ load(\"@ytt:data\", \"data\")\nsize: #@ data.values.size\nzone: #@ data.values.zone\n")},
	}
	out, err := Render(context.Background(), templates, map[string]any{"size": "large"})
	require.NoError(t, err)
	assert.Equal(t, map[string][]byte{"t.yml": []byte("size: large\nzone: a\n")}, out)
}

func TestRenderFromDirKeepsSubfolders(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "lib", "names.lib.yml"), "#@ def prefixed(n):\n#@   return \"p-\" + n\n#@ end\n")
	write(t, filepath.Join(dir, "apps", "app.yml"), "#@ load(\"/lib/names.lib.yml\", \"prefixed\")\nname: #@ prefixed(\"x\")\n")
	write(t, filepath.Join(dir, "README.md"), "ytt ignores files of unknown types\n")

	out, err := Render(context.Background(), os.DirFS(dir), nil)
	require.NoError(t, err)
	assert.Equal(t, map[string][]byte{"apps/app.yml": []byte("name: p-x\n")}, out)
}

func TestRenderRefusesSymlinks(t *testing.T) {
	dir := t.TempDir()
	outside := filepath.Join(t.TempDir(), "secret.yml")
	write(t, outside, "stolen: true\n")
	require.NoError(t, os.Symlink(outside, filepath.Join(dir, "link.yml")))

	_, err := Render(context.Background(), os.DirFS(dir), nil)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "link.yml: expected a regular file")
}

func TestRenderWithoutTemplates(t *testing.T) {
	_, err := Render(context.Background(), fstest.MapFS{}, nil)
	assert.ErrorContains(t, err, "no files found")
}

// withoutRenderCache makes the test's renders run ytt, as a first render
// of each input does.
func withoutRenderCache(t testing.TB) {
	t.Helper()
	saved := recent
	recent = &renderCache{max: 0, items: map[[32]byte]map[string][]byte{}}
	t.Cleanup(func() { recent = saved })
}

func TestRenderConcurrentRendersAreSerialisedAndCorrect(t *testing.T) {
	withoutRenderCache(t)
	templates := typical(t)
	want, err := Render(context.Background(), templates, typicalValues())
	require.NoError(t, err)

	const renders = 16
	outs := make([]map[string][]byte, renders)
	errs := make([]error, renders)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range renders {
		wg.Go(func() {
			<-start
			outs[i], errs[i] = Render(context.Background(), templates, typicalValues())
		})
	}
	close(start)
	wg.Wait()

	for i := range renders {
		require.NoError(t, errs[i], "render %d", i)
		assert.Equal(t, want, outs[i], "render %d", i)
	}
}

func TestRenderHonoursContext(t *testing.T) {
	t.Run("already cancelled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_, err := Render(ctx, typical(t), typicalValues())
		assert.ErrorIs(t, err, context.Canceled)
	})

	t.Run("deadline passes while waiting for a turn", func(t *testing.T) {
		withoutRenderCache(t)
		renderSlot <- struct{}{} // another render holds the slot
		defer func() { <-renderSlot }()

		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		defer cancel()
		_, err := Render(ctx, typical(t), typicalValues())
		assert.ErrorIs(t, err, context.DeadlineExceeded)
		assert.ErrorContains(t, err, "waiting for a render slot")
	})
}

func TestRunTurnsYttPanicIntoError(t *testing.T) {
	// Two output files without the sort order files.NewSortedFiles records
	// reach one of ytt's panics ("Missing file order assignment").
	var in []*files.File
	for _, name := range []string{"a.yml", "b.yml"} {
		f, err := files.NewFileFromSource(files.NewBytesSource(name, []byte("a: 1\n")))
		require.NoError(t, err)
		in = append(in, f)
	}
	opts, _, err := newOptions(nil)
	require.NoError(t, err)

	_, err = run(opts, yttcmd.Input{Files: in})
	assert.ErrorContains(t, err, "ytt panicked: Missing file order assignment")
}

// BenchmarkRender measures a render of new input (ytt runs).
func BenchmarkRender(b *testing.B) {
	withoutRenderCache(b)
	templates := typical(b)
	values := typicalValues()
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Render(ctx, templates, values); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRenderUnchanged measures a render of input rendered before,
// as an unchanged request's re-run renders (the render cache answers).
func BenchmarkRenderUnchanged(b *testing.B) {
	templates := typical(b)
	values := typicalValues()
	ctx := context.Background()
	if _, err := Render(ctx, templates, values); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Render(ctx, templates, values); err != nil {
			b.Fatal(err)
		}
	}
}

func keys(m map[string][]byte) []string { return slices.Sorted(maps.Keys(m)) }

func write(t *testing.T, path, content string) {
	t.Helper()
	require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o755))
	require.NoError(t, os.WriteFile(path, []byte(content), 0o644))
}

// A render of inputs rendered before returns the same output without
// taking the render slot; any change of a template or a value renders.
func TestRenderRemembersRecentRenders(t *testing.T) {
	saved := recent
	recent = &renderCache{max: renderCacheBytes, items: map[[32]byte]map[string][]byte{}}
	t.Cleanup(func() { recent = saved })
	dir := t.TempDir()
	write(t, filepath.Join(dir, "cm.yml"), "#@ load(\"@ytt:data\", \"data\")\n---\nname: #@ data.values.name\n")
	templates := os.DirFS(dir)
	ctx := context.Background()

	first, err := Render(ctx, templates, map[string]any{"name": "a"})
	require.NoError(t, err)
	first["cm.yml"][0] = 'X' // callers own what they get
	renderSlot <- struct{}{} // a render would now wait for the slot
	again, err := Render(ctx, templates, map[string]any{"name": "a"})
	<-renderSlot
	require.NoError(t, err)
	assert.Equal(t, "name: a\n", string(again["cm.yml"]))

	for name, change := range map[string]func(){
		"another value":    func() {},
		"another template": func() { write(t, filepath.Join(dir, "cm.yml"), "---\nname: fixed\n") },
	} {
		change()
		renderSlot <- struct{}{}
		ctx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
		_, err := Render(ctx, templates, map[string]any{"name": "b"})
		cancel()
		<-renderSlot
		assert.ErrorIs(t, err, context.DeadlineExceeded, "%s must render", name)
	}
	got, err := Render(ctx, templates, map[string]any{"name": "b"})
	require.NoError(t, err)
	assert.Equal(t, "name: fixed\n", string(got["cm.yml"]))
}

func TestRenderCacheIsBounded(t *testing.T) {
	c := &renderCache{max: 100, items: map[[32]byte]map[string][]byte{}}
	key := func(i byte) [32]byte { return [32]byte{i} }
	for i := range byte(10) {
		c.add(key(i), map[string][]byte{"f": bytes.Repeat([]byte("x"), 39)}) // 40 bytes each
	}
	assert.LessOrEqual(t, c.size, 100)
	assert.Len(t, c.items, 2)
	_, ok := c.get(key(0))
	assert.False(t, ok, "the oldest went first")
	_, ok = c.get(key(9))
	assert.True(t, ok)
	c.add(key(11), map[string][]byte{"big": bytes.Repeat([]byte("x"), 200)})
	_, ok = c.get(key(11))
	assert.False(t, ok, "an output larger than the cache is not kept")
}
