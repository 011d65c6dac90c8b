package controller

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/pem"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"promised.dev/promised/api/v1alpha1"
	"promised.dev/promised/controller/scheduling"
	"promised.dev/promised/pipelines/seal"
)

// Sealing resolves what the seal stage needs for a request: the sealing
// certificate and scope of the destination the output will go to, and the
// request's fingerprint key derived from the platform key.
type Sealing struct {
	// Reader reads certificate Secrets and ConfigMaps past the informer
	// cache (the controller does not watch Secrets).
	Reader client.Reader
	// PlatformKey derives each request's fingerprint key; without one,
	// pipelines that seal fail with a clear error.
	PlatformKey []byte
}

// certificate returns a destination's sealing certificate (PEM) and its
// fingerprint, or nil when it has none.
func (s *Sealing) certificate(ctx context.Context, d *v1alpha1.Destination) ([]byte, string, error) {
	sc := d.Spec.Sealing
	if sc == nil {
		return nil, "", nil
	}
	pemData := []byte(sc.CertificatePEM)
	if ref := sc.CertificateRef; ref != nil {
		key := client.ObjectKey{Namespace: ref.Namespace, Name: ref.Name}
		switch ref.Kind {
		case "ConfigMap":
			cm := &corev1.ConfigMap{}
			if err := s.Reader.Get(ctx, key, cm); err != nil {
				return nil, "", fmt.Errorf("destination %q: reading sealing certificate ConfigMap %s: %w", d.Name, key, err)
			}
			pemData = []byte(cm.Data[ref.Key])
		default:
			sec := &corev1.Secret{}
			if err := s.Reader.Get(ctx, key, sec); err != nil {
				return nil, "", fmt.Errorf("destination %q: reading sealing certificate Secret %s: %w", d.Name, key, err)
			}
			pemData = sec.Data[ref.Key]
		}
	}
	block, _ := pem.Decode(pemData)
	if block == nil {
		return nil, "", fmt.Errorf("destination %q: spec.sealing holds no PEM certificate", d.Name)
	}
	sum := sha256.Sum256(block.Bytes)
	return pemData, "sha256:" + hex.EncodeToString(sum[:]), nil
}

// inputs returns the seal stage's inputs for a request going to d.
func (s *Sealing) inputs(ctx context.Context, d *v1alpha1.Destination, promise string, obj *unstructured.Unstructured) (map[string][]byte, string, error) {
	cert, fp, err := s.certificate(ctx, d)
	if err != nil || cert == nil {
		return nil, "", err
	}
	if len(s.PlatformKey) == 0 {
		return nil, "", fmt.Errorf("no platform key: the controller cannot fingerprint sealed secrets")
	}
	key, err := seal.DeriveFingerprintKey(s.PlatformKey, promise, obj.GetNamespace(), obj.GetName())
	if err != nil {
		return nil, "", err
	}
	in, err := seal.Inputs(cert, seal.Scope(d.Spec.Sealing.Scope), key)
	if err != nil {
		return nil, "", fmt.Errorf("destination %q: %w", d.Name, err)
	}
	return in, fp, nil
}

// sealingTarget picks the destination whose certificate a request's
// secrets are sealed for before its output is scheduled: where it was
// placed before, else where the promise's own selectors would place it.
// When the pipelines' selectors then send it elsewhere with another
// certificate, the workflow runs once more for that destination.
func (pl *Placer) sealingTarget(ctx context.Context, obj *unstructured.Unstructured, p *v1alpha1.Promise, previous map[string]string) (*v1alpha1.Destination, error) {
	byName, dests, err := pl.destinations(ctx)
	if err != nil {
		return nil, err
	}
	for _, name := range placement(previous).destinations() {
		if d, ok := byName[name]; ok {
			return d, nil
		}
	}
	group := scheduling.Group{Directory: "*"}
	for _, s := range p.Spec.DestinationSelectors {
		group.Selectors = append(group.Selectors, s.MatchLabels)
	}
	got, err := scheduling.One(string(obj.GetUID()), []scheduling.Group{group}, dests, nil)
	if err != nil {
		return nil, nil //nolint:nilerr // no destination yet: scheduling will say so
	}
	return byName[got["*"]], nil
}

// Inputs returns the platform facts a request's pipelines receive under
// input/ when its output goes to dest, and the fingerprint of the sealing
// certificate used ("" for none).
func (pl *Placer) Inputs(ctx context.Context, obj *unstructured.Unstructured, promise string, dest *v1alpha1.Destination) (map[string][]byte, string, error) {
	if dest == nil || pl.Sealing == nil {
		return nil, "", nil
	}
	return pl.Sealing.inputs(ctx, dest, promise, obj)
}

// CertificateFingerprint returns the fingerprint of a destination's
// sealing certificate, "" when it has none.
func (pl *Placer) CertificateFingerprint(ctx context.Context, name string) (string, error) {
	byName, _, err := pl.destinations(ctx)
	if err != nil {
		return "", err
	}
	d, ok := byName[name]
	if !ok || pl.Sealing == nil {
		return "", nil
	}
	_, fp, err := pl.Sealing.certificate(ctx, d)
	return fp, err
}
