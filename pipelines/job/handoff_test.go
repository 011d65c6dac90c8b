package job

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

var testLimits = unpackLimits{MaxBytes: 1 << 20, MaxFiles: 100}

func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for rel, content := range files {
		p := filepath.Join(dir, filepath.FromSlash(rel))
		require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
		require.NoError(t, os.WriteFile(p, []byte(content), 0o644))
	}
}

func readFiles(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	require.NoError(t, filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		require.NoError(t, err)
		if !d.IsDir() {
			rel, _ := filepath.Rel(dir, p)
			data, err := os.ReadFile(p)
			require.NoError(t, err)
			out[filepath.ToSlash(rel)] = string(data)
		}
		return nil
	}))
	return out
}

func TestPackUnpackRoundTrip(t *testing.T) {
	src := t.TempDir()
	out := map[string]string{"a.yaml": "a", "deep/er/b.yaml": "b", "empty": ""}
	meta := map[string]string{"status.yaml": "x: 1\n"}
	writeFiles(t, filepath.Join(src, "output"), out)
	writeFiles(t, filepath.Join(src, "metadata"), meta)
	var first, second bytes.Buffer
	trees := []tree{{"output", filepath.Join(src, "output")}, {"metadata", filepath.Join(src, "metadata")}, {"missing", filepath.Join(src, "missing")}}
	require.NoError(t, pack(&first, trees...))
	require.NoError(t, pack(&second, trees...))
	require.Equal(t, first.Bytes(), second.Bytes(), "the same files pack to the same bytes")

	dst := t.TempDir()
	dests := map[string]string{"output": filepath.Join(dst, "o"), "metadata": filepath.Join(dst, "m")}
	require.NoError(t, unpack(&first, dests, testLimits))
	require.Equal(t, out, readFiles(t, dests["output"]))
	require.Equal(t, meta, readFiles(t, dests["metadata"]))
}

func TestPackRefusesSymlinks(t *testing.T) {
	src := t.TempDir()
	writeFiles(t, src, map[string]string{"ok.yaml": "ok"})
	require.NoError(t, os.Symlink("/etc/passwd", filepath.Join(src, "passwd")))
	err := pack(&bytes.Buffer{}, tree{"output", src})
	require.ErrorIs(t, err, ErrNotRegular)
	require.ErrorContains(t, err, "output/passwd is a symlink")

	// A symlinked folder is refused too, not followed.
	src2 := t.TempDir()
	require.NoError(t, os.Symlink(t.TempDir(), filepath.Join(src2, "dir")))
	require.ErrorIs(t, pack(&bytes.Buffer{}, tree{"output", src2}), ErrNotRegular)
}

// archive builds a tar.gz of the given headers, each with a small body.
func archive(t *testing.T, hdrs ...tar.Header) []byte {
	t.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for _, h := range hdrs {
		body := []byte("apiVersion: v1\n")
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(body))
		}
		require.NoError(t, tw.WriteHeader(&h))
		if h.Typeflag == tar.TypeReg {
			_, err := tw.Write(body)
			require.NoError(t, err)
		}
	}
	require.NoError(t, tw.Close())
	require.NoError(t, gz.Close())
	return buf.Bytes()
}

func TestUnpackRefusesEscapingAndOddEntries(t *testing.T) {
	reg := func(name string) tar.Header { return tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644} }
	for name, c := range map[string]struct {
		hdrs []tar.Header
		want string
	}{
		"parent":            {[]tar.Header{reg("output/../escaped.yaml")}, `path element ".."`},
		"parent of parent":  {[]tar.Header{reg("output/a/../../../x")}, `path element ".."`},
		"absolute":          {[]tar.Header{reg("/etc/passwd")}, "not under one of"},
		"absolute inside":   {[]tar.Header{reg("output//etc/passwd")}, "absolute path"},
		"other tree":        {[]tar.Header{reg("input/object.yaml")}, "not under one of [metadata output]"},
		"bare tree":         {[]tar.Header{reg("output")}, "empty path"},
		"backslash":         {[]tar.Header{reg(`output/..\..\x`)}, "backslash"},
		"dot":               {[]tar.Header{reg("output/./x")}, `path element "."`},
		"symlink":           {[]tar.Header{{Typeflag: tar.TypeSymlink, Name: "output/link", Linkname: "/etc/passwd"}}, ErrNotRegular.Error()},
		"hard link":         {[]tar.Header{{Typeflag: tar.TypeLink, Name: "output/link", Linkname: "output/a"}}, ErrNotRegular.Error()},
		"device":            {[]tar.Header{{Typeflag: tar.TypeChar, Name: "output/dev"}}, ErrNotRegular.Error()},
		"directory entries": {[]tar.Header{{Typeflag: tar.TypeDir, Name: "output/dir/"}}, ErrNotRegular.Error()},
		"duplicate":         {[]tar.Header{reg("output/a"), reg("output/a")}, "file exists"},
	} {
		t.Run(name, func(t *testing.T) {
			root := t.TempDir()
			dests := map[string]string{"output": filepath.Join(root, "ws", "output"), "metadata": filepath.Join(root, "ws", "metadata")}
			err := unpack(bytes.NewReader(archive(t, c.hdrs...)), dests, testLimits)
			require.ErrorContains(t, err, c.want)
			require.NoFileExists(t, filepath.Join(root, "escaped.yaml"))
			require.NoFileExists(t, filepath.Join(root, "ws", "escaped.yaml"))
		})
	}
}

func TestUnpackLimits(t *testing.T) {
	var hdrs []tar.Header
	for i := range 5 {
		hdrs = append(hdrs, tar.Header{Typeflag: tar.TypeReg, Name: "output/f" + strconv.Itoa(i), Mode: 0o644})
	}
	data := archive(t, hdrs...)
	dests := func() map[string]string { return map[string]string{"output": t.TempDir()} }
	require.ErrorContains(t, unpack(bytes.NewReader(data), dests(), unpackLimits{MaxBytes: 1 << 20, MaxFiles: 4}), "more than 4 files")
	require.ErrorContains(t, unpack(bytes.NewReader(data), dests(), unpackLimits{MaxBytes: 40, MaxFiles: 10}), "more than 40 bytes")
	require.NoError(t, unpack(bytes.NewReader(data), dests(), unpackLimits{MaxBytes: 1 << 20, MaxFiles: 5}))
	require.Error(t, unpack(bytes.NewReader([]byte("not gzip")), dests(), testLimits))
}

func TestSplit(t *testing.T) {
	require.Equal(t, [][]byte{{}}, split(nil, 3))
	require.Equal(t, [][]byte{[]byte("abc"), []byte("def"), []byte("g")}, split([]byte("abcdefg"), 3))
	require.Equal(t, [][]byte{[]byte("abc")}, split([]byte("abc"), 3))
}

func TestVerifyChunks(t *testing.T) {
	key := []byte("run key")
	data := []byte("0123456789")
	sum := mac(key, data)
	cm := func(i, n int, chunk string, sum string) corev1.ConfigMap {
		return corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{
				Name:        "out-" + strconv.Itoa(i),
				Labels:      map[string]string{LabelChunk: strconv.Itoa(i)},
				Annotations: map[string]string{AnnotationChunks: strconv.Itoa(n), AnnotationMAC: sum},
			},
			BinaryData: map[string][]byte{outputChunkKey: []byte(chunk)},
		}
	}
	got, err := verifyChunks([]corev1.ConfigMap{cm(1, 2, "56789", sum), cm(0, 2, "01234", sum)}, key)
	require.NoError(t, err)
	require.Equal(t, data, got, "chunks are joined in index order, whatever the list order")

	for name, c := range map[string]struct {
		cms  []corev1.ConfigMap
		want string
	}{
		"none":          {nil, "no output ConfigMaps"},
		"missing chunk": {[]corev1.ConfigMap{cm(0, 2, "01234", sum)}, "found 1 chunks, want 2"},
		"wrong index":   {[]corev1.ConfigMap{cm(0, 2, "01234", sum), cm(2, 2, "56789", sum)}, "chunk 1 of 2 is missing"},
		"duplicate":     {[]corev1.ConfigMap{cm(0, 2, "01234", sum), cm(0, 2, "01234", sum)}, "chunk 0 appears twice"},
		"counts differ": {[]corev1.ConfigMap{cm(0, 2, "01234", sum), cm(1, 3, "56789", sum)}, `says "3" chunks`},
		"macs differ":   {[]corev1.ConfigMap{cm(0, 2, "01234", sum), cm(1, 2, "56789", "x")}, "disagree on the output's MAC"},
		"tampered":      {[]corev1.ConfigMap{cm(0, 2, "01234", sum), cm(1, 2, "5678X", sum)}, "does not match this run's key"},
		"other key":     {[]corev1.ConfigMap{cm(0, 1, "0123456789", mac([]byte("other"), data))}, "does not match this run's key"},
		"bad label":     {[]corev1.ConfigMap{cm(-1, 1, "0123456789", sum)}, "chunk label"},
	} {
		_, err := verifyChunks(c.cms, key)
		require.ErrorIs(t, err, ErrHandback, name)
		require.ErrorContains(t, err, c.want, name)
	}
}
