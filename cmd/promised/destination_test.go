package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"promised.dev/promised/api/v1alpha1"
)

// goldenTarget is the destination the golden files describe; the envtest
// test below creates the same one on the platform.
var goldenTarget = pullTarget{Destination: "golden-dev", URL: "https://git.example.invalid/platform/state.git", Branch: "main", Folder: "platform/golden-dev"}

func TestRenderPullerManifests(t *testing.T) {
	flux, err := renderFlux(goldenTarget, pullerOptions{Namespace: "flux-system", SecretName: "state-store-git", Interval: time.Minute})
	require.NoError(t, err)
	assertGolden(t, "flux.golden", flux)
	argo, err := renderArgoCD(goldenTarget, pullerOptions{Namespace: "argocd"}, "default", "https://kubernetes.default.svc")
	require.NoError(t, err)
	assertGolden(t, "argocd.golden", argo)

	// Every document is a well-formed object.
	for _, doc := range [][]byte{flux, argo} {
		for _, part := range splitDocs(doc) {
			var obj map[string]any
			require.NoError(t, yaml.Unmarshal(part, &obj))
			require.NotEmpty(t, obj["apiVersion"])
			require.NotEmpty(t, obj["kind"])
		}
	}

	// Without a Secret name there is no secretRef, and names and
	// intervals follow the options.
	flux, err = renderFlux(pullTarget{Destination: "d", URL: "u", Branch: "b", Folder: "d"}, pullerOptions{Name: "pull-d", Namespace: "ns", Interval: 30 * time.Second})
	require.NoError(t, err)
	require.NotContains(t, string(flux), "secretRef")
	require.Contains(t, string(flux), "path: ./d\n")
	require.Contains(t, string(flux), "interval: 30s\n")
	require.Contains(t, string(flux), "name: pull-d\n")
}

func TestPullTargetOf(t *testing.T) {
	store := &v1alpha1.GitStateStore{Spec: v1alpha1.GitStateStoreSpec{URL: "https://g/s.git", Path: "platform"}}
	d := &v1alpha1.Destination{ObjectMeta: metav1.ObjectMeta{Name: "dev"}}
	got, err := pullTargetOf(d, store)
	require.NoError(t, err)
	require.Equal(t, pullTarget{Destination: "dev", URL: "https://g/s.git", Branch: "main", Folder: "platform/dev"}, got)

	d.Spec.Path = "clusters/eu/dev"
	store.Spec.Path, store.Spec.Branch = "", "live"
	got, err = pullTargetOf(d, store)
	require.NoError(t, err)
	require.Equal(t, pullTarget{Destination: "dev", URL: "https://g/s.git", Branch: "live", Folder: "clusters/eu/dev"}, got)

	d.Spec.Path = "../other"
	_, err = pullTargetOf(d, store)
	require.ErrorContains(t, err, `invalid destination path "../other"`)
}

func TestDestinationManifestsCommand(t *testing.T) {
	ctx := context.Background()
	require.NoError(t, k8s.Create(ctx, &v1alpha1.GitStateStore{ObjectMeta: metav1.ObjectMeta{Name: "golden-store"},
		Spec: v1alpha1.GitStateStoreSpec{URL: goldenTarget.URL, Branch: "main", Path: "platform"}}))
	require.NoError(t, k8s.Create(ctx, &v1alpha1.Destination{ObjectMeta: metav1.ObjectMeta{Name: goldenTarget.Destination},
		Spec: v1alpha1.DestinationSpec{StateStoreRef: v1alpha1.StateStoreRef{Kind: "GitStateStore", Name: "golden-store"}}}))

	out, _, err := runCLI(t, "destination", "manifests", goldenTarget.Destination, "--flux", "--secret-name", "state-store-git", "--kubeconfig", kubeconfig)
	require.NoError(t, err)
	t.Logf("promised destination manifests --flux:\n%s", out)
	assertGolden(t, "flux.golden", []byte(out))
	out, _, err = runCLI(t, "destination", "manifests", goldenTarget.Destination, "--argocd", "--kubeconfig", kubeconfig)
	require.NoError(t, err)
	assertGolden(t, "argocd.golden", []byte(out))

	_, _, err = runCLI(t, "destination", "manifests", goldenTarget.Destination, "--kubeconfig", kubeconfig)
	require.EqualError(t, err, "choose one of --flux and --argocd")
	_, _, err = runCLI(t, "destination", "manifests", goldenTarget.Destination, "--argocd", "--secret-name", "x", "--kubeconfig", kubeconfig)
	require.ErrorContains(t, err, "--secret-name is for --flux")
	_, _, err = runCLI(t, "destination", "manifests", "nowhere", "--flux", "--kubeconfig", kubeconfig)
	require.ErrorContains(t, err, `reading Destination "nowhere"`)
}

func splitDocs(b []byte) [][]byte {
	var out [][]byte
	for _, part := range strings.Split(string(b), "\n---\n") {
		out = append(out, []byte(part))
	}
	return out
}
