// Package scaffold writes a new promise's folder: the code behind
// `promised init promise`. A scaffold is a working promise, not a set of
// blanks: its API has one field, its Go stage renders one ytt template, and
// its one test case passes, because the case's expected output is made by
// running that same stage over the written templates.
package scaffold

import (
	"bytes"
	"context"
	"embed"
	"errors"
	"fmt"
	"go/format"
	"go/token"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"text/template"

	"k8s.io/apimachinery/pkg/util/validation"

	"promised.dev/promised/pipelines/local"
	"promised.dev/promised/pipelines/stage"
	"promised.dev/promised/pipelines/ytt"
)

//go:embed all:skeleton
var skeleton embed.FS

// Options say what to scaffold.
type Options struct {
	// Name is the promise's name (a DNS label, such as "redis"); the Go
	// package is the name without dashes.
	Name string
	// Group is the API group of the promise's kind, such as
	// "marketplace.example.com".
	Group string
	// Kind is the kind developers request, such as "Redis".
	Kind string
	// Version is the API version; DefaultVersion when empty.
	Version string
	// Plural is the kind's plural resource name; the lowercased kind plus
	// "s" when empty (pass it for kinds English pluralises otherwise).
	Plural string
	// Dir is the folder to create; promises/<Name> when empty.
	Dir string
	// Force writes into a folder that already holds files, replacing the
	// scaffold's own files and leaving others alone.
	Force bool
}

// DefaultVersion is the API version of a scaffolded kind.
const DefaultVersion = "v1alpha1"

// CaseName is the test case a scaffold comes with.
const CaseName = "basic"

// values is what the skeleton's templates are executed with.
type values struct {
	Name, Group, Kind, Version, Plural, Singular string
	// Package is the Go package name.
	Package string
	// StageName and Image are the configure stage's name and image.
	StageName, Image string
	// BaseImage is the shared promised-stage image stage images start from.
	BaseImage string
	// Dir is the promise folder as given; ImportPath its Go import path.
	Dir, ImportPath string
}

var (
	kindPattern    = regexp.MustCompile(`^[A-Z][A-Za-z0-9]{0,62}$`)
	versionPattern = regexp.MustCompile(`^v[1-9][0-9]*((alpha|beta)[1-9][0-9]*)?$`)
	packagePattern = regexp.MustCompile(`^[a-z][a-z0-9]*$`)
)

// values checks o and fills in its defaults.
func (o Options) values() (values, error) {
	var errs []error
	if msgs := validation.IsDNS1123Label(o.Name); len(msgs) > 0 {
		errs = append(errs, fmt.Errorf("name %q: %s", o.Name, strings.Join(msgs, "; ")))
	}
	pkg := strings.ReplaceAll(o.Name, "-", "")
	if !packagePattern.MatchString(pkg) || token.IsKeyword(pkg) {
		errs = append(errs, fmt.Errorf("name %q: without its dashes it must be a Go package name (a lowercase letter, then letters and digits, not a Go keyword)", o.Name))
	}
	if msgs := validation.IsDNS1123Subdomain(o.Group); len(msgs) > 0 || !strings.Contains(o.Group, ".") {
		errs = append(errs, fmt.Errorf("group %q: want a domain name with at least one dot, such as marketplace.example.com", o.Group))
	}
	if !kindPattern.MatchString(o.Kind) {
		errs = append(errs, fmt.Errorf("kind %q: want CamelCase starting with an uppercase letter, such as Redis", o.Kind))
	}
	version := o.Version
	if version == "" {
		version = DefaultVersion
	}
	if !versionPattern.MatchString(version) {
		errs = append(errs, fmt.Errorf("version %q: want a Kubernetes API version such as v1, v1alpha1 or v2beta3", version))
	}
	plural := o.Plural
	if plural == "" {
		plural = strings.ToLower(o.Kind) + "s"
	}
	if msgs := validation.IsDNS1123Label(plural); len(msgs) > 0 {
		errs = append(errs, fmt.Errorf("plural %q: %s", plural, strings.Join(msgs, "; ")))
	}
	if len(errs) > 0 {
		return values{}, errors.Join(errs...)
	}
	dir := o.Dir
	if dir == "" {
		dir = filepath.Join("promises", o.Name)
	}
	stageName := o.Name + "-render"
	return values{
		Name: o.Name, Group: o.Group, Kind: o.Kind, Version: version, Plural: plural, Singular: strings.ToLower(o.Kind),
		Package: pkg, StageName: stageName, Image: stage.Image(stageName),
		BaseImage: "promised.dev/promised-stage:" + stage.Version,
		Dir:       dir, ImportPath: importPath(dir),
	}, nil
}

// importPath is the Go import path of dir: the path of the module holding
// it plus the folder's place in it, or, when dir is not inside a module
// yet, promised's module path plus dir (the usual place, promises/NAME).
func importPath(dir string) string {
	abs, err := filepath.Abs(dir)
	if err == nil {
		for d := filepath.Dir(abs); ; d = filepath.Dir(d) {
			if data, err := os.ReadFile(filepath.Join(d, "go.mod")); err == nil {
				if mod := modulePath(data); mod != "" {
					if rel, err := filepath.Rel(d, abs); err == nil {
						return path.Join(mod, filepath.ToSlash(rel))
					}
				}
				break
			}
			if filepath.Dir(d) == d {
				break
			}
		}
	}
	return path.Join("promised.dev/promised", filepath.ToSlash(filepath.Clean(dir)))
}

func modulePath(gomod []byte) string {
	for _, line := range strings.Split(string(gomod), "\n") {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "module "); ok {
			return strings.Trim(strings.TrimSpace(rest), `"`)
		}
	}
	return ""
}

// skeletonFiles maps the skeleton's templates to where they are written in
// the promise folder; the Go file is named after the package.
func skeletonFiles(v values) map[string]string {
	return map[string]string{
		"promise.yaml.tmpl":             local.PromiseFile,
		"stage.go.tmpl":                 v.Package + ".go",
		"templates/configmap.yaml.tmpl": "templates/configmap.yaml",
		"request.yaml.tmpl":             "testdata/" + CaseName + "/" + local.CaseRequest,
		"Dockerfile.tmpl":               "Dockerfile",
		"README.md.tmpl":                "README.md",
	}
}

// Files returns the scaffold's files (without the test case's expected
// output, which only a run makes), keyed by slash-separated path within
// the promise folder.
func Files(o Options) (map[string][]byte, error) {
	v, err := o.values()
	if err != nil {
		return nil, err
	}
	out := map[string][]byte{}
	for src, dst := range skeletonFiles(v) {
		raw, err := skeleton.ReadFile("skeleton/" + src)
		if err != nil {
			return nil, fmt.Errorf("reading the skeleton: %w", err)
		}
		tpl, err := template.New(src).Option("missingkey=error").Parse(string(raw))
		if err != nil {
			return nil, fmt.Errorf("parsing skeleton %s: %w", src, err)
		}
		var b bytes.Buffer
		if err := tpl.Execute(&b, v); err != nil {
			return nil, fmt.Errorf("executing skeleton %s: %w", src, err)
		}
		data := b.Bytes()
		if strings.HasSuffix(dst, ".go") {
			// gofmt'd, so the scaffold passes `make vet` as it is.
			if data, err = format.Source(data); err != nil {
				return nil, fmt.Errorf("formatting %s: %w", dst, err)
			}
		}
		out[dst] = data
	}
	return out, nil
}

// Generate writes the scaffold into its folder, then runs the test case
// with the scaffold's own stage over the written templates to make the
// case's expected/ output. It returns the folder and the files written,
// sorted.
func Generate(ctx context.Context, o Options) (string, []string, error) {
	v, err := o.values()
	if err != nil {
		return "", nil, err
	}
	files, err := Files(o)
	if err != nil {
		return "", nil, err
	}
	if err := checkTarget(v.Dir, o.Force); err != nil {
		return "", nil, err
	}
	written := make([]string, 0, len(files))
	for name, data := range files {
		p := filepath.Join(v.Dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return "", nil, fmt.Errorf("creating %s: %w", filepath.Dir(p), err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			return "", nil, fmt.Errorf("writing %s: %w", p, err)
		}
		written = append(written, p)
	}
	expected, err := renderExpected(ctx, v)
	if err != nil {
		return "", nil, err
	}
	written = append(written, expected...)
	sort.Strings(written)
	return v.Dir, written, nil
}

// checkTarget refuses to scaffold over an existing promise unless forced.
func checkTarget(dir string, force bool) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading %s: %w", dir, err)
	}
	if len(entries) > 0 && !force {
		return fmt.Errorf("%s already exists and is not empty: choose another --dir, or pass --force to overwrite the scaffold's files in it", dir)
	}
	return nil
}

// renderExpected makes the test case's expected/ by running it, with the
// stage in-process reading the templates just written.
func renderExpected(ctx context.Context, v values) ([]string, error) {
	reg := stage.NewRegistry()
	if err := reg.Register(v.StageName, Stage(os.DirFS(filepath.Join(v.Dir, "templates")))); err != nil {
		return nil, err
	}
	results, err := local.RunCases(ctx, local.Options{Registry: reg, Runtime: local.RuntimeInProcess}, v.Dir, true)
	if err != nil {
		return nil, fmt.Errorf("rendering the expected output of the scaffold's test case: %w", err)
	}
	for _, r := range results {
		if !r.Passed() {
			return nil, fmt.Errorf("the scaffold's test case %s does not run: %s", r.Name, r.Diff)
		}
	}
	var out []string
	root := filepath.Join(v.Dir, "testdata", CaseName, local.CaseExpected)
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			out = append(out, p)
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("listing %s: %w", root, err)
	}
	return out, nil
}

// Stage is the scaffolded stage's render (the generated package's render
// function, which the generated Render calls with its embedded templates)
// over templates. Generate runs it to make the test case's expected
// output, so the two must stay the same code: this package's tests compile
// the generated package and check its own test case passes with it.
func Stage(templates fs.FS) stage.Func {
	return func(ctx context.Context, c *stage.Context) error {
		obj, err := c.Object()
		if err != nil {
			return err
		}
		spec, err := c.Spec()
		if err != nil {
			return err
		}
		files, err := ytt.Render(ctx, templates, map[string]any{
			"name":      obj.GetName(),
			"namespace": obj.GetNamespace(),
			"spec":      spec,
		})
		if err != nil {
			return err
		}
		names := make([]string, 0, len(files))
		for name := range files {
			names = append(names, name)
		}
		sort.Strings(names)
		for _, name := range names {
			if err := c.WriteFile(name, files[name]); err != nil {
				return err
			}
		}
		return c.SetStatus(map[string]any{
			"message": fmt.Sprintf("%s %s/%s is rendered", obj.GetKind(), obj.GetNamespace(), obj.GetName()),
		})
	}
}
