package up

import (
	"bytes"
	"context"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	sscrypto "github.com/bitnami/sealed-secrets/pkg/crypto"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"promised.dev/promised/api/v1alpha1"
	crdfiles "promised.dev/promised/config/crd"
)

// platformNamespace holds the platform's own objects.
const platformNamespace = "promised-system"

// storeName is the local GitStateStore.
const storeName = "local"

// promisedCRDs reads the API's CRDs embedded in the binary.
func promisedCRDs() ([]*apiextensionsv1.CustomResourceDefinition, error) {
	var out []*apiextensionsv1.CustomResourceDefinition
	err := fs.WalkDir(crdfiles.FS, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || filepath.Ext(p) != ".yaml" {
			return err
		}
		data, err := crdfiles.FS.ReadFile(p)
		if err != nil {
			return err
		}
		crd := &apiextensionsv1.CustomResourceDefinition{}
		if err := yaml.UnmarshalStrict(data, crd); err != nil {
			return fmt.Errorf("CRD %s: %w", p, err)
		}
		out = append(out, crd)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reading promised's CRDs: %w", err)
	}
	return out, nil
}

func ensureNamespace(ctx context.Context, c client.Client, name string) error {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if err := c.Create(ctx, ns); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating namespace %s: %w", name, err)
	}
	return nil
}

// apply creates obj, or updates it to obj when it exists, keeping the
// finalizers the controller added (it may be updating it meanwhile: a
// conflict is retried on the fresh object).
func apply(ctx context.Context, c client.Client, obj client.Object) error {
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		existing := obj.DeepCopyObject().(client.Object)
		err := c.Get(ctx, client.ObjectKeyFromObject(obj), existing)
		switch {
		case apierrors.IsNotFound(err):
			return c.Create(ctx, obj)
		case err != nil:
			return err
		}
		desired := obj.DeepCopyObject().(client.Object)
		desired.SetResourceVersion(existing.GetResourceVersion())
		desired.SetFinalizers(existing.GetFinalizers())
		return c.Update(ctx, desired)
	})
	if err != nil {
		return fmt.Errorf("applying %T %s: %w", obj, obj.GetName(), err)
	}
	return nil
}

// register creates the state store and the two destinations, each with
// the sealing certificate of its cluster.
func (p *Platform) register(ctx context.Context) error {
	sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "git-credentials", Namespace: platformNamespace},
		Data: map[string][]byte{"username": []byte(p.gitCreds[0]), "password": []byte(p.gitCreds[1])}}
	if err := apply(ctx, p.client, sec); err != nil {
		return err
	}
	store := &v1alpha1.GitStateStore{ObjectMeta: metav1.ObjectMeta{Name: storeName}, Spec: v1alpha1.GitStateStoreSpec{
		URL: p.git.URL("state.git"), Branch: "main", AuthMethod: v1alpha1.AuthBasic,
		SecretRef: &v1alpha1.SecretReference{Name: sec.Name, Namespace: sec.Namespace},
	}}
	if err := apply(ctx, p.client, store); err != nil {
		return err
	}
	for _, w := range workloads {
		key, err := p.sealingKey(w.name)
		if err != nil {
			return err
		}
		p.keys[w.name] = key
		d := &v1alpha1.Destination{
			ObjectMeta: metav1.ObjectMeta{Name: w.name, Labels: map[string]string{"environment": w.env}},
			Spec: v1alpha1.DestinationSpec{
				StateStoreRef: v1alpha1.StateStoreRef{Kind: "GitStateStore", Name: storeName},
				Path:          w.name,
				Sealing:       &v1alpha1.Sealing{CertificatePEM: string(key.certPEM)},
			},
		}
		if err := apply(ctx, p.client, d); err != nil {
			return err
		}
	}
	return p.waitDestinationsReady(ctx)
}

func (p *Platform) waitDestinationsReady(ctx context.Context) error {
	deadline := time.Now().Add(time.Minute)
	for {
		ready := 0
		for _, w := range workloads {
			d := &v1alpha1.Destination{}
			if err := p.client.Get(ctx, client.ObjectKey{Name: w.name}, d); err == nil && condTrue(d.Status.Conditions, "Ready") {
				ready++
			}
		}
		if ready == len(workloads) {
			p.say("destinations dev and prod are Ready")
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the destinations did not become Ready within a minute: see `kubectl --kubeconfig %s get destinations -o yaml`", p.path("platform.kubeconfig"))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func condTrue(conds []metav1.Condition, t string) bool {
	for _, c := range conds {
		if c.Type == t {
			return c.Status == metav1.ConditionTrue
		}
	}
	return false
}

// sealingKey is a workload cluster's sealed-secrets key pair: the
// certificate goes to its Destination, the private key opens what was
// sealed for it.
type sealingKey struct {
	priv    *rsa.PrivateKey
	certPEM []byte
}

// sealingKey loads (or makes, the first time) a cluster's sealing key,
// kept in the state folder as a sealed-secrets controller keeps it in its
// cluster.
func (p *Platform) sealingKey(name string) (sealingKey, error) {
	keyPath, certPath := p.path(name, "sealing.key"), p.path(name, "sealing.crt")
	if keyPEM, err := os.ReadFile(keyPath); err == nil {
		certPEM, err := os.ReadFile(certPath)
		if err != nil {
			return sealingKey{}, fmt.Errorf("reading %s: %w", certPath, err)
		}
		block, _ := pem.Decode(keyPEM)
		if block == nil {
			return sealingKey{}, fmt.Errorf("%s holds no PEM key: remove it to make a new one", keyPath)
		}
		priv, err := x509.ParsePKCS1PrivateKey(block.Bytes)
		if err != nil {
			return sealingKey{}, fmt.Errorf("parsing %s: %w", keyPath, err)
		}
		return sealingKey{priv: priv, certPEM: certPEM}, nil
	}
	priv, cert, err := sscrypto.GeneratePrivateKeyAndCert(2048, 10*365*24*time.Hour, "sealed-secrets-"+name)
	if err != nil {
		return sealingKey{}, fmt.Errorf("generating the %s sealing key: %w", name, err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(priv)})
	if err := os.WriteFile(keyPath, keyPEM, 0o600); err != nil {
		return sealingKey{}, fmt.Errorf("writing %s: %w", keyPath, err)
	}
	if err := os.WriteFile(certPath, certPEM, 0o644); err != nil {
		return sealingKey{}, fmt.Errorf("writing %s: %w", certPath, err)
	}
	return sealingKey{priv: priv, certPEM: bytes.Clone(certPEM)}, nil
}
