package scaffold_test

import (
	"context"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"promised.dev/promised/pipelines/apischema"
	"promised.dev/promised/pipelines/local"
	"promised.dev/promised/pipelines/scaffold"
	"promised.dev/promised/pipelines/stage"
)

func TestOptionsAreChecked(t *testing.T) {
	good := scaffold.Options{Name: "redis", Group: "marketplace.example.com", Kind: "Redis"}
	for _, tc := range []struct {
		name   string
		change func(*scaffold.Options)
		want   string
	}{
		{"uppercase name", func(o *scaffold.Options) { o.Name = "Redis" }, `name "Redis"`},
		{"name starting with a digit", func(o *scaffold.Options) { o.Name = "3scale" }, "Go package name"},
		{"keyword", func(o *scaffold.Options) { o.Name = "func" }, "Go keyword"},
		{"group without a dot", func(o *scaffold.Options) { o.Group = "marketplace" }, "at least one dot"},
		{"lowercase kind", func(o *scaffold.Options) { o.Kind = "redis" }, "CamelCase"},
		{"bad version", func(o *scaffold.Options) { o.Version = "1.0" }, "Kubernetes API version"},
		{"bad plural", func(o *scaffold.Options) { o.Plural = "Redises" }, `plural "Redises"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := good
			tc.change(&o)
			_, err := scaffold.Files(o)
			require.ErrorContains(t, err, tc.want)
		})
	}
	_, err := scaffold.Files(good)
	require.NoError(t, err)
}

func TestFilesMakeAValidPromise(t *testing.T) {
	files, err := scaffold.Files(scaffold.Options{Name: "s3-bucket", Group: "storage.example.com", Kind: "Bucket", Version: "v1", Dir: "promises/bucket"})
	require.NoError(t, err)
	require.ElementsMatch(t, []string{"promise.yaml", "s3bucket.go", "templates/configmap.yaml", "testdata/basic/request.yaml", "Dockerfile", "README.md"}, keys(files))

	p, err := local.ParsePromise("promise.yaml", files["promise.yaml"])
	require.NoError(t, err)
	require.Equal(t, "s3-bucket", p.Name)
	crd, err := apischema.CRD(p)
	require.NoError(t, err)
	require.Equal(t, "buckets.storage.example.com", crd.Name)
	require.Equal(t, "Bucket", crd.Spec.Names.Kind)
	require.Equal(t, stage.Image("s3-bucket-render"), p.Spec.Workflows.Resource.Configure[0].Spec.Containers[0].Image)

	f, err := parser.ParseFile(token.NewFileSet(), "s3bucket.go", files["s3bucket.go"], parser.ParseComments)
	require.NoError(t, err)
	require.Equal(t, "s3bucket", f.Name.Name)
	require.Contains(t, string(files["s3bucket.go"]), "//go:embed all:templates")
	require.Contains(t, string(files["Dockerfile"]), `ENTRYPOINT ["/promised-stage", "s3-bucket-render"]`)
	// Dir is relative to the working folder, this package's in a test.
	require.Contains(t, string(files["README.md"]), "(import `promised.dev/promised/pipelines/scaffold/promises/bucket`)")
}

func TestGenerateRefusesAnExistingPromise(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "promise.yaml"), []byte("mine"), 0o644))
	_, _, err := scaffold.Generate(context.Background(), scaffold.Options{Name: "redis", Group: "example.com", Kind: "Redis", Dir: dir})
	require.ErrorContains(t, err, "already exists")
	data, err := os.ReadFile(filepath.Join(dir, "promise.yaml"))
	require.NoError(t, err)
	require.Equal(t, "mine", string(data))
}

// TestScaffoldCompilesAndPassesItsOwnTest generates a promise inside this
// module, under testdata/ (which `go build ./...` and `go vet ./...` skip,
// so a scaffold half-written by a failed run never breaks anyone's build),
// and then treats it as a platform engineer would: vets the generated
// package and runs its test case with its own compiled Stages(), not with
// the in-process copy Generate used to make the expected output.
func TestScaffoldCompilesAndPassesItsOwnTest(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Fatalf("this test compiles the generated promise and needs the go command on PATH: %v", err)
	}
	require.NoError(t, os.MkdirAll("testdata", 0o755))
	work, err := os.MkdirTemp("testdata", "gen-")
	require.NoError(t, err)
	t.Cleanup(func() {
		os.RemoveAll(work)
		os.Remove("testdata") // only when empty: nothing else lives there
	})
	promiseDir := filepath.Join(work, "widget")

	dir, written, err := scaffold.Generate(context.Background(), scaffold.Options{
		Name: "widget", Group: "widgets.example.com", Kind: "Widget", Dir: promiseDir,
	})
	require.NoError(t, err)
	require.Equal(t, promiseDir, dir)
	want := []string{
		"Dockerfile", "README.md", "promise.yaml", "templates/configmap.yaml", "testdata/basic/request.yaml", "widget.go",
		"testdata/basic/expected/render/configmap.yaml", "testdata/basic/expected/status.yaml", "testdata/basic/expected/destinations.yaml",
	}
	for i := range want {
		want[i] = filepath.Join(promiseDir, filepath.FromSlash(want[i]))
	}
	require.ElementsMatch(t, want, written)

	cm, err := os.ReadFile(filepath.Join(promiseDir, "testdata/basic/expected/render/configmap.yaml"))
	require.NoError(t, err)
	require.Contains(t, string(cm), "name: widget-example")
	require.Contains(t, string(cm), "message: hello from the basic test case")
	status, err := os.ReadFile(filepath.Join(promiseDir, "testdata/basic/expected/status.yaml"))
	require.NoError(t, err)
	require.Equal(t, "message: Widget default/example is rendered\n", string(status))

	// A driver registers the generated package's Stages(), as
	// cmd/builtin would, and runs the case without --update.
	driver := filepath.Join(work, "driver")
	require.NoError(t, os.MkdirAll(driver, 0o755))
	importPath := "promised.dev/promised/pipelines/scaffold/" + filepath.ToSlash(promiseDir)
	require.NoError(t, os.WriteFile(filepath.Join(driver, "main.go"), []byte(`package main

import (
	"context"
	"fmt"
	"os"

	"promised.dev/promised/pipelines/local"
	"promised.dev/promised/pipelines/stage"
	widget "`+importPath+`"
)

func main() {
	reg := stage.NewRegistry()
	for name, f := range widget.Stages() {
		if err := reg.Register(name, f); err != nil {
			fmt.Println(err)
			os.Exit(1)
		}
	}
	results, err := local.RunCases(context.Background(), local.Options{Registry: reg, Runtime: local.RuntimeInProcess}, os.Args[1], false)
	if err != nil {
		fmt.Println(err)
		os.Exit(1)
	}
	for _, r := range results {
		if !r.Passed() {
			fmt.Printf("FAIL %s\n%s\n", r.Name, r.Diff)
			os.Exit(1)
		}
		fmt.Println("ok", r.Name)
	}
}
`), 0o644))

	vet := exec.Command("go", "vet", "./"+filepath.ToSlash(promiseDir), "./"+filepath.ToSlash(driver))
	out, err := vet.CombinedOutput()
	require.NoError(t, err, "go vet on the scaffold: %s", out)
	gofmt := exec.Command("gofmt", "-l", promiseDir)
	out, err = gofmt.CombinedOutput()
	require.NoError(t, err, "gofmt: %s", out)
	require.Empty(t, strings.TrimSpace(string(out)), "gofmt would change the scaffold")

	run := exec.Command("go", "run", "./"+filepath.ToSlash(driver), promiseDir)
	out, err = run.CombinedOutput()
	require.NoError(t, err, "the scaffold's own test case with its compiled stage: %s", out)
	require.Equal(t, "ok basic\n", string(out))
}

func keys(m map[string][]byte) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}
