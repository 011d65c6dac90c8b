package kratix_test

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"promised.dev/promised/pipelines/kratix"
)

var update = flag.Bool("update", false, "rewrite the golden files from this run")

// TestGolden converts each testdata/<case>/kratix.yaml and compares the
// output with promised.yaml and the reported findings with findings.txt.
func TestGolden(t *testing.T) {
	cases, err := filepath.Glob("testdata/*/kratix.yaml")
	require.NoError(t, err)
	require.NotEmpty(t, cases)
	for _, in := range cases {
		dir := filepath.Dir(in)
		t.Run(filepath.Base(dir), func(t *testing.T) {
			data, err := os.ReadFile(in)
			require.NoError(t, err)
			res, err := kratix.Convert(data)
			require.NoError(t, err)
			var findings strings.Builder
			for _, n := range res.Notes {
				findings.WriteString("note: " + n.String() + "\n")
			}
			for _, w := range res.Warnings {
				findings.WriteString("warning: " + w.String() + "\n")
			}
			golden(t, filepath.Join(dir, "promised.yaml"), res.YAML)
			golden(t, filepath.Join(dir, "findings.txt"), []byte(findings.String()))
		})
	}
}

func golden(t *testing.T, path string, got []byte) {
	t.Helper()
	if *update {
		require.NoError(t, os.WriteFile(path, got, 0o644))
		return
	}
	want, err := os.ReadFile(path)
	require.NoError(t, err, "run go test ./pipelines/kratix -update to create it")
	require.Equal(t, string(want), string(got), "%s differs (go test ./pipelines/kratix -update rewrites it; review the diff)", path)
}

// TestPostgreSQLCarriesOverWhatRuns checks, beyond the golden file, that
// what makes the pipelines run is kept and every dropped field is named.
func TestPostgreSQLCarriesOverWhatRuns(t *testing.T) {
	data, err := os.ReadFile("testdata/postgresql/kratix.yaml")
	require.NoError(t, err)
	res, err := kratix.Convert(data)
	require.NoError(t, err)
	p := res.Promise

	require.Equal(t, "platform.promised.dev/v1alpha1", p.APIVersion)
	require.Equal(t, "v1.2.0", p.Labels["promised.dev/promise-version"])
	require.NotContains(t, p.Labels, "kratix.io/promise-version")
	require.Equal(t, "data-platform", p.Labels["app.kubernetes.io/part-of"])
	require.Equal(t, "namespace", p.Spec.RequiredPromises[0].Name)
	require.Equal(t, "v0.4.0", p.Spec.RequiredPromises[0].Version)
	require.Equal(t, map[string]string{"environment": "dev"}, p.Spec.DestinationSelectors[0].MatchLabels)
	require.Len(t, p.Spec.Dependencies, 2)
	require.Contains(t, string(p.Spec.API.Raw), "postgresqls.marketplace.kratix.io")

	install := p.Spec.Workflows.Promise.Configure[0]
	require.Equal(t, "platform.promised.dev/v1alpha1", install.APIVersion)
	require.Equal(t, []string{"/bin/sh", "-c"}, install.Spec.Containers[0].Command)
	require.Equal(t, []string{"cp /manifests/*.yaml /kratix/output/"}, install.Spec.Containers[0].Args)

	instance := p.Spec.Workflows.Resource.Configure[0]
	require.Equal(t, "data", instance.Metadata.Labels["team"])
	generate := instance.Spec.Containers[0]
	require.Equal(t, "ghcr.io/example-org/postgres-instance-pipeline:v0.3.0", generate.Image)
	require.Equal(t, "IfNotPresent", generate.ImagePullPolicy)
	require.Equal(t, "BACKUP_BUCKET", generate.Env[0].Name)
	require.Equal(t, "s3://backups/postgres", generate.Env[0].Value)
	require.Len(t, generate.Env, 1, "ADMIN_PASSWORD (valueFrom) is left out, not kept empty")
	perm := instance.Spec.RBAC.Permissions[0]
	require.Equal(t, "postgres-operator", perm.ResourceNamespace)
	require.Equal(t, []string{"get", "list"}, perm.Verbs)
	require.Equal(t, []string{"delete"}, p.Spec.Workflows.Resource.Delete[0].Spec.Containers[0].Args)

	var dropped []string
	for _, w := range res.Warnings {
		dropped = append(dropped, w.Path)
	}
	const pl = "spec.workflows.resource.configure[0].spec."
	require.ElementsMatch(t, []string{
		pl + "imagePullSecrets",
		pl + "rbac.serviceAccount",
		pl + "volumes",
		pl + "containers[0].env[1]",
		pl + "containers[0].volumeMounts",
		pl + "containers[0].securityContext",
		pl + "containers[1].envFrom",
	}, dropped)
	for _, w := range res.Warnings {
		require.NotContains(t, w.Message, "has no such field", "every Kratix field this promise uses has a specific hint: %s", w)
	}
	require.True(t, strings.HasPrefix(string(res.YAML), "# Converted from a Kratix Promise"))
	require.Contains(t, string(res.YAML), "#   "+pl+"volumes: dropped:")
}

func TestNamespaceCarriesOverWhole(t *testing.T) {
	data, err := os.ReadFile("testdata/namespace/kratix.yaml")
	require.NoError(t, err)
	res, err := kratix.Convert(data)
	require.NoError(t, err)
	require.Empty(t, res.Warnings)
	require.Nil(t, res.Promise.Spec.API)
}

func TestRefuses(t *testing.T) {
	for _, tc := range []struct {
		name, in, want string
	}{
		{"not a promise", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n", `kind "ConfigMap"`},
		{"already promised's", "apiVersion: platform.promised.dev/v1alpha1\nkind: Promise\nmetadata:\n  name: x\n", "already a promised Promise"},
		{"another version", "apiVersion: platform.kratix.io/v1beta1\nkind: Promise\nmetadata:\n  name: x\n", `apiVersion "platform.kratix.io/v1beta1"`},
		{"pre-workflows format", "apiVersion: platform.kratix.io/v1alpha1\nkind: Promise\nmetadata:\n  name: x\nspec:\n  xaasCrd: {}\n", "before workflows"},
		{"two documents", "apiVersion: platform.kratix.io/v1alpha1\nkind: Promise\nmetadata:\n  name: x\n---\napiVersion: platform.kratix.io/v1alpha1\nkind: Promise\nmetadata:\n  name: y\n", "found 2"},
		{"no name", "apiVersion: platform.kratix.io/v1alpha1\nkind: Promise\nmetadata: {}\n", "metadata.name is empty"},
		{"invalid API", "apiVersion: platform.kratix.io/v1alpha1\nkind: Promise\nmetadata:\n  name: x\nspec:\n  api:\n    apiVersion: v1\n    kind: ConfigMap\n    metadata:\n      name: x\n", "spec.api"},
		{"not YAML", "{", "not YAML"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := kratix.Convert([]byte(tc.in))
			require.ErrorContains(t, err, tc.want)
		})
	}
}

func TestUnknownFieldsWithoutAHintAreStillReported(t *testing.T) {
	in := `apiVersion: platform.kratix.io/v1alpha1
kind: Promise
metadata:
  name: x
spec:
  healthChecks:
    resource: {}
`
	res, err := kratix.Convert([]byte(in))
	require.NoError(t, err)
	require.Len(t, res.Warnings, 1)
	require.Equal(t, "spec.healthChecks", res.Warnings[0].Path)
	require.Contains(t, res.Warnings[0].Message, "no such field")
}
