// Package install_test checks the manifests under config/ the way a cluster
// would: it builds the kustomization, installs everything into a real
// kube-apiserver with server-side apply (so the API server validates every
// object), and runs the real `promised controller` binary with the
// Deployment's arguments under the ServiceAccount's RBAC, as the Deployment
// would, through a promise's whole life.
package install_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// configDir is the kustomization `make deploy` applies.
const configDir = "../../config"

// kustomization is the part of kustomize's format these manifests use.
// Decoding is strict, so a field this test does not implement (a
// namespace: transformer, patches, images) fails here instead of being
// silently ignored and making the test install something else than
// `kubectl apply -k` would.
type kustomization struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Resources  []string `json:"resources"`
}

// build returns the objects of the kustomization in dir, in kustomize's
// resource order, resolving nested kustomizations. Like kustomize's default
// load restrictor, it refuses files outside dir.
func build(dir string) ([]*unstructured.Unstructured, error) {
	data, err := os.ReadFile(filepath.Join(dir, "kustomization.yaml"))
	if err != nil {
		return nil, fmt.Errorf("reading the kustomization: %w", err)
	}
	var k kustomization
	if err := yaml.UnmarshalStrict(data, &k); err != nil {
		return nil, fmt.Errorf("%s/kustomization.yaml: %w", dir, err)
	}
	if k.APIVersion != "kustomize.config.k8s.io/v1beta1" || k.Kind != "Kustomization" {
		return nil, fmt.Errorf("%s/kustomization.yaml: apiVersion %q kind %q", dir, k.APIVersion, k.Kind)
	}
	var objs []*unstructured.Unstructured
	for _, r := range k.Resources {
		p := filepath.Join(dir, r)
		if rel, err := filepath.Rel(dir, p); err != nil || strings.HasPrefix(rel, "..") {
			return nil, fmt.Errorf("%s: resource %s is outside the kustomization's folder, which kustomize refuses", dir, r)
		}
		info, err := os.Stat(p)
		if err != nil {
			return nil, fmt.Errorf("%s: resource %s: %w", dir, r, err)
		}
		var got []*unstructured.Unstructured
		if info.IsDir() {
			got, err = build(p)
		} else {
			got, err = readObjects(p)
		}
		if err != nil {
			return nil, err
		}
		objs = append(objs, got...)
	}
	return objs, nil
}

// readObjects decodes every YAML document of a file, each of which must be
// an object.
func readObjects(path string) ([]*unstructured.Unstructured, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var out []*unstructured.Unstructured
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		u := &unstructured.Unstructured{}
		if err := yaml.UnmarshalStrict(doc, &u.Object); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		if u.Object == nil {
			continue // only comments
		}
		if u.GetAPIVersion() == "" || u.GetKind() == "" || u.GetName() == "" {
			return nil, fmt.Errorf("%s: a document without apiVersion, kind or metadata.name", path)
		}
		out = append(out, u)
	}
	return out, nil
}

func id(u *unstructured.Unstructured) string {
	return fmt.Sprintf("%s %s %s/%s", u.GetAPIVersion(), u.GetKind(), u.GetNamespace(), u.GetName())
}

func TestEveryManifestParses(t *testing.T) {
	err := filepath.WalkDir(configDir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(p, ".yaml") || d.Name() == "kustomization.yaml" {
			return err
		}
		objs, err := readObjects(p)
		require.NoError(t, err)
		require.NotEmpty(t, objs, "%s holds no object", p)
		return nil
	})
	require.NoError(t, err)
}

func TestKustomizationListsEveryCRD(t *testing.T) {
	objs, err := build(configDir)
	require.NoError(t, err)
	installed := map[string]bool{}
	for _, o := range objs {
		if o.GetKind() == "CustomResourceDefinition" {
			installed[o.GetName()] = true
		}
	}
	files, err := filepath.Glob(filepath.Join(configDir, "crd", "*.yaml"))
	require.NoError(t, err)
	require.NotEmpty(t, files)
	for _, f := range files {
		crds, err := readObjects(f)
		require.NoError(t, err)
		for _, c := range crds {
			require.True(t, installed[c.GetName()], "CRD %s (%s) is not in config/kustomization.yaml's resources: add it there", c.GetName(), f)
		}
	}
}

// TestKustomizationMatchesKubectl cross-checks build against kustomize
// itself, where kubectl (which embeds kustomize) is installed.
func TestKustomizationMatchesKubectl(t *testing.T) {
	kubectl, err := exec.LookPath("kubectl")
	if err != nil {
		t.Log("kubectl is not installed: the cross-check against kustomize did not run (TestInstall still installs what build returns)")
		return
	}
	out, err := exec.Command(kubectl, "kustomize", configDir).Output()
	require.NoError(t, err, "kubectl kustomize %s", configDir)
	theirs, err := readObjectsFrom(out)
	require.NoError(t, err)
	ours, err := build(configDir)
	require.NoError(t, err)
	require.Equal(t, ids(theirs), ids(ours))
	byID := map[string]*unstructured.Unstructured{}
	for _, o := range ours {
		byID[id(o)] = o
	}
	for _, o := range theirs {
		require.Equal(t, o.Object, byID[id(o)].Object, "%s differs from kustomize's", id(o))
	}
}

func readObjectsFrom(data []byte) ([]*unstructured.Unstructured, error) {
	f, err := os.CreateTemp("", "kustomized-*.yaml")
	if err != nil {
		return nil, err
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(data); err != nil {
		return nil, err
	}
	if err := f.Close(); err != nil {
		return nil, err
	}
	return readObjects(f.Name())
}

func ids(objs []*unstructured.Unstructured) []string {
	out := make([]string, 0, len(objs))
	for _, o := range objs {
		out = append(out, id(o))
	}
	sort.Strings(out)
	return out
}

// controllerDeployment returns the Deployment of config/, typed.
func controllerDeployment(t *testing.T) *appsv1.Deployment {
	t.Helper()
	objs, err := build(configDir)
	require.NoError(t, err)
	for _, o := range objs {
		if o.GetKind() == "Deployment" && o.GetName() == "promised-controller" {
			d := &appsv1.Deployment{}
			require.NoError(t, runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(o.Object, d, true))
			return d
		}
	}
	t.Fatal("config/ has no Deployment promised-controller")
	return nil
}

// TestDeploymentIsHardened pins what the Deployment promises about itself,
// so that a later edit cannot quietly drop it.
func TestDeploymentIsHardened(t *testing.T) {
	d := controllerDeployment(t)
	require.Equal(t, "promised-system", d.Namespace)
	pod := d.Spec.Template.Spec
	require.Equal(t, "promised-controller", pod.ServiceAccountName)
	require.Len(t, pod.Containers, 1)
	c := pod.Containers[0]
	require.Equal(t, "promised.dev/promised:v0.1.0", c.Image)
	require.Equal(t, "controller", c.Args[0])

	require.NotNil(t, pod.SecurityContext)
	require.True(t, *pod.SecurityContext.RunAsNonRoot)
	require.Equal(t, int64(65532), *pod.SecurityContext.RunAsUser)
	require.Equal(t, corev1.SeccompProfileTypeRuntimeDefault, pod.SecurityContext.SeccompProfile.Type)
	sc := c.SecurityContext
	require.NotNil(t, sc)
	require.True(t, *sc.ReadOnlyRootFilesystem)
	require.False(t, *sc.AllowPrivilegeEscalation)
	require.Equal(t, []corev1.Capability{"ALL"}, sc.Capabilities.Drop)
	require.NotNil(t, c.Resources.Requests.Memory())
	require.False(t, c.Resources.Limits.Memory().IsZero(), "a memory limit")

	require.Equal(t, "/healthz", c.LivenessProbe.HTTPGet.Path)
	require.Equal(t, "/readyz", c.ReadinessProbe.HTTPGet.Path)
	ports := map[string]int32{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	require.Equal(t, int32(8081), ports[c.LivenessProbe.HTTPGet.Port.StrVal])
	require.Equal(t, int32(8081), ports[c.ReadinessProbe.HTTPGet.Port.StrVal])
	require.Equal(t, int32(8080), ports["metrics"])
	require.Contains(t, c.Args, "--health-probe-bind-address=:8081")
	require.Contains(t, c.Args, "--metrics-bind-address=:8080")
	require.Contains(t, c.Args, "--leader-elect")

	// With a read-only root filesystem, every folder the controller writes
	// must be a mounted emptyDir: --state-dir, and /tmp for pipeline
	// workspaces (os.TempDir).
	emptyDirs := map[string]bool{}
	for _, v := range pod.Volumes {
		if v.EmptyDir != nil {
			emptyDirs[v.Name] = true
		}
	}
	writable := func(path string) bool {
		for _, m := range c.VolumeMounts {
			if emptyDirs[m.Name] && !m.ReadOnly && (path == m.MountPath || strings.HasPrefix(path, m.MountPath+"/")) {
				return true
			}
		}
		return false
	}
	var stateDir string
	for _, a := range c.Args {
		if v, ok := strings.CutPrefix(a, "--state-dir="); ok {
			stateDir = v
		}
	}
	require.NotEmpty(t, stateDir, "--state-dir is set: its default is under /tmp")
	require.True(t, writable(stateDir), "--state-dir %s is on a writable emptyDir", stateDir)
	require.True(t, writable("/tmp"), "/tmp is a writable emptyDir (pipeline workspaces)")
}
