package job

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"promised.dev/promised/pipelines/validate"
)

// DefaultChunkBytes is the most bytes one hand-off Secret or ConfigMap
// holds: Kubernetes refuses either above 1 MiB, and the rest leaves room
// for its metadata.
const DefaultChunkBytes = 900 << 10

// DefaultMaxHandoffBytes bounds a hand-off's unpacked size. It is above
// validate.DefaultLimits.MaxBytes so that an oversized output is reported
// by the engine's validation, which names the rule, and not here.
const DefaultMaxHandoffBytes = 64 << 20

// maxHandoffFiles bounds the number of files in a hand-off, for the same
// reason as DefaultMaxHandoffBytes.
const maxHandoffFiles = 4 * 5000

// ErrNotRegular is returned (wrapped) when a folder handed off holds
// something other than regular files and folders: a symlink in output/
// could otherwise hand back the pod's service-account token.
var ErrNotRegular = errors.New("only regular files can be handed off (no symlinks, devices or sockets)")

// tree is one folder of a hand-off: its files are packed as "<Name>/<rel>".
type tree struct {
	Name string
	Dir  string
}

// pack writes the regular files under each tree into a gzip'd tar, in path
// order so that the same files always give the same bytes. A missing
// folder packs as empty; anything not a regular file or folder is refused.
func pack(w io.Writer, trees ...tree) error {
	gz := gzip.NewWriter(w)
	tw := tar.NewWriter(gz)
	for _, t := range trees {
		if err := packTree(tw, t); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("packing: %w", err)
	}
	if err := gz.Close(); err != nil {
		return fmt.Errorf("packing: %w", err)
	}
	return nil
}

func packTree(tw *tar.Writer, t tree) error {
	var files []string
	err := filepath.WalkDir(t.Dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if p == t.Dir && errors.Is(err, fs.ErrNotExist) {
				return fs.SkipDir
			}
			return fmt.Errorf("reading %s: %w", t.Name, err)
		}
		if d.IsDir() {
			return nil
		}
		rel, err := filepath.Rel(t.Dir, p)
		if err != nil {
			return fmt.Errorf("reading %s: %w", t.Name, err)
		}
		if !d.Type().IsRegular() {
			return fmt.Errorf("%s/%s is %s: %w", t.Name, filepath.ToSlash(rel), describeType(d.Type()), ErrNotRegular)
		}
		files = append(files, filepath.ToSlash(rel))
		return nil
	})
	if err != nil {
		return err
	}
	sort.Strings(files)
	for _, rel := range files {
		if err := packFile(tw, t, rel); err != nil {
			return err
		}
	}
	return nil
}

func describeType(m fs.FileMode) string {
	switch {
	case m&fs.ModeSymlink != 0:
		return "a symlink"
	case m&fs.ModeNamedPipe != 0:
		return "a named pipe"
	case m&fs.ModeSocket != 0:
		return "a socket"
	case m&fs.ModeDevice != 0:
		return "a device"
	}
	return "not a regular file"
}

func packFile(tw *tar.Writer, t tree, rel string) error {
	f, err := os.Open(filepath.Join(t.Dir, filepath.FromSlash(rel)))
	if err != nil {
		return fmt.Errorf("packing %s/%s: %w", t.Name, rel, err)
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return fmt.Errorf("packing %s/%s: %w", t.Name, rel, err)
	}
	// The walk saw a regular file; check again on the open file in case it
	// was swapped for something else since.
	if !info.Mode().IsRegular() {
		return fmt.Errorf("%s/%s: %w", t.Name, rel, ErrNotRegular)
	}
	hdr := &tar.Header{Typeflag: tar.TypeReg, Name: t.Name + "/" + rel, Mode: 0o644, Size: info.Size(), Format: tar.FormatPAX}
	if err := tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("packing %s/%s: %w", t.Name, rel, err)
	}
	if n, err := io.Copy(tw, f); err != nil || n != info.Size() {
		return fmt.Errorf("packing %s/%s: size changed while reading (%d of %d bytes): %w", t.Name, rel, n, info.Size(), errors.Join(err, io.ErrShortWrite))
	}
	return nil
}

// unpackLimits bound what unpack writes.
type unpackLimits struct {
	MaxBytes int64
	MaxFiles int
}

// unpack writes a tar.gz made by pack into the folders of dests, keyed by
// the trees' names. Every entry must be a regular file named
// "<tree>/<path>" with a tree in dests and a path validate.Path accepts,
// so nothing in the archive can write outside those folders, whoever made
// it.
func unpack(r io.Reader, dests map[string]string, lim unpackLimits) error {
	gz, err := gzip.NewReader(r)
	if err != nil {
		return fmt.Errorf("unpacking: %w", err)
	}
	defer gz.Close()
	tr := tar.NewReader(gz)
	var total int64
	for files := 0; ; files++ {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("unpacking: %w", err)
		}
		if files >= lim.MaxFiles {
			return fmt.Errorf("unpacking: more than %d files", lim.MaxFiles)
		}
		if hdr.Typeflag != tar.TypeReg {
			return fmt.Errorf("unpacking %q: %w", hdr.Name, ErrNotRegular)
		}
		top, rel, _ := strings.Cut(hdr.Name, "/")
		dir, ok := dests[top]
		if !ok {
			return fmt.Errorf("unpacking %q: not under one of %v", hdr.Name, sortedKeys(dests))
		}
		if err := validate.Path(rel); err != nil {
			return fmt.Errorf("unpacking %q: %w", hdr.Name, err)
		}
		if hdr.Size < 0 || total+hdr.Size > lim.MaxBytes {
			return fmt.Errorf("unpacking %q: more than %d bytes in all", hdr.Name, lim.MaxBytes)
		}
		total += hdr.Size
		if err := writeEntry(filepath.Join(dir, filepath.FromSlash(rel)), tr, hdr.Size); err != nil {
			return fmt.Errorf("unpacking %q: %w", hdr.Name, err)
		}
	}
}

func writeEntry(p string, r io.Reader, size int64) error {
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	// O_EXCL: a name listed twice is a malformed archive, not an update.
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	n, err := io.Copy(f, io.LimitReader(r, size))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil && n != size {
		err = io.ErrUnexpectedEOF
	}
	return err
}

// split cuts data into chunks of at most size bytes; there is always at
// least one chunk, so an empty hand-off is still a hand-off.
func split(data []byte, size int) [][]byte {
	if len(data) == 0 {
		return [][]byte{{}}
	}
	var out [][]byte
	for len(data) > 0 {
		n := min(size, len(data))
		out = append(out, data[:n])
		data = data[n:]
	}
	return out
}

// mac is the hex HMAC-SHA256 of data under key.
func mac(key, data []byte) string {
	m := hmac.New(sha256.New, key)
	m.Write(data)
	return hex.EncodeToString(m.Sum(nil))
}

// digest is the hex SHA-256 of data.
func digest(data []byte) string {
	h := sha256.Sum256(data)
	return hex.EncodeToString(h[:])
}

func sortedKeys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// joinChunks concatenates chunks keyed by index, refusing a missing,
// duplicated or extra chunk.
func joinChunks(chunks map[int][]byte, want int) ([]byte, error) {
	if len(chunks) != want {
		return nil, fmt.Errorf("found %d chunks, want %d", len(chunks), want)
	}
	var buf bytes.Buffer
	for i := range want {
		c, ok := chunks[i]
		if !ok {
			return nil, fmt.Errorf("chunk %d of %d is missing", i, want)
		}
		buf.Write(c)
	}
	return buf.Bytes(), nil
}
