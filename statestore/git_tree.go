package statestore

import (
	"bytes"
	"container/list"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
)

// This file edits Git trees at the object level. A batch starts from the
// previous commit's root tree and replaces only the subtrees of the folders
// it changes: every other entry keeps its hash and is never read. The cost of
// a commit is therefore the depth of the changed paths times the width of
// the directories on them, independent of how many files the repository
// holds. No worktree, no index, no full tree scan.

// treeEntry is one entry of a Git tree object.
type treeEntry struct {
	name string
	mode filemode.FileMode
	hash plumbing.Hash
}

func (e treeEntry) isDir() bool { return e.mode == filemode.Dir }

// sortKey is the name Git sorts a tree entry by: directories compare as if
// their name ended in "/". Getting this wrong produces trees that git fsck
// rejects and that other clients see as different from ours.
func (e treeEntry) sortKey() string {
	if e.isDir() {
		return e.name + "/"
	}
	return e.name
}

// findEntry returns the index of the entry called name in sorted entries.
func findEntry(entries []treeEntry, name string) (int, bool) {
	// The entry is either a file (key name) or a directory (key name+"/");
	// a valid tree never holds both.
	for _, key := range [2]string{name, name + "/"} {
		i := sort.Search(len(entries), func(i int) bool { return entries[i].sortKey() >= key })
		if i < len(entries) && entries[i].name == name {
			return i, true
		}
	}
	return -1, false
}

// encodeTree serialises sorted entries as a Git tree object. Written by hand
// rather than with object.Tree.Encode because that formats every entry with
// fmt, which dominates the cost of rewriting a directory of thousands of
// requests.
func encodeTree(entries []treeEntry) *gitObject {
	size := 0
	for _, e := range entries {
		size += 8 + len(e.name) + len(e.hash)
	}
	buf := make([]byte, 0, size)
	for _, e := range entries {
		buf = strconv.AppendUint(buf, uint64(e.mode), 8)
		buf = append(buf, ' ')
		buf = append(buf, e.name...)
		buf = append(buf, 0)
		buf = append(buf, e.hash[:]...)
	}
	return newObject(plumbing.TreeObject, buf)
}

// parseTree decodes a Git tree object's content.
func parseTree(data []byte) ([]treeEntry, error) {
	var entries []treeEntry
	for len(data) > 0 {
		sp := bytes.IndexByte(data, ' ')
		if sp <= 0 {
			return nil, errors.New("malformed tree entry: no mode")
		}
		mode, err := strconv.ParseUint(string(data[:sp]), 8, 32)
		if err != nil {
			return nil, fmt.Errorf("malformed tree entry mode %q: %w", data[:sp], err)
		}
		data = data[sp+1:]
		nul := bytes.IndexByte(data, 0)
		if nul < 0 || len(data) < nul+1+len(plumbing.ZeroHash) {
			return nil, errors.New("malformed tree entry: truncated name or hash")
		}
		e := treeEntry{name: string(data[:nul]), mode: filemode.FileMode(mode)}
		copy(e.hash[:], data[nul+1:])
		entries = append(entries, e)
		data = data[nul+1+len(e.hash):]
	}
	return entries, nil
}

// builtTree is a folder's new content as Git objects, built from a Change's
// files before the change is queued (so hashing runs in the callers'
// goroutines, in parallel, not in the single writer goroutine; compression
// waits until the writer knows the folder changed).
type builtTree struct {
	hash    plumbing.Hash
	objects []*gitObject // the blobs and trees under hash
}

// buildTree turns files (paths relative to the folder) into blobs and trees.
// It returns nil for no files: Git has no empty directories.
func buildTree(files map[string][]byte) *builtTree {
	if len(files) == 0 {
		return nil
	}
	type dir struct {
		files map[string][]byte
		dirs  map[string]*dir
	}
	newDir := func() *dir { return &dir{files: map[string][]byte{}, dirs: map[string]*dir{}} }
	root := newDir()
	for p, content := range files {
		d := root
		segs := strings.Split(p, "/")
		for _, s := range segs[:len(segs)-1] {
			sub, ok := d.dirs[s]
			if !ok {
				sub = newDir()
				d.dirs[s] = sub
			}
			d = sub
		}
		d.files[segs[len(segs)-1]] = content
	}
	b := &builtTree{}
	seen := map[plumbing.Hash]bool{}
	add := func(o *gitObject) plumbing.Hash {
		h := o.hash
		if !seen[h] {
			seen[h] = true
			b.objects = append(b.objects, o)
		}
		return h
	}
	var encode func(d *dir) plumbing.Hash
	encode = func(d *dir) plumbing.Hash {
		entries := make([]treeEntry, 0, len(d.files)+len(d.dirs))
		for name, content := range d.files {
			h := add(newObject(plumbing.BlobObject, bytes.Clone(content))) // the caller keeps its slice
			entries = append(entries, treeEntry{name: name, mode: filemode.Regular, hash: h})
		}
		for name, sub := range d.dirs {
			entries = append(entries, treeEntry{name: name, mode: filemode.Dir, hash: encode(sub)})
		}
		sortEntries(entries)
		return add(encodeTree(entries))
	}
	b.hash = encode(root)
	return b
}

func sortEntries(entries []treeEntry) {
	sort.Slice(entries, func(i, j int) bool { return entries[i].sortKey() < entries[j].sortKey() })
}

// errNotADirectory is returned when a path needs a directory where the tree
// holds a file.
var errNotADirectory = errors.New("is a file, not a directory")

// treeNode is a directory opened for editing.
type treeNode struct {
	entries []treeEntry // sorted; shared with the tree cache until owned
	owned   bool
	// children are subdirectories opened below this one. While a child is
	// dirty, its entry in entries is stale; finalize brings it up to date.
	children map[string]*treeNode
	// placed are subtrees put in place by set, kept so that their objects
	// go into the pack.
	placed map[string]*builtTree
	dirty  bool
}

func (n *treeNode) own() {
	if !n.owned {
		n.entries = append([]treeEntry(nil), n.entries...)
		n.owned = true
	}
}

func (n *treeNode) setEntry(e treeEntry) {
	n.own()
	if i, ok := findEntry(n.entries, e.name); ok {
		if n.entries[i].mode == e.mode {
			n.entries[i] = e
			return
		}
		n.entries = append(n.entries[:i], n.entries[i+1:]...)
	}
	key := e.sortKey()
	i := sort.Search(len(n.entries), func(i int) bool { return n.entries[i].sortKey() >= key })
	n.entries = append(n.entries, treeEntry{})
	copy(n.entries[i+1:], n.entries[i:])
	n.entries[i] = e
}

func (n *treeNode) removeEntry(name string) bool {
	i, ok := findEntry(n.entries, name)
	if !ok {
		return false
	}
	n.own()
	n.entries = append(n.entries[:i], n.entries[i+1:]...)
	return true
}

// treeEditor applies folder replacements to a root tree.
type treeEditor struct {
	load func(plumbing.Hash) ([]treeEntry, error) // trees already stored
	root *treeNode
	// overlay holds the objects this batch created, so that a later change
	// in the same batch can look inside a folder placed by an earlier one.
	overlay map[plumbing.Hash]*gitObject
	// created are the trees written by finalize, and their entries.
	created        []*gitObject
	createdEntries map[plumbing.Hash][]treeEntry
}

func newTreeEditor(rootEntries []treeEntry, load func(plumbing.Hash) ([]treeEntry, error)) *treeEditor {
	return &treeEditor{
		load:           load,
		root:           &treeNode{entries: rootEntries},
		overlay:        map[plumbing.Hash]*gitObject{},
		createdEntries: map[plumbing.Hash][]treeEntry{},
	}
}

func (e *treeEditor) loadTree(h plumbing.Hash) ([]treeEntry, error) {
	if o, ok := e.overlay[h]; ok {
		return parseTree(o.data)
	}
	return e.load(h)
}

// child opens subdirectory name of n. create allows a directory that does
// not exist yet (for writing); without it a missing directory yields nil.
func (e *treeEditor) child(n *treeNode, name string, create bool) (*treeNode, error) {
	if c, ok := n.children[name]; ok {
		return c, nil
	}
	var c *treeNode
	i, ok := findEntry(n.entries, name)
	switch {
	case !ok && !create:
		return nil, nil
	case !ok:
		c = &treeNode{owned: true}
	case !n.entries[i].isDir():
		return nil, fmt.Errorf("%q %w", name, errNotADirectory)
	default:
		entries, err := e.loadTree(n.entries[i].hash)
		if err != nil {
			return nil, fmt.Errorf("reading tree %q: %w", name, err)
		}
		c = &treeNode{entries: entries}
	}
	if n.children == nil {
		n.children = map[string]*treeNode{}
	}
	n.children[name] = c
	return c, nil
}

// lookup returns the current hash of the folder at path (after the edits
// made so far), or ZeroHash when there is none.
func (e *treeEditor) lookup(path []string) (plumbing.Hash, error) {
	n := e.root
	for _, seg := range path[:len(path)-1] {
		c, err := e.child(n, seg, false)
		if err != nil {
			if errors.Is(err, errNotADirectory) {
				return plumbing.ZeroHash, nil
			}
			return plumbing.ZeroHash, err
		}
		if c == nil {
			return plumbing.ZeroHash, nil
		}
		n = c
	}
	name := path[len(path)-1]
	if c, ok := n.children[name]; ok && c.dirty {
		// Edits were made inside this folder; hash them to compare.
		if err := e.finalizeChild(n, name, c); err != nil {
			return plumbing.ZeroHash, err
		}
	}
	if i, ok := findEntry(n.entries, name); ok && n.entries[i].isDir() {
		return n.entries[i].hash, nil
	}
	return plumbing.ZeroHash, nil
}

// check reports whether set(path, …) would fail: a file where a parent
// directory is needed. It changes nothing visible.
func (e *treeEditor) check(path []string) error {
	n := e.root
	for i, seg := range path[:len(path)-1] {
		c, err := e.child(n, seg, false)
		if err != nil {
			if errors.Is(err, errNotADirectory) {
				return fmt.Errorf("cannot write %q: %q %w", strings.Join(path, "/"), strings.Join(path[:i+1], "/"), errNotADirectory)
			}
			return err
		}
		if c == nil {
			return nil
		}
		n = c
	}
	return nil
}

// set replaces the folder at path with t, or removes it when t is nil.
func (e *treeEditor) set(path []string, t *builtTree) error {
	chain := []*treeNode{e.root}
	n := e.root
	for _, seg := range path[:len(path)-1] {
		c, err := e.child(n, seg, t != nil)
		if err != nil {
			return err
		}
		if c == nil { // removing something whose parent does not exist
			return nil
		}
		chain = append(chain, c)
		n = c
	}
	name := path[len(path)-1]
	_, hadChild := n.children[name]
	delete(n.children, name)
	delete(n.placed, name)
	if t == nil {
		if !n.removeEntry(name) && !hadChild {
			return nil
		}
	} else {
		n.setEntry(treeEntry{name: name, mode: filemode.Dir, hash: t.hash})
		if n.placed == nil {
			n.placed = map[string]*builtTree{}
		}
		n.placed[name] = t
		for _, o := range t.objects {
			e.overlay[o.hash] = o
		}
	}
	for _, c := range chain {
		c.dirty = true
	}
	return nil
}

func (e *treeEditor) finalizeChild(parent *treeNode, name string, c *treeNode) error {
	h, err := e.finalize(c)
	if err != nil {
		return err
	}
	if h.IsZero() {
		parent.removeEntry(name)
		delete(parent.children, name)
	} else {
		parent.setEntry(treeEntry{name: name, mode: filemode.Dir, hash: h})
	}
	return nil
}

// finalize writes the trees of n's dirty subdirectories and of n itself and
// returns n's hash; ZeroHash means n became empty and must disappear.
func (e *treeEditor) finalize(n *treeNode) (plumbing.Hash, error) {
	names := make([]string, 0, len(n.children))
	for name, c := range n.children {
		if c.dirty {
			names = append(names, name)
		}
	}
	sort.Strings(names) // deterministic object order in the pack
	for _, name := range names {
		if err := e.finalizeChild(n, name, n.children[name]); err != nil {
			return plumbing.ZeroHash, err
		}
	}
	n.dirty = false
	if len(n.entries) == 0 {
		return plumbing.ZeroHash, nil
	}
	o := encodeTree(n.entries)
	e.created = append(e.created, o)
	e.overlay[o.hash] = o
	e.createdEntries[o.hash] = n.entries
	n.owned = false // the slice now belongs to createdEntries; copy on the next edit
	return o.hash, nil
}

// rootHash finalizes the whole edit and returns the new root tree. An empty
// root is a real (empty) tree object, unlike an empty subdirectory.
func (e *treeEditor) rootHash() (plumbing.Hash, error) {
	h, err := e.finalize(e.root)
	if err != nil || !h.IsZero() {
		return h, err
	}
	o := encodeTree(nil)
	e.created = append(e.created, o)
	e.overlay[o.hash] = o
	return o.hash, nil
}

// objects returns every object the new root may need that this batch
// created. It may include a few that ended up unreferenced (a folder written
// and then replaced in the same batch); a pack with extra objects is valid.
func (e *treeEditor) objects() []*gitObject {
	seen := map[plumbing.Hash]bool{}
	var out []*gitObject
	add := func(o *gitObject) {
		if h := o.hash; !seen[h] {
			seen[h] = true
			out = append(out, o)
		}
	}
	var walk func(n *treeNode)
	walk = func(n *treeNode) {
		for _, t := range n.placed {
			for _, o := range t.objects {
				add(o)
			}
		}
		for _, c := range n.children {
			walk(c)
		}
	}
	walk(e.root)
	for _, o := range e.created {
		add(o)
	}
	return out
}

// treeCache keeps decoded trees by hash (trees are immutable), bounded by
// the total number of entries, least recently used first out. The trees on
// the paths to the folders being written are read on every batch.
type treeCache struct {
	max, size int
	ll        *list.List
	items     map[plumbing.Hash]*list.Element
}

type treeCacheItem struct {
	hash    plumbing.Hash
	entries []treeEntry
}

func newTreeCache(maxEntries int) *treeCache {
	return &treeCache{max: maxEntries, ll: list.New(), items: map[plumbing.Hash]*list.Element{}}
}

func (c *treeCache) get(h plumbing.Hash) ([]treeEntry, bool) {
	el, ok := c.items[h]
	if !ok {
		return nil, false
	}
	c.ll.MoveToFront(el)
	return el.Value.(*treeCacheItem).entries, true
}

func (c *treeCache) add(h plumbing.Hash, entries []treeEntry) {
	if _, ok := c.items[h]; ok {
		return
	}
	w := len(entries) + 1
	if w > c.max {
		return
	}
	c.items[h] = c.ll.PushFront(&treeCacheItem{hash: h, entries: entries})
	c.size += w
	for c.size > c.max {
		el := c.ll.Back()
		it := el.Value.(*treeCacheItem)
		c.ll.Remove(el)
		delete(c.items, it.hash)
		c.size -= len(it.entries) + 1
	}
}
