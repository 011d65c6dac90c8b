package controller

import (
	"context"
	"crypto/rand"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"promised.dev/promised/pipelines/seal"
)

// PlatformKeySecret is the Secret (in the platform namespace) holding the
// key that fingerprints sealed secrets, under the key "key".
const PlatformKeySecret = "promised-platform-key"

// PlatformKeyFromSecret returns the platform key, creating it on first
// use. Every replica reads the same Secret, so they fingerprint alike;
// replacing it re-seals every secret once.
func PlatformKeyFromSecret(ctx context.Context, c client.Client, namespace string) ([]byte, error) {
	sec := &corev1.Secret{}
	key := client.ObjectKey{Namespace: namespace, Name: PlatformKeySecret}
	err := c.Get(ctx, key, sec)
	if apierrors.IsNotFound(err) {
		material := make([]byte, 32)
		if _, err := rand.Read(material); err != nil {
			return nil, fmt.Errorf("generating the platform key: %w", err)
		}
		sec = &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: PlatformKeySecret, Namespace: namespace},
			Data: map[string][]byte{"key": material}}
		if err := c.Create(ctx, sec); err != nil && !apierrors.IsAlreadyExists(err) {
			return nil, fmt.Errorf("creating Secret %s: %w", key, err)
		}
		if err == nil {
			return material, nil
		}
		err = c.Get(ctx, key, sec)
	}
	if err != nil {
		return nil, fmt.Errorf("reading Secret %s: %w", key, err)
	}
	if len(sec.Data["key"]) < seal.MinKeyBytes {
		return nil, fmt.Errorf("Secret %s: key %q holds %d bytes, want at least %d", key, "key", len(sec.Data["key"]), seal.MinKeyBytes)
	}
	return sec.Data["key"], nil
}
