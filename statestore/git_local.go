package statestore

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/go-git/go-billy/v5/osfs"
	git "github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/cache"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/storage/filesystem"
)

// localRepo is the writer's bare clone on disk: a cache of the remote that
// survives restarts. Its branch ref only ever holds commits the remote has
// (fetched, or pushed by us), so every object it references is known to the
// remote and need not be sent again.
//
// go-git's filesystem storage is not safe for concurrent use (it fills maps
// lazily on reads), so every method must be called with GitWriter.mu held.
type localRepo struct {
	path    string
	ref     plumbing.ReferenceName
	objects cache.Object
	st      *filesystem.Storage
	trees   *treeCache
	// commitTrees maps recent commits to their root trees.
	commitTrees map[plumbing.Hash]plumbing.Hash

	// Pushed batches are staged in memory and written to disk as one pack
	// now and then (flush), not one pack per batch: on disk, each pack
	// costs several file creations and renames, which on a slow disk take
	// longer than the push itself. Losing the staged objects in a crash is
	// harmless: they are on the remote, and the next start fetches them.
	staged      map[plumbing.Hash]*gitObject
	stagedOrder []*gitObject
	stagedBytes int
	stagedHead  plumbing.Hash
}

const (
	// flushStagedBytes and flushStagedObjects bound the memory held by
	// staged objects.
	flushStagedBytes   = 32 << 20
	flushStagedObjects = 100000
)

const (
	// treeCacheEntries bounds the decoded-tree cache (about 100 bytes an
	// entry). The hot set is the trees on the paths to folders being
	// written, far smaller.
	treeCacheEntries = 1 << 20
	// objectCacheBytes bounds go-git's cache of raw objects read from packs.
	objectCacheBytes = 32 << 20
)

// openLocal opens the bare clone at path, creating it when path does not
// exist or is an empty directory.
func openLocal(path string, ref plumbing.ReferenceName, remoteURL string) (*localRepo, error) {
	if path == "" {
		return nil, errors.New("local clone path is empty")
	}
	fresh, err := isEmptyOrMissing(path)
	if err != nil {
		return nil, err
	}
	if fresh {
		repo, err := git.PlainInitWithOptions(path, &git.PlainInitOptions{
			Bare:        true,
			InitOptions: git.InitOptions{DefaultBranch: ref},
		})
		if err != nil {
			return nil, fmt.Errorf("creating bare clone in %s: %w", path, err)
		}
		// For people inspecting the clone with the git CLI; credentials are
		// never written to disk.
		if _, err := repo.CreateRemote(&config.RemoteConfig{Name: "origin", URLs: []string{remoteURL}}); err != nil {
			return nil, fmt.Errorf("recording remote in %s: %w", path, err)
		}
	} else if _, err := os.Stat(filepath.Join(path, "objects")); err != nil {
		// Refuse to adopt (and later write into) a directory that is not a
		// bare repository: a misconfigured path must not damage anything.
		return nil, fmt.Errorf("%s is neither empty nor a bare Git repository", path)
	}
	if err := cleanPackDir(filepath.Join(path, "objects", "pack")); err != nil {
		return nil, err
	}
	if stale, _ := filepath.Glob(filepath.Join(path, fetchTempPrefix+"*")); len(stale) > 0 {
		for _, f := range stale {
			_ = os.Remove(f) // an interrupted fetch; it is fetched again
		}
	}
	r := &localRepo{
		path:        path,
		ref:         ref,
		objects:     cache.NewObjectLRU(objectCacheBytes),
		trees:       newTreeCache(treeCacheEntries),
		commitTrees: map[plumbing.Hash]plumbing.Hash{},
		staged:      map[plumbing.Hash]*gitObject{},
	}
	r.reopen()
	return r, nil
}

func (r *localRepo) reopen() {
	if r.st != nil {
		_ = r.st.Close()
	}
	r.st = filesystem.NewStorageWithOptions(osfs.New(r.path), r.objects, filesystem.Options{
		// Keep pack files open instead of reopening one per read.
		// (ExclusiveAccess would also cache directory listings, but with it
		// go-git's HasEncodedObject stops looking in packs.)
		KeepDescriptors: true,
	})
}

func (r *localRepo) close() error {
	err := r.flush()
	if cerr := r.st.Close(); err == nil {
		err = cerr
	}
	return err
}

// stage records a pushed commit and its objects in memory; head moves to it.
func (r *localRepo) stage(objects []*gitObject, head plumbing.Hash) error {
	for _, o := range objects {
		if _, ok := r.staged[o.hash]; !ok {
			r.staged[o.hash] = o
			r.stagedOrder = append(r.stagedOrder, o)
			r.stagedBytes += len(o.data) + len(o.entry)
		}
	}
	r.stagedHead = head
	if r.stagedBytes > flushStagedBytes || len(r.stagedOrder) > flushStagedObjects {
		return r.flush()
	}
	return nil
}

// flush writes the staged objects as one pack, then the branch ref. The
// objects are already compressed, and the pack's index is written from
// what is known about them, so this costs little more than the disk write.
func (r *localRepo) flush() error {
	if r.stagedHead.IsZero() {
		return nil
	}
	objects := r.stagedOrder
	err := r.writePack(len(objects), func(pw *packWriter) error {
		for _, o := range objects {
			if err := pw.addObject(o); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	// go-git loaded the pack indexes once; make it read them again (lazily,
	// on the next lookup) so that it finds the new pack.
	r.st.Reindex()
	head := r.stagedHead
	clear(r.staged)
	r.stagedOrder, r.stagedBytes, r.stagedHead = nil, 0, plumbing.ZeroHash
	return r.writeRef(head)
}

func isEmptyOrMissing(path string) (bool, error) {
	entries, err := os.ReadDir(path)
	if errors.Is(err, os.ErrNotExist) {
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("reading local clone directory: %w", err)
	}
	return len(entries) == 0, nil
}

// cleanPackDir removes what an interrupted pack write leaves behind: go-git
// writes the .idx before renaming the .pack into place, and an index without
// its pack makes every later lookup fail.
func cleanPackDir(dir string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading %s: %w", dir, err)
	}
	have := map[string]bool{}
	for _, e := range entries {
		have[e.Name()] = true
	}
	for _, e := range entries {
		name := e.Name()
		stale := strings.HasPrefix(name, "tmp_")
		if base, ok := strings.CutSuffix(name, ".idx"); ok && !have[base+".pack"] {
			stale = true
		}
		if stale {
			if err := os.Remove(filepath.Join(dir, name)); err != nil {
				return fmt.Errorf("removing interrupted pack file: %w", err)
			}
		}
	}
	return nil
}

// head returns the branch's commit in the clone, ZeroHash when there is none.
func (r *localRepo) head() (plumbing.Hash, error) {
	if !r.stagedHead.IsZero() {
		return r.stagedHead, nil
	}
	ref, err := r.st.Reference(r.ref)
	if errors.Is(err, plumbing.ErrReferenceNotFound) {
		return plumbing.ZeroHash, nil
	}
	if err != nil {
		return plumbing.ZeroHash, fmt.Errorf("reading %s: %w", r.ref, err)
	}
	return ref.Hash(), nil
}

// setHead moves the branch (after a fetch). Staged objects are written
// first, so that the ref on disk never points past what is stored.
func (r *localRepo) setHead(h plumbing.Hash) error {
	if err := r.flush(); err != nil {
		return err
	}
	return r.writeRef(h)
}

func (r *localRepo) writeRef(h plumbing.Hash) error {
	if h.IsZero() {
		err := r.st.RemoveReference(r.ref)
		if err != nil && !errors.Is(err, plumbing.ErrReferenceNotFound) {
			return fmt.Errorf("removing %s: %w", r.ref, err)
		}
		return nil
	}
	if err := r.st.SetReference(plumbing.NewHashReference(r.ref, h)); err != nil {
		return fmt.Errorf("updating %s: %w", r.ref, err)
	}
	return nil
}

func (r *localRepo) has(h plumbing.Hash) bool {
	if _, ok := r.staged[h]; ok {
		return true
	}
	return r.st.HasEncodedObject(h) == nil
}

func (r *localRepo) object(t plumbing.ObjectType, h plumbing.Hash) (plumbing.EncodedObject, error) {
	if o, ok := r.staged[h]; ok {
		if t != plumbing.AnyObject && o.typ != t {
			return nil, plumbing.ErrObjectNotFound
		}
		return o.encoded(), nil
	}
	return r.st.EncodedObject(t, h)
}

// readObject returns the content of an object; the caller may keep and
// modify it.
func (r *localRepo) readObject(t plumbing.ObjectType, h plumbing.Hash) ([]byte, error) {
	if o, ok := r.staged[h]; ok && o.typ == t {
		return bytes.Clone(o.data), nil
	}
	o, err := r.object(t, h)
	if err != nil {
		return nil, fmt.Errorf("reading %s %s: %w", t, h, err)
	}
	rd, err := o.Reader()
	if err != nil {
		return nil, fmt.Errorf("reading %s %s: %w", t, h, err)
	}
	defer rd.Close()
	buf := bytes.NewBuffer(make([]byte, 0, o.Size()))
	if _, err := buf.ReadFrom(rd); err != nil {
		return nil, fmt.Errorf("reading %s %s: %w", t, h, err)
	}
	return buf.Bytes(), nil
}

func (r *localRepo) tree(h plumbing.Hash) ([]treeEntry, error) {
	if entries, ok := r.trees.get(h); ok {
		return entries, nil
	}
	data, err := r.readObject(plumbing.TreeObject, h)
	if err != nil {
		return nil, err
	}
	entries, err := parseTree(data)
	if err != nil {
		return nil, fmt.Errorf("tree %s: %w", h, err)
	}
	r.trees.add(h, entries)
	return entries, nil
}

// commitTree returns the root tree of commit h; ZeroHash for ZeroHash.
func (r *localRepo) commitTree(h plumbing.Hash) (plumbing.Hash, error) {
	if h.IsZero() {
		return plumbing.ZeroHash, nil
	}
	if t, ok := r.commitTrees[h]; ok {
		return t, nil
	}
	c, err := r.commit(h)
	if err != nil {
		return plumbing.ZeroHash, err
	}
	r.rememberCommit(h, c.TreeHash)
	return c.TreeHash, nil
}

func (r *localRepo) rememberCommit(h, tree plumbing.Hash) {
	if len(r.commitTrees) > 1024 {
		clear(r.commitTrees)
	}
	r.commitTrees[h] = tree
}

func (r *localRepo) commit(h plumbing.Hash) (*object.Commit, error) {
	o, err := r.object(plumbing.CommitObject, h)
	if err != nil {
		return nil, fmt.Errorf("reading commit %s: %w", h, err)
	}
	c := &object.Commit{}
	if err := c.Decode(o); err != nil {
		return nil, fmt.Errorf("decoding commit %s: %w", h, err)
	}
	return c, nil
}

// rootEntries returns the root tree entries of commit h (none for ZeroHash).
func (r *localRepo) rootEntries(h plumbing.Hash) ([]treeEntry, error) {
	t, err := r.commitTree(h)
	if err != nil || t.IsZero() {
		return nil, err
	}
	return r.tree(t)
}

// addPack stores a pack (fetched, or one we pushed) in the clone.
func (r *localRepo) addPack(rd io.Reader) error {
	w, err := r.st.PackfileWriter()
	if err != nil {
		return fmt.Errorf("storing pack: %w", err)
	}
	if _, err := io.Copy(w, rd); err != nil {
		_ = w.Close()
		return fmt.Errorf("storing pack: %w", err)
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("storing pack: %w", err)
	}
	return nil
}

// isAncestor reports whether anc is reachable from h within limit commits.
// Used after an ambiguous push failure, to learn whether the push landed
// after all and others have built on it.
func (r *localRepo) isAncestor(anc, h plumbing.Hash, limit int) bool {
	queue := []plumbing.Hash{h}
	seen := map[plumbing.Hash]bool{}
	for len(queue) > 0 && len(seen) < limit {
		c := queue[0]
		queue = queue[1:]
		if c == anc {
			return true
		}
		if seen[c] {
			continue
		}
		seen[c] = true
		commit, err := r.commit(c)
		if err != nil {
			return false
		}
		queue = append(queue, commit.ParentHashes...)
	}
	return false
}

// readDir returns the files under dir at commit h.
func (r *localRepo) readDir(h plumbing.Hash, dir string) (map[string][]byte, error) {
	out := map[string][]byte{}
	entries, err := r.rootEntries(h)
	if err != nil {
		return nil, err
	}
	for _, seg := range strings.Split(dir, "/") {
		i, ok := findEntry(entries, seg)
		if !ok {
			return out, nil
		}
		if !entries[i].isDir() {
			return nil, fmt.Errorf("%s: %q is a file, not a directory", dir, seg)
		}
		if entries, err = r.tree(entries[i].hash); err != nil {
			return nil, err
		}
	}
	var walk func(prefix string, entries []treeEntry) error
	walk = func(prefix string, entries []treeEntry) error {
		for _, e := range entries {
			switch {
			case e.isDir():
				sub, err := r.tree(e.hash)
				if err != nil {
					return err
				}
				if err := walk(prefix+e.name+"/", sub); err != nil {
					return err
				}
			case e.mode == filemode.Regular || e.mode == filemode.Executable || e.mode == filemode.Deprecated:
				data, err := r.readObject(plumbing.BlobObject, e.hash)
				if err != nil {
					return err
				}
				out[prefix+e.name] = data
			}
			// Submodules and symlinks are not output; skip them.
		}
		return nil
	}
	if err := walk("", entries); err != nil {
		return nil, err
	}
	return out, nil
}
