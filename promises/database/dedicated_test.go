package database_test

import (
	"bytes"
	"context"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"promised.dev/promised/pipelines/ledger"
	"promised.dev/promised/promises/database"
)

var (
	cnpgOnce   sync.Once
	cnpgClient client.Client
	cnpgErr    error
)

// cnpgAPI returns a client of a real kube-apiserver that serves
// CloudNativePG's Cluster and Database CRDs: server-side applying an
// object there runs the CRDs' OpenAPI schemas and CEL rules exactly as a
// cluster with the operator installed would (minus its webhook).
func cnpgAPI(t *testing.T) client.Client {
	t.Helper()
	crds := cnpgCRDs(t)
	cp := database.ControlPlane(t)
	cnpgOnce.Do(func() {
		if _, cnpgErr = envtest.InstallCRDs(cp.Config, envtest.CRDInstallOptions{CRDs: crds}); cnpgErr != nil {
			return
		}
		cnpgClient, cnpgErr = client.New(cp.Config, client.Options{})
	})
	require.NoError(t, cnpgErr)
	return cnpgClient
}

// applyDryRun server-side applies obj without storing it. Server-side
// apply refuses fields the schema does not declare, so a misspelt field
// fails here rather than being pruned silently on the destination.
func applyDryRun(ctx context.Context, c client.Client, obj *unstructured.Unstructured) error {
	return c.Apply(ctx, client.ApplyConfigurationFromUnstructured(obj), client.FieldOwner("promised"), client.ForceOwnership, client.DryRunAll)
}

func documents(t *testing.T, data []byte) []*unstructured.Unstructured {
	t.Helper()
	var out []*unstructured.Unstructured
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	for {
		u := &unstructured.Unstructured{}
		if err := dec.Decode(&u.Object); err != nil {
			break
		}
		if len(u.Object) > 0 {
			out = append(out, u)
		}
	}
	return out
}

func TestDedicatedClusterIsValidCloudNativePG(t *testing.T) {
	ctx := context.Background()
	api := cnpgAPI(t)
	require.NoError(t, client.IgnoreAlreadyExists(api.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "analytics"}})))
	p := newPlatform(t, serverOf(database.SharedServer()))

	for _, tc := range []struct {
		name string
		spec map[string]any
	}{
		{"defaults", map[string]any{"plan": "dedicated", "databaseName": "warehouse", "secretName": "warehouse-db"}},
		{"everything set", map[string]any{
			"plan": "dedicated", "databaseName": "events_2024", "secretName": "events-db", "deletionPolicy": "Delete",
			"connectionLimit": int64(50), "extensions": []any{"pg_trgm", "vector", "uuid-ossp"},
			"dedicated": map[string]any{"instances": int64(3), "storage": "50Gi", "version": "16"},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			obj := request("analytics", "wh-"+tc.spec["secretName"].(string), tc.spec)
			res, err := p.configure(obj, nil)
			require.NoError(t, err)
			files := res.Files()
			docs := documents(t, files["configure/"+database.ClusterFile])
			require.Len(t, docs, 2)
			require.Equal(t, "Cluster", docs[0].GetKind())
			require.Equal(t, "Database", docs[1].GetKind())
			for _, d := range docs {
				require.NoError(t, applyDryRun(ctx, api, d), "%s %s is refused by CloudNativePG's CRD", d.GetKind(), d.GetName())
			}

			spec := tc.spec
			db := spec["databaseName"].(string)
			cluster := docs[0]
			owner, _, _ := unstructured.NestedString(cluster.Object, "spec", "bootstrap", "initdb", "owner")
			require.Equal(t, db, owner)
			secretName, _, _ := unstructured.NestedString(cluster.Object, "spec", "bootstrap", "initdb", "secret", "name")
			require.Equal(t, obj.GetName()+"-owner", secretName)
			retain := spec["deletionPolicy"] != "Delete"
			require.Equal(t, retain, cluster.GetAnnotations()["kustomize.toolkit.fluxcd.io/prune"] == "disabled")
			require.Equal(t, retain, cluster.GetAnnotations()["argocd.argoproj.io/sync-options"] == "Prune=false")

			// The owner's Secret is basic-auth, sealed, and holds the
			// ledger's password, as does the workload's.
			ownerData := p.unseal(files, "configure/"+database.OwnerCredentialsFile)
			require.Equal(t, db, string(ownerData["username"]))
			require.Equal(t, p.password(obj), string(ownerData["password"]))
			require.Contains(t, string(files["configure/"+database.OwnerCredentialsFile]), "type: kubernetes.io/basic-auth")
			creds := p.credentials(files)
			require.Equal(t, p.password(obj), string(creds["password"]))
			require.Equal(t, obj.GetName()+"-rw.analytics.svc", string(creds["host"]))
			requireNoPlaintext(t, []string{p.password(obj)}, res, nil)

			// Re-runs are byte-identical; the annotation rotates once.
			for range 10 {
				again, err := p.configure(obj, files)
				require.NoError(t, err)
				require.Equal(t, files, again.Files())
			}
			rotated := obj.DeepCopy()
			rotated.SetAnnotations(map[string]string{ledger.RotateAnnotation: "now"})
			r1, err := p.configure(rotated, files)
			require.NoError(t, err)
			r2, err := p.configure(rotated, r1.Files())
			require.NoError(t, err)
			require.Equal(t, r1.Files(), r2.Files())
			require.Equal(t, files["configure/"+database.ClusterFile], r1.Files()["configure/"+database.ClusterFile], "rotation leaves the Cluster as it is")
			require.NotEqual(t, files["configure/"+database.OwnerCredentialsFile], r1.Files()["configure/"+database.OwnerCredentialsFile])
			require.Equal(t, string(p.unseal(r1.Files(), "configure/"+database.OwnerCredentialsFile)["password"]), string(p.credentials(r1.Files())["password"]))
		})
	}
}

// TestCloudNativePGSchemaBites makes sure the check above can fail: the
// CRDs refuse a Cluster with a misspelt field and one breaking a CEL rule.
func TestCloudNativePGSchemaBites(t *testing.T) {
	ctx := context.Background()
	api := cnpgAPI(t)
	bad := func(spec map[string]any) *unstructured.Unstructured {
		return &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "postgresql.cnpg.io/v1", "kind": "Cluster",
			"metadata": map[string]any{"name": "bad", "namespace": "default"}, "spec": spec,
		}}
	}
	err := applyDryRun(ctx, api, bad(map[string]any{"instances": int64(1), "storage": map[string]any{"sise": "1Gi"}}))
	require.ErrorContains(t, err, "sise")
	err = applyDryRun(ctx, api, bad(map[string]any{
		"instances": int64(1), "storage": map[string]any{"size": "1Gi"},
		"imageName": "x", "imageCatalogRef": map[string]any{"apiGroup": "postgresql.cnpg.io", "kind": "ImageCatalog", "name": "c", "major": int64(16)},
	}))
	require.Error(t, err, "imageName and imageCatalogRef are exclusive (a CEL rule)")
}

func TestDedicatedRefusesNamesCloudNativePGCannotUse(t *testing.T) {
	p := newPlatform(t, serverOf(database.SharedServer()))
	_, err := p.configure(request("analytics", "a-very-long-request-name-that-cloudnativepg-refuses-x", map[string]any{
		"plan": "dedicated", "databaseName": "x", "secretName": "s"}), nil)
	require.ErrorContains(t, err, "at most 50")
	_, err = p.configure(request("analytics", "wh", map[string]any{"plan": "dedicated", "databaseName": "x", "secretName": "wh-app"}), nil)
	require.ErrorContains(t, err, `spec.secretName "wh-app" is a Secret CloudNativePG or this promise makes`)
}

func TestDedicatedDelete(t *testing.T) {
	p := newPlatform(t, serverOf(database.SharedServer()))
	keep := request("analytics", "kept", map[string]any{"plan": "dedicated", "databaseName": "kept", "secretName": "kept-db"})
	res, err := p.configure(keep, nil)
	require.NoError(t, err)
	d, err := p.delete(keep, res.Files())
	require.NoError(t, err)
	require.Contains(t, d.Status["message"], "deletionPolicy Retain: CloudNativePG cluster kept and its volumes stay")
	require.NotEmpty(t, p.ledgerKeys(keep))

	gone := request("analytics", "gone", map[string]any{"plan": "dedicated", "databaseName": "gone", "secretName": "gone-db", "deletionPolicy": "Delete"})
	res, err = p.configure(gone, nil)
	require.NoError(t, err)
	d, err = p.delete(gone, res.Files())
	require.NoError(t, err)
	require.Contains(t, d.Status["message"], "deletionPolicy Delete: CloudNativePG cluster gone and its volumes are deleted")
	require.Empty(t, p.ledgerKeys(gone))
}
