package controlplane_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/discovery"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"promised.dev/promised/test/controlplane"
)

// cp is the one control plane every test in this package shares, started by
// TestMain the way other packages' suites start theirs.
var cp *controlplane.ControlPlane

func TestMain(m *testing.M) {
	os.Exit(controlplane.RunTests(m, controlplane.Options{
		CRDDirectoryPaths:     []string{filepath.Join("testdata", "crds")},
		ErrorIfCRDPathMissing: true,
	}, func(c *controlplane.ControlPlane) error {
		cp = c
		return nil
	}))
}

func newClient(t *testing.T) client.Client {
	t.Helper()
	scheme := runtime.NewScheme()
	require.NoError(t, clientgoscheme.AddToScheme(scheme))
	require.NoError(t, apiextensionsv1.AddToScheme(scheme))
	c, err := client.New(cp.Config, client.Options{Scheme: scheme})
	require.NoError(t, err)
	return c
}

func TestServerVersion(t *testing.T) {
	dc, err := discovery.NewDiscoveryClientForConfig(cp.Config)
	require.NoError(t, err)
	info, err := dc.ServerVersion()
	require.NoError(t, err)
	// The version comes from -ldflags in controlplane.mk; without them the
	// server says v0.0.0-master, which clients treat as ancient.
	require.Equal(t, controlplane.Version, info.GitVersion)
	require.Equal(t, "1", info.Major)
	require.Equal(t, "37", info.Minor)
}

func TestEtcdVersion(t *testing.T) {
	out, err := exec.Command(filepath.Join(cp.BinDir, "etcd"), "--version").CombinedOutput()
	require.NoError(t, err, string(out))
	require.Contains(t, string(out), "etcd Version: 3.7.3")
}

func TestCreate500ConfigMaps(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := newClient(t)

	// GenerateName keeps the test repeatable with -count.
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "configmaps-"}}
	require.NoError(t, c.Create(ctx, ns))

	const n = 500
	start := time.Now()
	for i := range n {
		cm := &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("cm-%03d", i), Namespace: ns.Name},
			Data:       map[string]string{"index": fmt.Sprint(i)},
		}
		require.NoError(t, c.Create(ctx, cm))
	}
	elapsed := time.Since(start)
	t.Logf("created %d ConfigMaps one after another in %v (%v each)", n, elapsed.Round(time.Millisecond), (elapsed / n).Round(time.Microsecond))

	var list corev1.ConfigMapList
	require.NoError(t, c.List(ctx, &list, client.InNamespace(ns.Name)))
	// The namespace also gets kube-root-ca.crt only when the
	// controller-manager runs, which envtest does not start; count ours.
	ours := 0
	for _, cm := range list.Items {
		if cm.Data["index"] != "" {
			ours++
		}
	}
	require.Equal(t, n, ours)
}

func TestCRDFromDirectoryIsServed(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := newClient(t)

	var crd apiextensionsv1.CustomResourceDefinition
	require.NoError(t, c.Get(ctx, client.ObjectKey{Name: "gadgets.test.promised.dev"}, &crd))
	require.True(t, established(&crd), "Start returned before the CRD from testdata/crds was Established")
}

func TestCreatedCRDBecomesEstablished(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := newClient(t)

	// A group of its own per run keeps the test repeatable with -count:
	// a deleted CRD lingers while its instances are cleaned up.
	group := fmt.Sprintf("run%d.test.promised.dev", time.Now().UnixNano())
	crd := &apiextensionsv1.CustomResourceDefinition{
		ObjectMeta: metav1.ObjectMeta{Name: "widgets." + group},
		Spec: apiextensionsv1.CustomResourceDefinitionSpec{
			Group: group,
			Names: apiextensionsv1.CustomResourceDefinitionNames{
				Kind: "Widget", ListKind: "WidgetList", Plural: "widgets", Singular: "widget",
			},
			Scope: apiextensionsv1.NamespaceScoped,
			Versions: []apiextensionsv1.CustomResourceDefinitionVersion{{
				Name: "v1alpha1", Served: true, Storage: true,
				Schema: &apiextensionsv1.CustomResourceValidation{
					OpenAPIV3Schema: &apiextensionsv1.JSONSchemaProps{
						Type: "object",
						Properties: map[string]apiextensionsv1.JSONSchemaProps{
							"spec": {Type: "object", Properties: map[string]apiextensionsv1.JSONSchemaProps{
								"color": {Type: "string"},
							}},
						},
					},
				},
			}},
		},
	}
	start := time.Now()
	require.NoError(t, c.Create(ctx, crd))
	require.Eventually(t, func() bool {
		var got apiextensionsv1.CustomResourceDefinition
		return c.Get(ctx, client.ObjectKeyFromObject(crd), &got) == nil && established(&got)
	}, 30*time.Second, 50*time.Millisecond, "CRD %s never became Established", crd.Name)
	t.Logf("CRD %s Established after %v", crd.Name, time.Since(start).Round(time.Millisecond))
}

func TestWriteKubeconfig(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "kubeconfig")
	require.NoError(t, cp.WriteKubeconfig(path))

	info, err := os.Stat(path)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), info.Mode().Perm(), "the kubeconfig holds a private key")

	// Load it the way kubectl does, and use it.
	cfg, err := clientcmd.BuildConfigFromFlags("", path)
	require.NoError(t, err)
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	require.NoError(t, err)
	info2, err := dc.ServerVersion()
	require.NoError(t, err)
	require.Equal(t, controlplane.Version, info2.GitVersion)
}

func TestAddUserHasNoPermissionsByDefault(t *testing.T) {
	cfg, err := cp.AddUser("nobody")
	require.NoError(t, err)
	scheme := runtime.NewScheme()
	require.NoError(t, clientgoscheme.AddToScheme(scheme))
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	require.NoError(t, err)

	var list corev1.ConfigMapList
	err = c.List(context.Background(), &list, client.InNamespace("default"))
	require.True(t, apierrors.IsForbidden(err), "RBAC should deny a user with no roles, got %v", err)
}

func TestBinDirMissingSaysHowToFix(t *testing.T) {
	t.Setenv(controlplane.EnvBinDir, t.TempDir())
	_, err := controlplane.BinDir()
	require.ErrorIs(t, err, controlplane.ErrBinariesMissing)
	require.ErrorContains(t, err, "run `make controlplane` to build kube-apiserver and etcd")

	_, err = controlplane.Start(controlplane.Options{})
	require.ErrorIs(t, err, controlplane.ErrBinariesMissing)
}

func TestBinDirPrefersPromisedVariable(t *testing.T) {
	t.Setenv(controlplane.EnvBinDir, cp.BinDir)
	t.Setenv("KUBEBUILDER_ASSETS", t.TempDir())
	dir, err := controlplane.BinDir()
	require.NoError(t, err)
	require.Equal(t, cp.BinDir, dir)
}

// established reports whether the API server serves the CRD's resource.
func established(crd *apiextensionsv1.CustomResourceDefinition) bool {
	for _, c := range crd.Status.Conditions {
		if c.Type == apiextensionsv1.Established {
			return c.Status == apiextensionsv1.ConditionTrue
		}
	}
	return false
}
