// Package ytt renders a promise's ytt templates in-process, from a request's
// spec, into the files a pipeline writes to its output folder.
//
// It calls carvel.dev/ytt as a library rather than running the ytt binary so
// that a render costs no process start and no disk: the templates come from
// an fs.FS (an embed.FS compiled into the stage, or os.DirFS) and the result
// comes back as bytes.
//
// A stage embedding its templates should write //go:embed all:templates
// rather than //go:embed templates: without all:, embed leaves out files and
// folders whose names start with "_" or ".", which silently drops ytt's
// private library folder _ytt_lib and any _helpers.lib.yml.
package ytt

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"slices"
	"strings"
	"sync"

	yttcmd "carvel.dev/ytt/pkg/cmd/template"
	"carvel.dev/ytt/pkg/files"
)

// valuesPath names the in-memory data values file in ytt's own error
// messages (for example a schema violation), so it should say where the
// values came from. It has no directory part: ytt treats a data values file
// inside a directory as "implied" and skips it unless its name is YAML's.
const valuesPath = "request-values.json"

// renderSlot admits one ytt evaluation at a time, process-wide.
//
// ytt is not safe for concurrent use: every template it compiles bumps an
// unsynchronised package counter (template.globalInsSetID, used to name the
// instruction set) and sets starlark's resolve.Allow* package flags, so two
// renders running at once are a data race that `go test -race` reports (the
// starlark flags are also read while templates run). A typical render takes
// about 2 ms, so even serialised a process renders a few hundred requests a
// second, well above a controller's reconcile rate. It is a one-slot channel rather than a sync.Mutex so that a caller whose
// context ends while it waits behind other renders gives up instead of
// queueing forever.
var renderSlot = make(chan struct{}, 1)

// Render evaluates the ytt templates in templates with values as data values
// and returns the rendered output, keyed by ytt's output file name: the
// template's slash-separated path within templates. There is one entry per
// template that produced output; a template whose documents are all empty
// (for example wrapped in a false #@ if) produces none.
//
// templates is walked in full, like `ytt -f dir`: .yml/.yaml and .txt files
// are templates, *.lib.yml and .star files are libraries for #@ load, files
// annotated #@data/values-schema or #@data/values are schema and defaults,
// and files of any other type are ignored. Symbolic links are refused, as
// ytt refuses them by default, so a template folder cannot reach outside
// itself.
//
// values are the request's data values. They are passed to ytt as JSON, so
// a string stays a string: under the YAML 1.1 rules ytt reads data values
// with, a bare y, no, on, ~, 1e3, 0x10 or 010 would otherwise become a bool,
// null or number. Without a schema any key is accepted; with one, values
// must match it. Values must be encodable by encoding/json.
//
// Renders are serialised process-wide (see renderSlot); ctx bounds the wait
// for a turn, but ytt itself cannot be interrupted once a render starts.
func Render(ctx context.Context, templates fs.FS, values map[string]any) (map[string][]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("rendering ytt templates: %w", err)
	}

	// Everything that does not touch ytt's globals happens before taking the
	// slot, so that renders queue only for the evaluation itself.
	input, key, err := readTemplates(templates)
	if err != nil {
		return nil, fmt.Errorf("rendering ytt templates: %w", err)
	}
	opts, valuesJSON, err := newOptions(values)
	if err != nil {
		return nil, fmt.Errorf("rendering ytt templates: %w", err)
	}
	key.Write(valuesJSON)
	var sum [sha256.Size]byte
	key.Sum(sum[:0])
	if out, ok := recent.get(sum); ok {
		return out, nil
	}

	select {
	case renderSlot <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("rendering ytt templates: waiting for a render slot: %w", ctx.Err())
	}
	out, err := run(opts, input)
	<-renderSlot
	if err != nil {
		return nil, fmt.Errorf("rendering ytt templates: %w", err)
	}

	result := make(map[string][]byte, len(out.Files))
	for _, f := range out.Files {
		// ytt already leaves empty documents out of a file; a template that
		// produced only empty documents still yields a zero-length file,
		// which would be a pointless (and, to some consumers, invalid)
		// output file.
		if len(bytes.TrimSpace(f.Bytes())) == 0 {
			continue
		}
		result[f.RelativePath()] = f.Bytes()
	}
	recent.add(sum, result)
	return result, nil
}

// recent remembers the output of recent renders by their input: a render
// is a pure function of the template files and the values (ytt is given no
// filesystem, environment or clock), and a request re-run without a change
// (a forced or periodic reconcile, a destination change) renders what it
// rendered before. Without it, every such re-run queued for the one render
// slot: re-running 1,000 unchanged requests spent most of its time there.
// Only successful renders are kept, up to renderCacheBytes of output.
var recent = &renderCache{max: renderCacheBytes, items: map[[sha256.Size]byte]map[string][]byte{}}

// renderCacheBytes bounds the output the render cache keeps: some 30,000
// renders of a typical request's few kilobytes.
const renderCacheBytes = 64 << 20

type renderCache struct {
	mu    sync.Mutex
	max   int
	size  int
	items map[[sha256.Size]byte]map[string][]byte
	// order is insertion order; the oldest entries go first.
	order [][sha256.Size]byte
}

func (c *renderCache) get(key [sha256.Size]byte) (map[string][]byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	files, ok := c.items[key]
	if !ok {
		return nil, false
	}
	// Callers own what Render returns.
	out := make(map[string][]byte, len(files))
	for name, data := range files {
		out[name] = bytes.Clone(data)
	}
	return out, true
}

func (c *renderCache) add(key [sha256.Size]byte, files map[string][]byte) {
	size := 0
	kept := make(map[string][]byte, len(files))
	for name, data := range files {
		size += len(name) + len(data)
		kept[name] = bytes.Clone(data)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.items[key]; ok || size > c.max {
		return
	}
	for c.size+size > c.max && len(c.order) > 0 {
		old := c.order[0]
		c.order = c.order[1:]
		c.size -= entrySize(c.items[old])
		delete(c.items, old)
	}
	c.items[key] = kept
	c.order = append(c.order, key)
	c.size += size
}

func entrySize(files map[string][]byte) int {
	size := 0
	for name, data := range files {
		size += len(name) + len(data)
	}
	return size
}

// run evaluates input with opts. The caller must hold renderSlot.
func run(opts *yttcmd.Options, input yttcmd.Input) (out yttcmd.Output, err error) {
	// ytt evaluates template code written by promise authors and still has
	// panics on paths it considers unreachable; one of those must fail this
	// render, not bring down the controller that hosts it. (Not everything
	// can be caught: unbounded recursion in a template, which ytt's starlark
	// allows, overflows the goroutine stack, and that is fatal.)
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("ytt panicked: %v", r)
		}
	}()
	out = opts.RunWithFiles(input, quietUI{})
	return out, out.Err
}

// newOptions builds ytt's options with values as a plain data values file,
// the in-memory equivalent of `ytt --data-values-file`.
//
// A data values file, unlike --data-value-yaml key=value pairs, carries the
// whole nested map in one overlay, needs no escaping of keys containing "."
// or ":", and may add keys when the templates have no schema. Its content is
// JSON because JSON is YAML whose strings are always quoted, which is what
// keeps "no" a string rather than false; encoding/json also sorts map keys,
// so the same values always make the same bytes.
func newOptions(values map[string]any) (*yttcmd.Options, []byte, error) {
	if values == nil {
		values = map[string]any{}
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	// Keep <, > and & literal: they are valid in YAML strings and the escaped
	// forms would only make ytt's error excerpts harder to read.
	enc.SetEscapeHTML(false)
	// One key per line, so that when a value breaks the schema ytt's error
	// excerpt shows that key's line rather than the whole spec on one line.
	enc.SetIndent("", "  ")
	if err := enc.Encode(values); err != nil {
		return nil, nil, fmt.Errorf("encoding data values as JSON: %w", err)
	}
	valuesFile, err := files.NewFileFromSource(files.NewBytesSource(valuesPath, buf.Bytes()))
	if err != nil {
		return nil, nil, fmt.Errorf("preparing data values: %w", err)
	}

	opts := yttcmd.NewOptions()
	opts.DataValuesFlags.FromFiles = []string{valuesPath}
	// ReadFilesFunc stands in for the filesystem, so ytt never opens a path
	// (or a URL) on our behalf.
	opts.DataValuesFlags.ReadFilesFunc = func(p string) ([]*files.File, error) {
		if p != valuesPath {
			return nil, fmt.Errorf("unexpected data values path %q", p)
		}
		return []*files.File{valuesFile}, nil
	}
	// EnvironFunc is only consulted for --data-values-env, which is unset;
	// pinning it anyway means no future default can read the process
	// environment into a render.
	opts.DataValuesFlags.EnvironFunc = func() []string { return nil }
	return opts, buf.Bytes(), nil
}

// readTemplates reads every file in templates into ytt's input, in the
// order `ytt -f dir` would: sorted by path, which decides the order of
// output documents and of data values and overlay files.
//
// It also returns a hash of every file's path and content, the template
// half of the render cache's key.
func readTemplates(templates fs.FS) (yttcmd.Input, hash.Hash, error) {
	var in []*files.File
	type file struct {
		path string
		data []byte
	}
	var raw []file
	err := fs.WalkDir(templates, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		if !d.Type().IsRegular() {
			return fmt.Errorf("template %s: expected a regular file, found %s", p, d.Type())
		}
		data, err := fs.ReadFile(templates, p)
		if err != nil {
			return err
		}
		f, err := files.NewFileFromSource(files.NewBytesSource(p, data))
		if err != nil {
			return fmt.Errorf("template %s: %w", p, err)
		}
		in = append(in, f)
		raw = append(raw, file{p, data})
		return nil
	})
	if err != nil {
		return yttcmd.Input{}, nil, fmt.Errorf("reading templates: %w", err)
	}
	if len(in) == 0 {
		return yttcmd.Input{}, nil, errors.New("reading templates: no files found")
	}
	key := sha256.New()
	slices.SortFunc(raw, func(a, b file) int { return strings.Compare(a.path, b.path) })
	for _, f := range raw {
		fmt.Fprintf(key, "%s\x00%d\x00", f.path, len(f.data))
		key.Write(f.data)
	}
	key.Write([]byte{0})
	// WalkDir visits a directory's entries in lexical order, but "a/b.yml"
	// sorts after "a-c.yml" as a path while WalkDir visits "a/" first, so
	// sort by full path exactly as ytt does. NewSortedFiles then records that
	// order: ytt panics when it sorts files that have none.
	slices.SortFunc(in, func(a, b *files.File) int {
		return strings.Compare(a.RelativePath(), b.RelativePath())
	})
	return yttcmd.Input{Files: files.NewSortedFiles(in)}, key, nil
}

// quietUI discards ytt's terminal output. ytt prints only debug traces and
// warnings through it (the rendered result comes back in the Output value),
// and a controller has no terminal to print them to.
type quietUI struct{}

func (quietUI) Printf(string, ...any)  {}
func (quietUI) Debugf(string, ...any)  {}
func (quietUI) Warnf(string, ...any)   {}
func (quietUI) DebugWriter() io.Writer { return io.Discard }
