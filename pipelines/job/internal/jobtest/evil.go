package jobtest

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// Ways an evil writer breaks the hand-back.
const (
	// EvilEscape hands back, with the run's key, an archive whose entry
	// climbs out of the output folder: what a compromised writer image
	// could do.
	EvilEscape = "escape"
	// EvilForge hands back a well-formed archive without knowing the run's
	// key: what another pod that can create ConfigMaps could do.
	EvilForge = "forge"
)

// EvilWriter stands in for the Job's writer container. It speaks the
// hand-back protocol from the outside, with the protocol's names written
// out here, so a change to them breaks these tests rather than passing
// unnoticed.
func EvilWriter(ctx context.Context, how string) error {
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	name, body := "output/ok.yaml", []byte("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: forged\n")
	if how == EvilEscape {
		name = "output/../../escaped.yaml"
	}
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(body))}); err != nil {
		return err
	}
	if _, err := tw.Write(body); err != nil {
		return err
	}
	if err := tw.Close(); err != nil {
		return err
	}
	if err := gz.Close(); err != nil {
		return err
	}
	key := []byte("not the run's key")
	if how == EvilEscape {
		var err error
		if key, err = os.ReadFile(filepath.Join(os.Getenv("PROMISED_JOB_HANDOFF"), "run-key")); err != nil {
			return err
		}
	}
	m := hmac.New(sha256.New, key)
	m.Write(buf.Bytes())
	cfg, err := rest.InClusterConfig()
	if err != nil {
		return err
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	ns, err := os.ReadFile("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
	if err != nil {
		return err
	}
	_, err = cs.CoreV1().ConfigMaps(strings.TrimSpace(string(ns))).Create(ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{
			Name:        os.Getenv("PROMISED_JOB_NAME") + "-out-0",
			Labels:      map[string]string{"promised.dev/run": os.Getenv("PROMISED_JOB_RUN"), "promised.dev/chunk": "0"},
			Annotations: map[string]string{"job.promised.dev/chunks": "1", "job.promised.dev/mac": hex.EncodeToString(m.Sum(nil))},
		},
		BinaryData: map[string][]byte{"output.tar.gz": buf.Bytes()},
	}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("handing back: %w", err)
	}
	return nil
}
