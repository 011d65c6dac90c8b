package statestore

import (
	"bytes"
	"compress/zlib"
	"crypto/sha1"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/format/idxfile"
)

// packWriter writes a Git pack of whole objects (no deltas). We know exactly
// which objects a batch created, so the pack we push is those objects and
// nothing else; go-git's own push would instead walk everything reachable
// from the remote's refs to find what to leave out, which costs the size of
// the repository on every push.
type packWriter struct {
	w     io.Writer
	sum   hash.Hash
	zw    *zlib.Writer
	count int
	n     int
	hdr   []byte
}

func newPackWriter(out io.Writer, count int) (*packWriter, error) {
	sum := sha1.New() // the trailer is a plain SHA-1 of the pack, as Git expects
	w := io.MultiWriter(out, sum)
	zw, err := zlib.NewWriterLevel(w, zlib.BestSpeed)
	if err != nil {
		return nil, err
	}
	p := &packWriter{w: w, sum: sum, zw: zw, count: count}
	var head [12]byte
	copy(head[:4], "PACK")
	binary.BigEndian.PutUint32(head[4:8], 2)
	binary.BigEndian.PutUint32(head[8:12], uint32(count))
	if _, err := w.Write(head[:]); err != nil {
		return nil, fmt.Errorf("writing pack header: %w", err)
	}
	return p, nil
}

func (p *packWriter) add(t plumbing.ObjectType, size int64, content io.Reader) error {
	if p.n == p.count {
		return errors.New("pack: more objects than announced")
	}
	// Object header: type in bits 4-6 of the first byte, size as a
	// little-endian base-128 varint starting with 4 bits in the first byte.
	p.hdr = p.hdr[:0]
	b := byte(t)<<4 | byte(size&0x0f)
	size >>= 4
	for size > 0 {
		p.hdr = append(p.hdr, b|0x80)
		b = byte(size & 0x7f)
		size >>= 7
	}
	p.hdr = append(p.hdr, b)
	if _, err := p.w.Write(p.hdr); err != nil {
		return fmt.Errorf("writing pack entry: %w", err)
	}
	p.zw.Reset(p.w)
	if _, err := io.Copy(p.zw, content); err != nil {
		return fmt.Errorf("writing pack entry: %w", err)
	}
	if err := p.zw.Close(); err != nil {
		return fmt.Errorf("writing pack entry: %w", err)
	}
	p.n++
	return nil
}

func (p *packWriter) finish() error {
	if p.n != p.count {
		return fmt.Errorf("pack: wrote %d objects, announced %d", p.n, p.count)
	}
	_, err := p.w.Write(p.sum.Sum(nil))
	return err
}

// encodePack returns a pack holding objects.
func encodePack(objects []*plumbing.MemoryObject) ([]byte, error) {
	var buf bytes.Buffer
	p, err := newPackWriter(&buf, len(objects))
	if err != nil {
		return nil, err
	}
	for _, o := range objects {
		r, _ := o.Reader()
		if err := p.add(o.Type(), o.Size(), r); err != nil {
			return nil, err
		}
	}
	if err := p.finish(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
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
	w, err := r.st.PackfileWriter()
	if err != nil {
		return 0, fmt.Errorf("merging packs: %w", err)
	}
	pw, err := newPackWriter(w, len(hashes))
	if err == nil {
		for _, h := range hashes {
			var o plumbing.EncodedObject
			if o, err = r.st.EncodedObject(plumbing.AnyObject, h); err != nil {
				break
			}
			rd, rerr := o.Reader()
			if rerr != nil {
				err = rerr
				break
			}
			err = pw.add(o.Type(), o.Size(), rd)
			_ = rd.Close()
			if err != nil {
				break
			}
		}
	}
	if err == nil {
		err = pw.finish()
	}
	if cerr := w.Close(); err == nil {
		err = cerr
	}
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
