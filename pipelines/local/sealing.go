package local

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	sscrypto "github.com/bitnami/sealed-secrets/pkg/crypto"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"promised.dev/promised/api/v1alpha1"
	"promised.dev/promised/pipelines/seal"
	"promised.dev/promised/pipelines/stage"
)

// Masks that replace what differs on every sealing in test snapshots.
const (
	MaskedCiphertext  = "<sealed>"
	MaskedFingerprint = "<fingerprint>"
)

// usesSeal reports whether any pipeline runs the seal stage.
func usesSeal(pipes []v1alpha1.Pipeline) bool {
	for _, p := range pipes {
		for _, c := range p.Spec.Containers {
			if name, ok := stage.BuiltinName(c.Image); ok && name == seal.StageName {
				return true
			}
		}
	}
	return false
}

// localCert is a throwaway sealing certificate for local runs: there is no
// destination cluster whose certificate could be used, and what a local
// run seals is only ever compared masked.
var localCert = sync.OnceValues(func() ([]byte, error) {
	_, cert, err := sscrypto.GeneratePrivateKeyAndCert(2048, 24*time.Hour, "promised-local")
	if err != nil {
		return nil, fmt.Errorf("generating a local sealing certificate: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}), nil
})

// sealInputs returns the seal stage's inputs for a local run: certPEM, or
// a throwaway certificate when nil, and a fingerprint key derived from a
// fixed local key, so re-rendering with --previous shows the guard at work.
func sealInputs(certPEM []byte, promise, namespace, name string) (map[string][]byte, error) {
	if certPEM == nil {
		var err error
		if certPEM, err = localCert(); err != nil {
			return nil, err
		}
	}
	localKey := sha256.Sum256([]byte("promised local runs: not a secret"))
	key, err := seal.DeriveFingerprintKey(localKey[:], promise, namespace, name)
	if err != nil {
		return nil, err
	}
	return seal.Inputs(certPEM, "", key)
}

// MaskSealed returns files with every SealedSecret's ciphertext and
// fingerprint replaced by masks, the rest of each SealedSecret kept: what
// a test can compare, since sealing is randomised. Documents of other
// kinds keep their bytes.
func MaskSealed(files map[string][]byte) (map[string][]byte, error) {
	out := make(map[string][]byte, len(files))
	for name, data := range files {
		if !bytes.Contains(data, []byte("SealedSecret")) {
			out[name] = data
			continue
		}
		masked, err := maskFile(data)
		if err != nil {
			return nil, fmt.Errorf("masking %s: %w", name, err)
		}
		out[name] = masked
	}
	return out, nil
}

func maskFile(data []byte) ([]byte, error) {
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var docs [][]byte
	changed := false
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		var m map[string]any
		if err := yaml.Unmarshal(doc, &m); err != nil || m["kind"] != "SealedSecret" {
			docs = append(docs, doc)
			continue
		}
		if spec, ok := m["spec"].(map[string]any); ok {
			if enc, ok := spec["encryptedData"].(map[string]any); ok {
				for k := range enc {
					enc[k] = MaskedCiphertext
				}
			}
		}
		if md, ok := m["metadata"].(map[string]any); ok {
			if ann, ok := md["annotations"].(map[string]any); ok {
				if _, ok := ann[seal.FingerprintAnnotation]; ok {
					ann[seal.FingerprintAnnotation] = MaskedFingerprint
				}
			}
		}
		b, err := yaml.Marshal(m)
		if err != nil {
			return nil, err
		}
		docs = append(docs, b)
		changed = true
	}
	if !changed {
		return data, nil
	}
	if len(docs) == 1 {
		return docs[0], nil
	}
	var b strings.Builder
	for i, d := range docs {
		if i > 0 {
			b.WriteString("---\n")
		}
		b.Write(bytes.TrimLeft(d, "-\n"))
	}
	return []byte(b.String()), nil
}
