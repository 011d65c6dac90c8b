package statestore

import (
	"bufio"
	"bytes"
	"crypto/sha1"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/format/idxfile"
	"github.com/klauspost/compress/zlib"
)

// gitObject is a Git object this writer made: its content, its hash and
// its pack entry. The entry is compressed once, and the same bytes go into
// the pack pushed to the remote and into the clone's own pack.
//
// Compression is the largest CPU cost of a batch. It is done only for the
// objects a batch pushes (a write that changes nothing costs hashing, not
// compressing), while the pack is streamed to the remote, on all CPUs
// (streamPack). (Compressing in the callers' goroutines instead, before or
// after queueing, was not faster in the bulk benchmark on 2 CPUs, and
// doubled the CPU cost of unchanged writes.)
type gitObject struct {
	typ  plumbing.ObjectType
	hash plumbing.Hash
	data []byte // the content; never modified

	once  sync.Once
	entry []byte // pack entry: type and size header, then the zlib stream; read only after compress
	crc   uint32 // CRC-32 of entry, as pack indexes record it
}

// newObject hashes content, which the object keeps (the caller must not
// modify it afterwards).
func newObject(t plumbing.ObjectType, content []byte) *gitObject {
	return &gitObject{typ: t, data: content, hash: plumbing.ComputeHash(t, content)}
}

// compress makes the pack entry, unless done already. It is safe for
// concurrent use: it returns once the entry is there, whoever made it.
func (o *gitObject) compress() {
	o.once.Do(func() {
		o.entry = packEntry(o.typ, o.data)
		o.crc = crc32.ChecksumIEEE(o.entry)
	})
}

// encoded returns the object as go-git's readers take it: a copy, so that
// nothing can modify the staged content.
func (o *gitObject) encoded() plumbing.EncodedObject {
	m := &plumbing.MemoryObject{}
	m.SetType(o.typ)
	_, _ = m.Write(o.data) // MemoryObject.Write cannot fail
	return m
}

// zlibWriters are reused: a compressor's state is far larger than the
// objects it compresses. (klauspost/compress's zlib: on these small objects
// it is about three times as fast as the standard library's.)
var zlibWriters = sync.Pool{New: func() any {
	w, _ := zlib.NewWriterLevel(io.Discard, zlib.BestSpeed) // valid level: cannot fail
	return w
}}

var entryBuffers = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// packEntry returns the pack entry of an object: a header with the type
// (bits 4-6 of the first byte) and the size (a little-endian base-128
// varint starting with 4 bits in the first byte), then the zlib stream.
func packEntry(t plumbing.ObjectType, content []byte) []byte {
	buf := entryBuffers.Get().(*bytes.Buffer)
	buf.Reset()
	size := len(content)
	b := byte(t)<<4 | byte(size&0x0f)
	size >>= 4
	for size > 0 {
		buf.WriteByte(b | 0x80)
		b = byte(size & 0x7f)
		size >>= 7
	}
	buf.WriteByte(b)
	zw := zlibWriters.Get().(*zlib.Writer)
	zw.Reset(buf)
	_, _ = zw.Write(content) // writes to a bytes.Buffer: cannot fail
	_ = zw.Close()
	zw.Reset(io.Discard) // do not keep buf alive in the pool
	zlibWriters.Put(zw)
	entry := bytes.Clone(buf.Bytes()) // staged objects keep it: no spare capacity
	if buf.Cap() <= 1<<20 {
		entryBuffers.Put(buf)
	}
	return entry
}

// packWriter writes a Git pack of whole objects (no deltas). We know exactly
// which objects a batch created, so the pack we push is those objects and
// nothing else; go-git's own push would instead walk everything reachable
// from the remote's refs to find what to leave out, which costs the size of
// the repository on every push.
type packWriter struct {
	w     io.Writer
	sum   hash.Hash
	count int
	n     int
	off   uint64
	// idx, when set, collects the index entries of what is written.
	idx *idxfile.Writer
}

func newPackWriter(out io.Writer, count int) (*packWriter, error) {
	sum := sha1.New() // the trailer is a plain SHA-1 of the pack, as Git expects
	w := io.MultiWriter(out, sum)
	p := &packWriter{w: w, sum: sum, count: count}
	var head [12]byte
	copy(head[:4], "PACK")
	binary.BigEndian.PutUint32(head[4:8], 2)
	binary.BigEndian.PutUint32(head[8:12], uint32(count))
	if _, err := w.Write(head[:]); err != nil {
		return nil, fmt.Errorf("writing pack header: %w", err)
	}
	p.off = uint64(len(head))
	return p, nil
}

// addObject writes an object's entry (compressing it if need be).
func (p *packWriter) addObject(o *gitObject) error {
	if p.n == p.count {
		return errors.New("pack: more objects than announced")
	}
	o.compress()
	if _, err := p.w.Write(o.entry); err != nil {
		return fmt.Errorf("writing pack entry: %w", err)
	}
	if p.idx != nil {
		p.idx.Add(o.hash, p.off, o.crc)
	}
	p.off += uint64(len(o.entry))
	p.n++
	return nil
}

// add compresses and writes an object read from storage.
func (p *packWriter) add(h plumbing.Hash, t plumbing.ObjectType, content io.Reader) error {
	data, err := io.ReadAll(content)
	if err != nil {
		return fmt.Errorf("writing pack entry: %w", err)
	}
	return p.addObject(&gitObject{typ: t, hash: h, data: data})
}

// finish writes the trailer and returns the pack's checksum.
func (p *packWriter) finish() (plumbing.Hash, error) {
	if p.n != p.count {
		return plumbing.ZeroHash, fmt.Errorf("pack: wrote %d objects, announced %d", p.n, p.count)
	}
	var h plumbing.Hash
	copy(h[:], p.sum.Sum(nil))
	_, err := p.w.Write(h[:])
	return h, err
}

// streamPack writes the pack of objects to out, compressing them on the way:
// workers on every CPU compress ahead while the objects are written in
// order. Pushed through a pipe, the pack is compressed while the remote
// already reads and indexes its beginning, instead of before the push
// starts. It returns how many bytes it wrote.
func streamPack(out io.Writer, objects []*gitObject) (int64, error) {
	var stop atomic.Bool
	var next atomic.Int64
	var wg sync.WaitGroup
	defer func() {
		stop.Store(true)
		wg.Wait()
	}()
	// The writing loop below compresses too (when it catches up with the
	// workers), so one worker less than the CPUs keeps them all busy.
	for range min(runtime.GOMAXPROCS(0)-1, len(objects)/64) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1)) - 1; i < len(objects) && !stop.Load(); i = int(next.Add(1)) - 1 {
				objects[i].compress()
			}
		}()
	}
	cw := &countingWriter{w: out}
	bw := bufio.NewWriterSize(cw, 64<<10)
	pw, err := newPackWriter(bw, len(objects))
	if err != nil {
		return cw.n, err
	}
	for _, o := range objects {
		if err := pw.addObject(o); err != nil {
			return cw.n, err
		}
	}
	if _, err := pw.finish(); err != nil {
		return cw.n, err
	}
	err = bw.Flush()
	return cw.n, err
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// writePack stores a pack and its index in the clone, written by fill
// (which adds count objects). It writes the index itself, from what it
// wrote, instead of letting go-git parse the pack back (which decompresses
// and hashes every object again). The index is renamed into place before
// the pack: an index without its pack is cleaned up on open
// (cleanPackDir), a pack without an index would break every lookup. The
// caller must make go-git's storage reload its indexes (Reindex).
func (r *localRepo) writePack(count int, fill func(*packWriter) error) (err error) {
	dir := filepath.Join(r.path, "objects", "pack")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("storing pack: %w", err)
	}
	tmpPack, err := os.CreateTemp(dir, "tmp_pack_")
	if err != nil {
		return fmt.Errorf("storing pack: %w", err)
	}
	defer func() {
		_ = tmpPack.Close()
		_ = os.Remove(tmpPack.Name()) // gone already when renamed
	}()
	bw := bufio.NewWriterSize(tmpPack, 1<<20)
	pw, err := newPackWriter(bw, count)
	if err != nil {
		return fmt.Errorf("storing pack: %w", err)
	}
	pw.idx = &idxfile.Writer{}
	if err := fill(pw); err != nil {
		return fmt.Errorf("storing pack: %w", err)
	}
	sum, err := pw.finish()
	if err == nil {
		err = bw.Flush()
	}
	if err == nil {
		err = tmpPack.Close()
	}
	if err != nil {
		return fmt.Errorf("storing pack: %w", err)
	}
	if err := pw.idx.OnFooter(sum); err != nil {
		return fmt.Errorf("indexing pack: %w", err)
	}
	idx, err := pw.idx.Index()
	if err != nil {
		return fmt.Errorf("indexing pack: %w", err)
	}
	var ibuf bytes.Buffer
	if _, err := idxfile.NewEncoder(&ibuf).Encode(idx); err != nil {
		return fmt.Errorf("indexing pack: %w", err)
	}
	base := filepath.Join(dir, "pack-"+sum.String())
	if _, err := os.Stat(base + ".pack"); err == nil {
		return nil // the same objects in the same order: already stored
	}
	if err := writeFileAtomic(base+".idx", ibuf.Bytes()); err != nil {
		return fmt.Errorf("indexing pack: %w", err)
	}
	if err := os.Chmod(tmpPack.Name(), 0o444); err != nil { // read-only, like Git's packs
		return fmt.Errorf("storing pack: %w", err)
	}
	if err := os.Rename(tmpPack.Name(), base+".pack"); err != nil {
		return fmt.Errorf("storing pack: %w", err)
	}
	return nil
}

// writeFileAtomic writes data to a temporary file next to path and renames
// it into place.
func writeFileAtomic(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), "tmp_idx_")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name()) // gone already when renamed
	if _, err := f.Write(data); err != nil {
		_ = f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Chmod(f.Name(), 0o444); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

// Every batch adds one small pack to the clone. Left alone, lookups would
// slow down with their number (go-git searches each pack's index in turn).
// compact merges packs so that, sorted by size, each is at least twice the
// one before it (Git's "geometric" repack): there are O(log n) packs, and
// each object is rewritten O(log n) times over its life. The biggest pack
// (the initial clone) is rewritten only when the small ones add up to half
// its size, so the cost of a batch stays independent of the repository's.
const compactAbovePacks = 8

type packFile struct {
	hash plumbing.Hash
	size int64
}

func (r *localRepo) packs() ([]packFile, error) {
	dir := filepath.Join(r.path, "objects", "pack")
	entries, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("listing packs: %w", err)
	}
	var out []packFile
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), ".pack")
		if !ok || !strings.HasPrefix(name, "pack-") {
			continue
		}
		info, err := e.Info()
		if err != nil {
			return nil, fmt.Errorf("listing packs: %w", err)
		}
		out = append(out, packFile{hash: plumbing.NewHash(strings.TrimPrefix(name, "pack-")), size: info.Size()})
	}
	return out, nil
}

// packsToMerge picks the smallest packs whose merge restores the geometric
// progression; fewer than two means nothing to do.
func packsToMerge(packs []packFile) []packFile {
	sort.Slice(packs, func(i, j int) bool { return packs[i].size < packs[j].size })
	n := len(packs)
	t := n - 1
	for t > 0 && packs[t].size >= 2*packs[t-1].size {
		t--
	}
	m := t
	var sum int64
	for _, p := range packs[:m] {
		sum += p.size
	}
	for m < n && packs[m].size < 2*sum {
		sum += packs[m].size
		m++
	}
	if m < 2 {
		return nil
	}
	return packs[:m]
}

// compact merges packs when there are too many; it returns how many it
// merged.
func (r *localRepo) compact() (int, error) {
	if err := r.flush(); err != nil {
		return 0, err
	}
	packs, err := r.packs()
	if err != nil || len(packs) <= compactAbovePacks {
		return 0, err
	}
	merge := packsToMerge(packs)
	if len(merge) < 2 {
		return 0, nil
	}
	var hashes []plumbing.Hash
	seen := map[plumbing.Hash]bool{}
	for _, p := range merge {
		if err := r.packHashes(p.hash, func(h plumbing.Hash) {
			if !seen[h] {
				seen[h] = true
				hashes = append(hashes, h)
			}
		}); err != nil {
			return 0, err
		}
	}
	err = r.writePack(len(hashes), func(pw *packWriter) error {
		for _, h := range hashes {
			o, err := r.st.EncodedObject(plumbing.AnyObject, h)
			if err != nil {
				return err
			}
			rd, err := o.Reader()
			if err != nil {
				return err
			}
			err = pw.add(h, o.Type(), rd)
			_ = rd.Close()
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("merging packs: %w", err)
	}
	// The merged pack is in place; the old ones are now redundant. Close
	// the storage first: it holds their descriptors and indexes.
	_ = r.st.Close()
	dir := filepath.Join(r.path, "objects", "pack")
	for _, p := range merge {
		for _, ext := range []string{".pack", ".idx", ".rev"} {
			err := os.Remove(filepath.Join(dir, "pack-"+p.hash.String()+ext))
			if err != nil && !errors.Is(err, os.ErrNotExist) {
				r.reopen()
				return 0, fmt.Errorf("removing merged pack: %w", err)
			}
		}
	}
	r.reopen()
	return len(merge), nil
}

func (r *localRepo) packHashes(pack plumbing.Hash, fn func(plumbing.Hash)) error {
	f, err := os.Open(filepath.Join(r.path, "objects", "pack", "pack-"+pack.String()+".idx"))
	if err != nil {
		return fmt.Errorf("reading pack index: %w", err)
	}
	defer f.Close()
	idx := idxfile.NewMemoryIndex()
	if err := idxfile.NewDecoder(f).Decode(idx); err != nil {
		return fmt.Errorf("reading pack index %s: %w", pack, err)
	}
	it, err := idx.Entries()
	if err != nil {
		return fmt.Errorf("reading pack index %s: %w", pack, err)
	}
	defer it.Close()
	for {
		e, err := it.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading pack index %s: %w", pack, err)
		}
		fn(e.Hash)
	}
}
