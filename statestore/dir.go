package statestore

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"sync"
)

// DirWriter is a state store in a plain directory, for local use (the CLI,
// `promised sync` from a folder) and tests. Each folder is replaced
// atomically: the new content is written to a staging directory on the same
// file system and renamed into place, so a reader sees the old folder or the
// new one, never a mix. A Write with several changes is not atomic as a
// whole, and nothing is fsynced: unlike GitWriter, it is not the durable copy.
type DirWriter struct {
	root    string
	probeID string

	mu     sync.Mutex
	closed bool
}

var _ Writer = (*DirWriter)(nil)

// NewDir returns a DirWriter rooted at root, creating the directory.
func NewDir(root string) (*DirWriter, error) {
	if root == "" {
		return nil, errors.New("state store directory is empty")
	}
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("state store directory %s: %w", root, err)
	}
	if err := os.MkdirAll(filepath.Join(abs, reservedDir, "tmp"), 0o755); err != nil {
		return nil, fmt.Errorf("creating state store directory: %w", err)
	}
	return &DirWriter{root: abs, probeID: "default"}, nil
}

// Root is the directory the store lives in.
func (d *DirWriter) Root() string { return d.root }

// Write implements Writer. Result.Commit is a SHA-256 digest of the
// changes' content (the same content yields the same digest).
func (d *DirWriter) Write(ctx context.Context, changes ...Change) (Result, error) {
	return d.write(ctx, false, changes)
}

func (d *DirWriter) write(ctx context.Context, allowReserved bool, changes []Change) (Result, error) {
	if err := validateChanges(changes, allowReserved); err != nil {
		return Result{}, err
	}
	if err := ctx.Err(); err != nil {
		return Result{}, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return Result{}, ErrClosed
	}
	changed := false
	for _, c := range changes {
		ch, err := d.apply(c)
		if err != nil {
			return Result{}, err
		}
		changed = changed || ch
	}
	return Result{Commit: contentDigest(changes), Changed: changed}, nil
}

func (d *DirWriter) apply(c Change) (bool, error) {
	target := filepath.Join(d.root, filepath.FromSlash(c.Dir))
	current, err := readTree(target)
	if err != nil {
		return false, err
	}
	files := c.Files
	if c.Delete {
		files = nil
	}
	if sameFiles(current, files) {
		return false, nil
	}
	tmpRoot := filepath.Join(d.root, reservedDir, "tmp")
	var staged string
	if len(files) > 0 {
		staged, err = os.MkdirTemp(tmpRoot, "new-")
		if err != nil {
			return false, fmt.Errorf("staging %s: %w", c.Dir, err)
		}
		for p, content := range files {
			full := filepath.Join(staged, filepath.FromSlash(p))
			if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
				_ = os.RemoveAll(staged)
				return false, fmt.Errorf("staging %s: %w", c.Dir, err)
			}
			if err := os.WriteFile(full, content, 0o644); err != nil {
				_ = os.RemoveAll(staged)
				return false, fmt.Errorf("staging %s: %w", c.Dir, err)
			}
		}
	}
	// Move the old folder aside (one rename), then the new one in.
	var trash string
	if _, err := os.Lstat(target); err == nil {
		if trash, err = os.MkdirTemp(tmpRoot, "old-"); err != nil {
			_ = os.RemoveAll(staged)
			return false, fmt.Errorf("replacing %s: %w", c.Dir, err)
		}
		if err := os.Rename(target, filepath.Join(trash, "old")); err != nil {
			_ = os.RemoveAll(staged)
			_ = os.RemoveAll(trash)
			return false, fmt.Errorf("replacing %s: %w", c.Dir, err)
		}
	}
	if staged != "" {
		if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
			_ = os.RemoveAll(staged)
			return false, fmt.Errorf("replacing %s: %w", c.Dir, err)
		}
		if err := os.Rename(staged, target); err != nil {
			_ = os.RemoveAll(staged)
			return false, fmt.Errorf("replacing %s: %w", c.Dir, err)
		}
	} else {
		d.removeEmptyParents(filepath.Dir(target))
	}
	if trash != "" {
		if err := os.RemoveAll(trash); err != nil {
			return false, fmt.Errorf("removing old %s: %w", c.Dir, err)
		}
	}
	return true, nil
}

// removeEmptyParents removes directories left empty by a delete, up to the
// root, so that the directory store looks like the Git one (where empty
// directories cannot exist).
func (d *DirWriter) removeEmptyParents(dir string) {
	for dir != d.root && len(dir) > len(d.root) {
		if err := os.Remove(dir); err != nil { // fails when not empty
			return
		}
		dir = filepath.Dir(dir)
	}
}

// Read implements Writer.
func (d *DirWriter) Read(ctx context.Context, dir string) (map[string][]byte, error) {
	if err := validateRelPath("dir", dir); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return readTree(filepath.Join(d.root, filepath.FromSlash(dir)))
}

// Probe implements Writer: it writes a fixed marker and reads it back.
func (d *DirWriter) Probe(ctx context.Context) error {
	dir := reservedDir + "/probe/" + d.probeID
	marker := probeMarker(d.probeID)
	if _, err := d.write(ctx, true, []Change{{Dir: dir, Files: map[string][]byte{probeFile: marker}}}); err != nil {
		return fmt.Errorf("probe: writing marker %s: %w", dir, err)
	}
	return checkMarker(ctx, d, dir, marker)
}

// Close implements Writer.
func (d *DirWriter) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.closed = true
	return nil
}

// readTree returns the regular files under dir; none when it is missing.
func readTree(dir string) (map[string][]byte, error) {
	out := map[string][]byte{}
	info, err := os.Lstat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return out, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", dir, err)
	}
	if !info.IsDir() {
		return nil, fmt.Errorf("reading %s: not a directory", dir)
	}
	err = filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !e.Type().IsRegular() {
			return nil
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		out[filepath.ToSlash(rel)] = data
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", dir, err)
	}
	return out, nil
}

func sameFiles(a, b map[string][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for p, c := range a {
		if o, ok := b[p]; !ok || !bytes.Equal(c, o) {
			return false
		}
	}
	return true
}

func contentDigest(changes []Change) string {
	h := sha256.New()
	for _, c := range changes {
		fmt.Fprintf(h, "dir %q delete=%t\n", c.Dir, c.Delete)
		paths := make([]string, 0, len(c.Files))
		for p := range c.Files {
			paths = append(paths, p)
		}
		sort.Strings(paths)
		for _, p := range paths {
			fmt.Fprintf(h, "file %q %d\n", p, len(c.Files[p]))
			h.Write(c.Files[p])
		}
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil))
}
