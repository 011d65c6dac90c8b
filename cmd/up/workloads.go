package up

import (
	"context"
	"crypto/rsa"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	ssv1alpha1 "github.com/bitnami/sealed-secrets/pkg/apis/sealedsecrets/v1alpha1"
	sscrypto "github.com/bitnami/sealed-secrets/pkg/crypto"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"
)

// workloadCRDs are what a real workload cluster of this platform would
// already run: the Gateway API (standard channel) that ApiAggregator routes
// need, and the SealedSecret CRD of its sealed-secrets controller. They
// are read from the Go module cache, from the modules of the repository's
// go.mod.
var workloadCRDs = []struct{ module, dir string }{
	{"sigs.k8s.io/gateway-api", "config/crd/standard"},
	{"github.com/bitnami/sealed-secrets", "helm/sealed-secrets/crds"},
}

// moduleDir returns where a module of the repository's go.mod sits in the
// module cache (downloading it if needed).
func (p *Platform) moduleDir(path string) (string, error) {
	cmd := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", path)
	cmd.Dir = p.opts.Root
	out, err := cmd.Output()
	if err != nil || strings.TrimSpace(string(out)) == "" {
		return "", fmt.Errorf("finding module %s with `go list -m` in %s: %v", path, p.opts.Root, err)
	}
	return strings.TrimSpace(string(out)), nil
}

// installWorkloadCRDs installs the workload clusters' CRDs.
func (p *Platform) installWorkloadCRDs(ctx context.Context) error {
	var crds []*apiextensionsv1.CustomResourceDefinition
	for _, src := range workloadCRDs {
		dir, err := p.moduleDir(src.module)
		if err != nil {
			return err
		}
		files, _ := filepath.Glob(filepath.Join(dir, src.dir, "*.yaml"))
		for _, f := range files {
			data, err := os.ReadFile(f)
			if err != nil {
				return fmt.Errorf("reading %s: %w", f, err)
			}
			crd := &apiextensionsv1.CustomResourceDefinition{}
			if err := yaml.Unmarshal(data, crd); err != nil || crd.Kind != "CustomResourceDefinition" {
				continue // not a CRD (a ValidatingAdmissionPolicy, say)
			}
			crds = append(crds, crd)
		}
	}
	for _, w := range workloads {
		c, err := p.workloadClient(w.name)
		if err != nil {
			return err
		}
		for _, crd := range crds {
			if err := apply(ctx, c, crd.DeepCopy()); err != nil {
				return err
			}
		}
	}
	p.say("dev and prod run the Gateway API and SealedSecret CRDs (%d CRDs)", len(crds))
	return nil
}

func (p *Platform) workloadClient(name string) (client.Client, error) {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{scheme.AddToScheme, apiextensionsv1.AddToScheme} {
		if err := add(s); err != nil {
			return nil, err
		}
	}
	c, err := client.New(p.planes[name].Config, client.Options{Scheme: s})
	if err != nil {
		return nil, fmt.Errorf("connecting to the %s cluster: %w", name, err)
	}
	return c, nil
}

// startUnsealers plays each workload cluster's sealed-secrets controller:
// every SealedSecret synced from Git becomes the Secret the workload
// mounts, opened with that cluster's own key.
func (p *Platform) startUnsealers(context.Context) error {
	for _, w := range workloads {
		c, err := p.workloadClient(w.name)
		if err != nil {
			return err
		}
		key := p.keys[w.name]
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			defer close(done)
			for {
				_ = unsealAll(ctx, c, key.priv)
				select {
				case <-ctx.Done():
					return
				case <-time.After(time.Second):
				}
			}
		}()
		p.stop = append(p.stop, func() { cancel(); <-done })
	}
	return nil
}

func unsealAll(ctx context.Context, c client.Client, priv *rsa.PrivateKey) error {
	list := &unstructured.UnstructuredList{}
	list.SetAPIVersion("bitnami.com/v1alpha1")
	list.SetKind("SealedSecretList")
	if err := c.List(ctx, list); err != nil {
		return err
	}
	fp, err := sscrypto.PublicKeyFingerprint(&priv.PublicKey)
	if err != nil {
		return err
	}
	for _, item := range list.Items {
		raw, err := json.Marshal(item.Object)
		if err != nil {
			continue
		}
		ss := &ssv1alpha1.SealedSecret{}
		if json.Unmarshal(raw, ss) != nil {
			continue
		}
		sec, err := ss.Unseal(scheme.Codecs, map[string]*rsa.PrivateKey{fp: priv})
		if err != nil {
			continue
		}
		existing := &corev1.Secret{}
		err = c.Get(ctx, client.ObjectKeyFromObject(sec), existing)
		switch {
		case apierrors.IsNotFound(err):
			sec.ResourceVersion = ""
			_ = c.Create(ctx, sec)
		case err == nil && !equalData(existing.Data, sec.Data):
			existing.Data = sec.Data
			_ = c.Update(ctx, existing)
		}
	}
	return nil
}

func equalData(a, b map[string][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if string(b[k]) != string(v) {
			return false
		}
	}
	return true
}

// ensureWorkloadNamespaces creates the example requests' namespaces on the
// workload clusters too, as the namespaces where teams run their services
// exist there.
func (p *Platform) ensureWorkloadNamespaces(ctx context.Context, names []string) error {
	for _, w := range workloads {
		c, err := p.workloadClient(w.name)
		if err != nil {
			return err
		}
		for _, n := range names {
			ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: n}}
			if err := c.Create(ctx, ns); err != nil && !apierrors.IsAlreadyExists(err) {
				return fmt.Errorf("creating namespace %s on %s: %w", n, w.name, err)
			}
		}
	}
	return nil
}
