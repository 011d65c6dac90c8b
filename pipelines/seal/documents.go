package seal

import (
	"bytes"
	"sort"

	"sigs.k8s.io/yaml"
)

// document is one document of a multi-document YAML file: the separator
// line that opened it (nil for the first) and its body, byte for byte, so
// that joining the documents again gives back the file exactly.
type document struct {
	sep  []byte
	body []byte
}

// splitDocuments splits data the way Kubernetes' YAML reader does: a line
// starting with "---" followed only by blanks or a comment separates
// documents. Nothing is dropped, so joinDocuments(splitDocuments(d)) == d.
func splitDocuments(data []byte) []document {
	var (
		docs      []document
		sep       []byte
		bodyStart int
	)
	// Bodies are capped sub-slices of data, so replacing one later never
	// writes into the caller's bytes.
	flush := func(end int) { docs = append(docs, document{sep: sep, body: data[bodyStart:end:end]}) }
	for start := 0; start < len(data); {
		end := len(data)
		if i := bytes.IndexByte(data[start:], '\n'); i >= 0 {
			end = start + i + 1
		}
		if line := data[start:end]; isSeparator(line) {
			flush(start)
			sep, bodyStart = line, end
		}
		start = end
	}
	flush(len(data))
	return docs
}

func isSeparator(line []byte) bool {
	rest, ok := bytes.CutPrefix(line, []byte("---"))
	if !ok {
		return false
	}
	rest = bytes.TrimSpace(rest)
	return len(rest) == 0 || rest[0] == '#'
}

func joinDocuments(docs []document) []byte {
	n := 0
	for _, d := range docs {
		n += len(d.sep) + len(d.body)
	}
	out := make([]byte, 0, n)
	for _, d := range docs {
		out = append(out, d.sep...)
		out = append(out, d.body...)
	}
	return out
}

// looksJSON says whether a document is written as JSON, so a Secret
// written as JSON is replaced by a SealedSecret written as JSON.
func looksJSON(body []byte) bool {
	t := bytes.TrimSpace(body)
	return len(t) > 0 && t[0] == '{'
}

// previousSealed is one SealedSecret of the previous output.
type previousSealed struct {
	file        string
	doc         int
	fingerprint string
	body        []byte
	json        bool
}

type objectKey struct{ namespace, name string }

// previousIndex finds the previous output's SealedSecrets by namespace and
// name, whatever file they were in.
type previousIndex struct {
	byName map[objectKey][]previousSealed
}

// indexPrevious reads every SealedSecret of the previous output. A file or
// document that does not parse is skipped: at worst its Secret is sealed
// afresh, which is what happened before the guard existed.
func indexPrevious(previous map[string][]byte) *previousIndex {
	idx := &previousIndex{byName: map[objectKey][]previousSealed{}}
	for _, p := range sortedKeys(previous) {
		data := previous[p]
		if !bytes.Contains(data, []byte("SealedSecret")) {
			continue
		}
		for i, d := range splitDocuments(previous[p]) {
			var head struct {
				APIVersion string `json:"apiVersion"`
				Kind       string `json:"kind"`
				Metadata   struct {
					Name        string            `json:"name"`
					Namespace   string            `json:"namespace"`
					Annotations map[string]string `json:"annotations"`
				} `json:"metadata"`
			}
			if err := yaml.Unmarshal(d.body, &head); err != nil {
				continue
			}
			fp := head.Metadata.Annotations[FingerprintAnnotation]
			if head.APIVersion != "bitnami.com/v1alpha1" || head.Kind != "SealedSecret" || fp == "" {
				continue
			}
			k := objectKey{head.Metadata.Namespace, head.Metadata.Name}
			idx.byName[k] = append(idx.byName[k], previousSealed{file: p, doc: i, fingerprint: fp, body: d.body, json: looksJSON(d.body)})
		}
	}
	for _, list := range idx.byName {
		sort.SliceStable(list, func(i, j int) bool {
			if list[i].file != list[j].file {
				return list[i].file < list[j].file
			}
			return list[i].doc < list[j].doc
		})
	}
	return idx
}

// lookup returns the previous bytes of the SealedSecret namespace/name with
// fingerprint fp written as JSON or not (asJSON), preferring one in file so
// that the same Secret written to two folders keeps each copy's bytes. Any
// match seals identical content, so the choice only has to be
// deterministic.
func (idx *previousIndex) lookup(namespace, name, fp, file string, asJSON bool) ([]byte, bool) {
	var found []byte
	for _, c := range idx.byName[objectKey{namespace, name}] {
		if c.fingerprint != fp || c.json != asJSON {
			continue
		}
		if c.file == file {
			return c.body, true
		}
		if found == nil {
			found = c.body
		}
	}
	return found, found != nil
}
