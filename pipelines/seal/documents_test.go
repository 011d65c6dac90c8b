package seal

import (
	"bytes"
	"testing"
)

// FuzzSplitDocuments checks that splitting never loses or reorders a byte,
// which is what lets the seal stage leave other documents untouched.
func FuzzSplitDocuments(f *testing.F) {
	for _, seed := range []string{
		"", "a: 1", "a: 1\n", "---\n", "--- # c\na: 1\n---\nb: 2", "a: |\n  ---x\n---\n\n", "---\r\na: 1\r\n", "----\n--- x\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		docs := splitDocuments(data)
		if got := joinDocuments(docs); !bytes.Equal(got, data) {
			t.Fatalf("join(split(%q)) = %q", data, got)
		}
		for i, d := range docs {
			if (i == 0) != (d.sep == nil) || (d.sep != nil && !isSeparator(d.sep)) {
				t.Fatalf("document %d of %q has separator %q", i, data, d.sep)
			}
		}
	})
}

func TestSplitDocumentsLikeKubernetes(t *testing.T) {
	docs := splitDocuments([]byte("a: 1\n--- # two\nb: 2\n---x\nc: 3\n---\n"))
	if len(docs) != 3 || string(docs[1].body) != "b: 2\n---x\nc: 3\n" || string(docs[2].body) != "" {
		t.Fatalf("got %q", docs)
	}
}
