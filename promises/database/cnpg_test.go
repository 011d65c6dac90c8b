package database_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"sigs.k8s.io/yaml"
)

// CloudNativePG's CRDs are read from its Go module, at a pinned version,
// rather than copied into this repository: `go mod download` fetches the
// module through the module proxy and checks it against the checksum
// database, and the module cache keeps it for offline runs. The module is
// never added to go.mod (the download runs in a scratch module), so it
// does not enter the build. The pins below make a changed file fail
// loudly instead of silently testing against another schema.
const (
	cnpgModule  = "github.com/cloudnative-pg/cloudnative-pg"
	cnpgVersion = "v1.27.0"
	// cnpgModuleSum is the module's go.sum hash, as sum.golang.org has it.
	cnpgModuleSum = "h1:mp0zlYO4vKAJmQdArWORWKr1lmB4Hj8JeBQGX5RBnpg="
)

// cnpgCRDFiles are the CRDs the dedicated plan renders objects of, with
// the SHA-256 of each file at cnpgVersion.
var cnpgCRDFiles = map[string]string{
	"config/crd/bases/postgresql.cnpg.io_clusters.yaml":  "ee19cb5b0fe9dacb4e6fc387b6171b95a078d48e970225bdc285cab7f2a482d2",
	"config/crd/bases/postgresql.cnpg.io_databases.yaml": "a7875a8474b6219652d83027d9937937d212e791065a5b23e4558122b49051a2",
}

// cnpgCRDs returns CloudNativePG's Cluster and Database CRDs.
func cnpgCRDs(t testing.TB) []*apiextensionsv1.CustomResourceDefinition {
	t.Helper()
	goBin, err := exec.LookPath("go")
	require.NoError(t, err, "the go command downloads CloudNativePG's module")
	scratch := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(scratch, "go.mod"), []byte("module scratch\n\ngo 1.24\n"), 0o644))
	cmd := exec.Command(goBin, "mod", "download", "-json", cnpgModule+"@"+cnpgVersion)
	cmd.Dir = scratch
	// -mod=mod lets the scratch module record nothing and still resolve;
	// GOWORK=off keeps a go.work of the developer's out of it.
	cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod", "GOWORK=off")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	require.NoError(t, err, "downloading %s@%s through the module proxy (run it once online to fill the module cache): %s", cnpgModule, cnpgVersion, stderr.String())
	var mod struct{ Dir, Sum, Error string }
	require.NoError(t, json.Unmarshal(out, &mod))
	require.Empty(t, mod.Error)
	require.Equal(t, cnpgModuleSum, mod.Sum, "CloudNativePG's module is not the one pinned")

	var crds []*apiextensionsv1.CustomResourceDefinition
	for file, sum := range cnpgCRDFiles {
		data, err := os.ReadFile(filepath.Join(mod.Dir, filepath.FromSlash(file)))
		require.NoError(t, err)
		got := sha256.Sum256(data)
		require.Equal(t, sum, hex.EncodeToString(got[:]), "%s in the module cache differs from the pinned file", file)
		crd := &apiextensionsv1.CustomResourceDefinition{}
		require.NoError(t, yaml.Unmarshal(data, crd), file)
		crds = append(crds, crd)
	}
	return crds
}
