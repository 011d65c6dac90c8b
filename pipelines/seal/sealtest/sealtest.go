// Package sealtest gives tests a sealing key pair, as a destination's
// sealed-secrets controller holds it, and its unseal path, so tests can
// open what the platform sealed exactly as the workload cluster would.
package sealtest

import (
	"crypto/rsa"
	"encoding/pem"
	"fmt"
	"time"

	ssv1alpha1 "github.com/bitnami/sealed-secrets/pkg/apis/sealedsecrets/v1alpha1"
	sscrypto "github.com/bitnami/sealed-secrets/pkg/crypto"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/yaml"
)

// Key is a sealing key pair.
type Key struct {
	Private *rsa.PrivateKey
	// CertPEM is the certificate the platform seals with.
	CertPEM []byte
}

// NewKey generates a key pair of the given size (2048 keeps tests fast;
// the controller generates 4096).
func NewKey(bits int) (Key, error) {
	priv, cert, err := sscrypto.GeneratePrivateKeyAndCert(bits, 24*time.Hour, "sealed-secrets")
	if err != nil {
		return Key{}, fmt.Errorf("generating a sealing key: %w", err)
	}
	return Key{Private: priv, CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})}, nil
}

// Unseal opens one SealedSecret manifest (YAML or JSON) with the
// sealed-secrets controller's own code and returns the Secret's data.
func (k Key) Unseal(manifest []byte) (map[string][]byte, error) {
	ss := &ssv1alpha1.SealedSecret{}
	if err := yaml.UnmarshalStrict(manifest, ss); err != nil {
		return nil, fmt.Errorf("parsing the SealedSecret: %w", err)
	}
	fp, err := sscrypto.PublicKeyFingerprint(&k.Private.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("fingerprinting the key: %w", err)
	}
	sec, err := ss.Unseal(scheme.Codecs, map[string]*rsa.PrivateKey{fp: k.Private})
	if err != nil {
		return nil, fmt.Errorf("unsealing %s/%s: %w", ss.Namespace, ss.Name, err)
	}
	return sec.Data, nil
}
