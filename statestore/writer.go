// Package statestore writes rendered output to the state store, the durable
// copy of desired state that destinations pull from, and reads it back.
//
// Two implementations share the Writer interface: GitWriter (a Git
// repository, written with go-git, one commit per batch of concurrent
// writes) and DirWriter (plain files in a directory, for local use and
// tests). Layout functions in this package decide where in the store a
// promise's or a request's output goes.
package statestore

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
)

// Change replaces everything under Dir with Files, or removes Dir when
// Delete is set.
//
// Dir is a slash-separated path relative to the store's root (see
// ResourceDir and DependenciesDir). Files maps slash-separated paths relative
// to Dir to file contents; files under Dir that are not in Files disappear.
// An empty Files without Delete also removes Dir, because a Git tree cannot
// hold an empty directory and the two stores must agree.
type Change struct {
	Dir    string
	Files  map[string][]byte
	Delete bool
}

// Result reports what a Write did.
type Result struct {
	// Commit identifies the state that carries the write: for GitWriter the
	// commit hash, for DirWriter a digest of the written content. When
	// nothing changed it is the current head (which already holds the
	// content); it is empty only for a Git branch that does not exist yet
	// and a write that removed nothing.
	Commit string
	// Changed is false when every change equalled what was already there,
	// in which case no commit was made for this caller.
	Changed bool
}

// Writer is the state store as the controller and the CLI use it.
// Implementations are safe for concurrent use.
type Writer interface {
	// Write applies changes and returns once they are durable (for Git:
	// pushed). All changes of one call land in one commit, together with
	// the changes of other concurrent callers. Conflicting changes to the
	// same Dir within one commit resolve in queue order: the last wins.
	Write(ctx context.Context, changes ...Change) (Result, error)
	// Read returns the files under dir, keyed by path relative to dir, from
	// the local copy without a round trip to the remote. A dir that does not
	// exist yields an empty map and no error.
	Read(ctx context.Context, dir string) (map[string][]byte, error)
	// Probe checks that the store is reachable and writable with the
	// configured credentials by writing and reading back a marker under a
	// reserved path. Repeated probes do not create commits.
	Probe(ctx context.Context) error
	// Close stops accepting writes, waits for queued writes to finish (be
	// pushed or fail), and releases resources.
	Close() error
}

// ErrClosed is returned by Write and Probe after Close.
var ErrClosed = errors.New("state store writer is closed")

// reservedDir is the store's own area (probe markers). Write refuses it so
// that output can never overwrite or be mistaken for a marker.
const reservedDir = ".promised"

// validateChanges checks every change before anything is queued, so that a
// bad change fails its caller alone and never a whole batch.
func validateChanges(changes []Change, allowReserved bool) error {
	if len(changes) == 0 {
		return errors.New("no changes given")
	}
	for i, c := range changes {
		if err := validateChange(c, allowReserved); err != nil {
			return fmt.Errorf("change %d: %w", i, err)
		}
	}
	return nil
}

func validateChange(c Change, allowReserved bool) error {
	if err := validateRelPath("dir", c.Dir); err != nil {
		return err
	}
	if !allowReserved && (c.Dir == reservedDir || strings.HasPrefix(c.Dir, reservedDir+"/")) {
		return fmt.Errorf("dir %q: %s/ is reserved for the store itself", c.Dir, reservedDir)
	}
	if c.Delete && len(c.Files) > 0 {
		return fmt.Errorf("dir %q: Delete is set and Files is not empty; choose one", c.Dir)
	}
	paths := make([]string, 0, len(c.Files))
	for p := range c.Files {
		if err := validateRelPath("file", p); err != nil {
			return fmt.Errorf("dir %q: %w", c.Dir, err)
		}
		paths = append(paths, p)
	}
	// A path that is both a file and a directory ("a" and "a/b") cannot be
	// represented in a tree; sorting puts "a" right before "a/…".
	sort.Strings(paths)
	for i := 1; i < len(paths); i++ {
		if strings.HasPrefix(paths[i], paths[i-1]+"/") {
			return fmt.Errorf("dir %q: file %q is also a directory of %q", c.Dir, paths[i-1], paths[i])
		}
	}
	return nil
}

// validateRelPath accepts a clean, relative, slash-separated path. It
// refuses what could escape the store or corrupt a Git tree: empty or
// absolute paths, "." and ".." segments, empty segments, backslashes, NUL,
// and ".git" segments (Git refuses to check those out).
func validateRelPath(field, p string) error {
	if p == "" {
		return fmt.Errorf("%s path is empty", field)
	}
	if strings.HasPrefix(p, "/") {
		return fmt.Errorf("%s path %q is absolute; it must be relative to the store", field, p)
	}
	if strings.ContainsAny(p, "\\\x00") {
		return fmt.Errorf("%s path %q contains a backslash or NUL", field, p)
	}
	for _, seg := range strings.Split(p, "/") {
		switch {
		case seg == "":
			return fmt.Errorf("%s path %q has an empty segment", field, p)
		case seg == "." || seg == "..":
			return fmt.Errorf("%s path %q has a %q segment", field, p, seg)
		case strings.EqualFold(seg, ".git"):
			return fmt.Errorf("%s path %q has a .git segment", field, p)
		}
	}
	return nil
}

func splitPath(p string) []string { return strings.Split(p, "/") }

// isUnder reports whether path p is dir or inside it.
func isUnder(p, dir string) bool {
	return p == dir || strings.HasPrefix(p, dir+"/")
}
