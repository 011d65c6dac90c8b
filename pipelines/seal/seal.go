// Package seal turns the plaintext Secrets a pipeline writes into
// SealedSecrets (bitnami.com/v1alpha1), the way kubeseal does, and makes
// re-sealing idempotent.
//
// Sealing is randomised: sealing the same Secret twice gives different
// bytes, so a periodic reconcile that re-seals would make a Git commit and
// restart every workload that mounts the Secret. To avoid that, every
// SealedSecret carries a keyed fingerprint (HMAC-SHA256) of what was sealed:
// the Secret's plaintext and metadata, the certificate and the scope. When
// the pipeline's previous output holds a SealedSecret with the same
// namespace, name and fingerprint, its bytes are re-emitted unchanged, so a
// re-run with unchanged inputs writes byte-identical output.
//
// The fingerprint is keyed because it is published in Git next to the
// ciphertext: a bare hash of a password would let anyone who can read the
// repository test guesses offline. The key comes from the platform (see
// Inputs and DeriveFingerprintKey), one per request, so a pipeline only
// ever holds the key for fingerprints of secrets it already knows.
package seal

import (
	"bytes"
	"crypto/hmac"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"sort"
	"strings"

	ssv1alpha1 "github.com/bitnami/sealed-secrets/pkg/apis/sealedsecrets/v1alpha1"
)

// StageName is the seal stage's name in the built-in stage registry; its
// image is stage.Image(StageName).
const StageName = "seal"

// Input files the platform gives the seal stage, relative to the input
// folder (/kratix/input/ in a container). Inputs builds them.
const (
	// CertFile holds the destination's sealed-secrets certificate, PEM.
	CertFile = "sealing/cert.pem"
	// ScopeFile holds the platform's sealing scope (strict,
	// namespace-wide or cluster-wide); absent means each Secret's own
	// scope annotations decide, strict when it has none.
	ScopeFile = "sealing/scope"
	// FingerprintKeyFile holds the key of the idempotency fingerprint, raw
	// bytes, at least MinKeyBytes long.
	FingerprintKeyFile = "sealing/fingerprint-key"
)

// FingerprintAnnotation is the SealedSecret annotation holding the keyed
// fingerprint of what was sealed.
const FingerprintAnnotation = "promised.dev/sealed-fingerprint"

// MinKeyBytes is the shortest fingerprint key accepted: the output size of
// SHA-256, below which HMAC's strength is the key's.
const MinKeyBytes = 32

// fingerprintFormat names the canonical form the fingerprint is computed
// over. Changing how a Secret is turned into a SealedSecret must change it,
// so previous output made the old way is re-sealed once, deliberately.
const fingerprintFormat = "promised.dev/seal/v1"

// Scope is how widely a SealedSecret may be unsealed.
type Scope string

// The sealing scopes of sealed-secrets.
const (
	// ScopeStrict binds the ciphertext to the Secret's namespace and name.
	ScopeStrict Scope = "strict"
	// ScopeNamespaceWide binds the ciphertext to the namespace only, so the
	// Secret may be renamed.
	ScopeNamespaceWide Scope = "namespace-wide"
	// ScopeClusterWide lets the ciphertext be unsealed under any namespace
	// and name.
	ScopeClusterWide Scope = "cluster-wide"
)

// ParseScope reads a scope as written in ScopeFile; surrounding white
// space is ignored and an empty value is the empty Scope (no platform
// override).
func ParseScope(s string) (Scope, error) {
	switch sc := Scope(strings.TrimSpace(s)); sc {
	case "", ScopeStrict, ScopeNamespaceWide, ScopeClusterWide:
		return sc, nil
	default:
		return "", fmt.Errorf("sealing scope %q: want %s, %s or %s", sc, ScopeStrict, ScopeNamespaceWide, ScopeClusterWide)
	}
}

func (s Scope) library() ssv1alpha1.SealingScope {
	switch s {
	case ScopeNamespaceWide:
		return ssv1alpha1.NamespaceWideScope
	case ScopeClusterWide:
		return ssv1alpha1.ClusterWideScope
	default:
		return ssv1alpha1.StrictScope
	}
}

func scopeOf(s ssv1alpha1.SealingScope) Scope {
	switch s {
	case ssv1alpha1.NamespaceWideScope:
		return ScopeNamespaceWide
	case ssv1alpha1.ClusterWideScope:
		return ScopeClusterWide
	default:
		return ScopeStrict
	}
}

// Config is what sealing needs from the platform.
type Config struct {
	// CertPEM is the destination's sealed-secrets certificate; its public
	// key must be RSA.
	CertPEM []byte
	// Scope, when set, overrides every Secret's scope annotations, as
	// kubeseal's --scope does; when empty each Secret's annotations
	// decide, strict when it has none.
	Scope Scope
	// FingerprintKey keys the idempotency fingerprint; at least
	// MinKeyBytes long. Changing it re-seals every Secret once.
	FingerprintKey []byte
}

// Errors for a Config that cannot seal; returned wrapped.
var (
	// ErrNoCertificate means the output holds a Secret but the platform
	// gave no certificate to seal it with.
	ErrNoCertificate = errors.New("no sealing certificate: the platform provides the destination's certificate at input/" + CertFile)
	// ErrNoFingerprintKey means the output holds a Secret but the platform
	// gave no fingerprint key, without which a re-run could not recognise
	// an unchanged Secret and would re-seal it on every reconcile.
	ErrNoFingerprintKey = errors.New("no fingerprint key: the platform provides it at input/" + FingerprintKeyFile)
)

// sealer is a Config checked and parsed once per SealFiles call.
type sealer struct {
	pub     *rsa.PublicKey
	certSum string
	scope   Scope
	key     []byte
}

func newSealer(cfg Config) (*sealer, error) {
	if len(bytes.TrimSpace(cfg.CertPEM)) == 0 {
		return nil, ErrNoCertificate
	}
	cert, err := parseCertificate(cfg.CertPEM)
	if err != nil {
		return nil, err
	}
	pub, ok := cert.PublicKey.(*rsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("sealing certificate: public key is %T, sealed-secrets needs RSA", cert.PublicKey)
	}
	scope, err := ParseScope(string(cfg.Scope))
	if err != nil {
		return nil, err
	}
	if len(cfg.FingerprintKey) == 0 {
		return nil, ErrNoFingerprintKey
	}
	if len(cfg.FingerprintKey) < MinKeyBytes {
		return nil, fmt.Errorf("fingerprint key is %d bytes, at least %d needed", len(cfg.FingerprintKey), MinKeyBytes)
	}
	sum := sha256.Sum256(cert.Raw)
	return &sealer{pub: pub, certSum: hex.EncodeToString(sum[:]), scope: scope, key: cfg.FingerprintKey}, nil
}

// parseCertificate returns the first certificate of a PEM bundle, as
// kubeseal's --cert does.
func parseCertificate(data []byte) (*x509.Certificate, error) {
	rest := data
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			return nil, errors.New("sealing certificate: no PEM CERTIFICATE block found")
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("sealing certificate: parsing: %w", err)
		}
		return cert, nil
	}
}

// Inputs returns the files the platform places under the input folder for
// the seal stage (pipelines.Workflow.Inputs), checked so that a bad
// certificate or key is reported where it is configured rather than in
// every request's pipeline. scope may be empty (see Config.Scope).
// fingerprintKey should be DeriveFingerprintKey's result for the request.
func Inputs(certPEM []byte, scope Scope, fingerprintKey []byte) (map[string][]byte, error) {
	if _, err := newSealer(Config{CertPEM: certPEM, Scope: scope, FingerprintKey: fingerprintKey}); err != nil {
		return nil, fmt.Errorf("building the seal stage's inputs: %w", err)
	}
	in := map[string][]byte{
		CertFile:           bytes.Clone(certPEM),
		FingerprintKeyFile: bytes.Clone(fingerprintKey),
	}
	if scope != "" {
		in[ScopeFile] = []byte(string(scope) + "\n")
	}
	return in, nil
}

// DeriveFingerprintKey derives one request's fingerprint key from the
// platform's key (HMAC-SHA256 over the request's identity). A pipeline runs
// arbitrary images, so it is given only its own request's key: holding it
// lets one test guesses against the fingerprints of that request's secrets,
// which the pipeline knows anyway, and no other request's. The request's
// UID is deliberately left out so that `promised render`, which has none,
// derives the same key as the controller.
func DeriveFingerprintKey(platformKey []byte, promise, namespace, name string) ([]byte, error) {
	if len(platformKey) < MinKeyBytes {
		return nil, fmt.Errorf("deriving the fingerprint key: the platform key is %d bytes, at least %d needed", len(platformKey), MinKeyBytes)
	}
	m := hmac.New(sha256.New, platformKey)
	writeFields(m, "promised.dev/seal-fingerprint-key/v1", promise, namespace, name)
	return m.Sum(nil), nil
}

// writeFields writes length-prefixed fields so that no two different lists
// of fields produce the same bytes ("a","bc" versus "ab","c").
func writeFields(w interface{ Write([]byte) (int, error) }, fields ...string) {
	var n [8]byte
	for _, f := range fields {
		binary.BigEndian.PutUint64(n[:], uint64(len(f)))
		_, _ = w.Write(n[:])
		_, _ = w.Write([]byte(f))
	}
}

// Sealed reports one Secret of the output: where it was, what it became
// and whether the previous sealed bytes were kept. It holds no secret data.
type Sealed struct {
	// File is the output file's path, Document its 1-based document.
	File     string
	Document int
	// Namespace and Name identify the Secret and its SealedSecret.
	Namespace string
	Name      string
	// Scope is the scope the Secret was sealed under.
	Scope Scope
	// Fingerprint is the FingerprintAnnotation value.
	Fingerprint string
	// Reused is true when the previous output's SealedSecret was re-emitted
	// byte for byte instead of sealing afresh.
	Reused bool
}

// SealFiles returns files with every plaintext v1 Secret replaced by a
// SealedSecret, and a report of each. Keys are slash-separated output
// paths; previous is the pipeline's output of its last run, keyed the same
// way. A Secret whose fingerprint matches a SealedSecret of the same
// namespace and name anywhere in previous gets that document's bytes back
// unchanged (the one at the same path first, so renaming a file keeps the
// bytes too). Documents that are not Secrets, and files holding no Secret,
// are returned byte for byte. The certificate and key are only needed, and
// only checked, when there is a Secret to seal. Neither argument is
// modified. Errors never hold secret data.
func SealFiles(cfg Config, files, previous map[string][]byte) (map[string][]byte, []Sealed, error) {
	out := make(map[string][]byte, len(files))
	var (
		s      *sealer
		prev   *previousIndex
		report []Sealed
	)
	for _, p := range sortedKeys(files) {
		data := files[p]
		out[p] = data
		// A cheap test first: most files hold no Secret and need no
		// parsing. One this misses is still refused by output validation.
		if !bytes.Contains(data, []byte("Secret")) {
			continue
		}
		docs := splitDocuments(data)
		changed := false
		for i := range docs {
			sec, err := secretIn(docs[i].body)
			if err != nil {
				return nil, nil, fmt.Errorf("sealing output file %q, document %d: %w", p, i+1, err)
			}
			if sec == nil {
				continue
			}
			if s == nil {
				if s, err = newSealer(cfg); err != nil {
					return nil, nil, fmt.Errorf("sealing Secret %q in output file %q: %w", sec.Name, p, err)
				}
				prev = indexPrevious(previous)
			}
			body, rec, err := s.seal(sec, prev, p, looksJSON(docs[i].body))
			if err != nil {
				return nil, nil, fmt.Errorf("sealing Secret %q in output file %q, document %d: %w", sec.Name, p, i+1, err)
			}
			rec.File, rec.Document = p, i+1
			report = append(report, rec)
			docs[i].body = body
			changed = true
		}
		if changed {
			out[p] = joinDocuments(docs)
		}
	}
	return out, report, nil
}

func sortedKeys(m map[string][]byte) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
