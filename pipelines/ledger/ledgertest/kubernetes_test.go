package ledgertest_test

import (
	"context"
	"fmt"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"promised.dev/promised/pipelines/ledger"
	"promised.dev/promised/pipelines/ledger/ledgertest"
	"promised.dev/promised/test/controlplane"
)

var cp *controlplane.ControlPlane

func TestMain(m *testing.M) {
	os.Exit(controlplane.RunTests(m, controlplane.Options{CRDs: []*apiextensionsv1.CustomResourceDefinition{
		requestCRD("NatsAccount", "natsaccounts", apiextensionsv1.NamespaceScoped),
		requestCRD("NatsCluster", "natsclusters", apiextensionsv1.ClusterScoped),
	}}, func(c *controlplane.ControlPlane) error { cp = c; return nil }))
}

// requestCRD is a promise's API, for requests that own ledger entries.
func requestCRD(kind, plural string, scope apiextensionsv1.ResourceScope) *apiextensionsv1.CustomResourceDefinition {
	preserve := true
	return &apiextensionsv1.CustomResourceDefinition{
		ObjectMeta: metav1.ObjectMeta{Name: plural + ".example.promised.dev"},
		Spec: apiextensionsv1.CustomResourceDefinitionSpec{
			Group: "example.promised.dev",
			Names: apiextensionsv1.CustomResourceDefinitionNames{Kind: kind, ListKind: kind + "List", Plural: plural, Singular: plural[:len(plural)-1]},
			Scope: scope,
			Versions: []apiextensionsv1.CustomResourceDefinitionVersion{{
				Name: "v1", Served: true, Storage: true,
				Schema: &apiextensionsv1.CustomResourceValidation{OpenAPIV3Schema: &apiextensionsv1.JSONSchemaProps{
					Type: "object", XPreserveUnknownFields: &preserve,
				}},
			}},
		},
	}
}

func adminClient(t *testing.T) client.Client {
	t.Helper()
	c, err := client.New(cp.Config, client.Options{})
	require.NoError(t, err)
	return c
}

var seq atomic.Int64

func newNamespace(t *testing.T, admin client.Client) string {
	t.Helper()
	ns := fmt.Sprintf("ledger-%d", seq.Add(1))
	require.NoError(t, admin.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}))
	return ns
}

// newRequest creates a request in the API server, so entries are owned by
// an object with a real UID.
func newRequest(t *testing.T, admin client.Client, kind, namespace string) ledger.Owner {
	t.Helper()
	u := &unstructured.Unstructured{}
	u.SetAPIVersion("example.promised.dev/v1")
	u.SetKind(kind)
	u.SetNamespace(namespace)
	u.SetName(fmt.Sprintf("req-%d", seq.Add(1)))
	require.NoError(t, admin.Create(context.Background(), u))
	return ledger.OwnerFromObject("nats", u)
}

// ledgerUser returns a client for a user granted only the verbs the
// Kubernetes ledger documents, so the suite proves they are enough.
func ledgerUser(t *testing.T, admin client.Client) client.Client {
	t.Helper()
	ctx := context.Background()
	name := fmt.Sprintf("promised-ledger-%d", seq.Add(1))
	require.NoError(t, admin.Create(ctx, &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Rules:      []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"get", "list", "create", "update", "delete"}}},
	}))
	require.NoError(t, admin.Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: name},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: name}},
	}))
	cfg, err := cp.AddUser(name)
	require.NoError(t, err)
	c, err := client.New(cfg, client.Options{})
	require.NoError(t, err)
	// RBAC reaches the authorizer through an informer: wait for it.
	require.Eventually(t, func() bool {
		return c.List(ctx, &corev1.SecretList{}, client.InNamespace("default")) == nil
	}, 30*time.Second, 100*time.Millisecond)
	return c
}

func TestKubernetes(t *testing.T) {
	admin := adminClient(t)
	ns := newNamespace(t, admin)
	user := ledgerUser(t, admin)
	// Reads and writes go straight to the API server, as with the
	// manager's API reader.
	l := &ledger.Kubernetes{Client: user, Reader: user, Namespace: "promised-system"}
	ledgertest.Run(t, ledgertest.Setup{Ledger: l, NewOwner: func(t *testing.T) ledger.Owner {
		return newRequest(t, admin, "NatsAccount", ns)
	}})
}

func TestKubernetesSecretShape(t *testing.T) {
	ctx := context.Background()
	admin := adminClient(t)
	ns := newNamespace(t, admin)
	l := &ledger.Kubernetes{Client: admin}
	owner := newRequest(t, admin, "NatsAccount", ns)
	key := ledger.Key{Owner: owner, Credential: "nats"}
	got, err := ledger.Obtain(ctx, l, key, ledger.Policy{TTL: time.Hour, RotateBefore: time.Minute, Meaning: "pub:>"}, time.Now(),
		func(context.Context) (ledger.Entry, error) {
			return ledger.Entry{ID: "UABC", Data: map[string][]byte{"password": []byte("hunter2")}}, nil
		})
	require.NoError(t, err)

	var s corev1.Secret
	require.NoError(t, admin.Get(ctx, client.ObjectKey{Namespace: ns, Name: ledger.SecretName(key)}, &s))
	require.Equal(t, ns, s.Namespace, "in the request's namespace, so the owner reference is honoured")
	require.Equal(t, ledger.SecretType, s.Type)
	require.Equal(t, []metav1.OwnerReference{{APIVersion: "example.promised.dev/v1", Kind: "NatsAccount", Name: owner.Name, UID: owner.UID}}, s.OwnerReferences)
	require.Equal(t, map[string]string{
		ledger.LabelLedger: "true", ledger.LabelPromise: "nats", ledger.LabelRequest: owner.Name, ledger.LabelRequestUID: string(owner.UID),
	}, s.Labels)
	require.Equal(t, "hunter2", string(s.Data["password"]))
	require.Equal(t, "UABC", s.Annotations["ledger.promised.dev/id"])
	for k, v := range s.Annotations {
		require.NotContains(t, v, "hunter2", "annotation %s", k)
	}
	require.Equal(t, got.Entry.Revision, s.ResourceVersion)

	var selected corev1.SecretList
	require.NoError(t, admin.List(ctx, &selected, client.InNamespace(ns), client.MatchingLabels{ledger.LabelLedger: "true", ledger.LabelRequest: owner.Name}))
	require.Len(t, selected.Items, 1, "kubectl get secrets -l promised.dev/request=NAME finds a request's entries")
}

func TestKubernetesClusterScopedOwner(t *testing.T) {
	ctx := context.Background()
	admin := adminClient(t)
	platform := newNamespace(t, admin)
	owner := newRequest(t, admin, "NatsCluster", "")
	key := ledger.Key{Owner: owner, Credential: "system"}

	_, err := (&ledger.Kubernetes{Client: admin}).Put(ctx, key, ledger.Entry{ID: "x"})
	require.ErrorContains(t, err, "no platform namespace configured")

	l := &ledger.Kubernetes{Client: admin, Namespace: platform}
	_, err = l.Put(ctx, key, ledger.Entry{ID: "x"})
	require.NoError(t, err)
	var s corev1.Secret
	require.NoError(t, admin.Get(ctx, client.ObjectKey{Namespace: platform, Name: ledger.SecretName(key)}, &s))
	require.Equal(t, owner.UID, s.OwnerReferences[0].UID, "a cluster-scoped owner may own a namespaced entry")
	keys, err := l.List(ctx, owner)
	require.NoError(t, err)
	require.Equal(t, []ledger.Key{key}, keys)
}

func TestKubernetesRefusesForeignSecretAndIncompleteKeys(t *testing.T) {
	ctx := context.Background()
	admin := adminClient(t)
	ns := newNamespace(t, admin)
	owner := newRequest(t, admin, "NatsAccount", ns)
	key := ledger.Key{Owner: owner, Credential: "nats"}
	require.NoError(t, admin.Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: ledger.SecretName(key)},
		StringData: map[string]string{"password": "planted"},
	}))
	l := &ledger.Kubernetes{Client: admin}
	_, _, err := l.Get(ctx, key)
	require.ErrorContains(t, err, "is not the ledger entry")
	require.NotContains(t, err.Error(), "planted")

	noUID := key
	noUID.Owner.UID = ""
	_, _, err = l.Get(ctx, noUID)
	require.ErrorContains(t, err, "needs the request's apiVersion, kind and uid")

	require.ErrorContains(t, l.Delete(ctx, key), "is not it", "a Secret the ledger did not write is left alone")
	require.NoError(t, admin.Delete(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: ledger.SecretName(key)}}))
	_, err = l.Put(ctx, key, ledger.Entry{ID: "old"})
	require.NoError(t, err)

	// A request re-created under the same name never sees its
	// predecessor's entry, which the garbage collector is about to delete.
	reborn := key
	reborn.Owner.UID = "another-uid"
	require.NotEqual(t, ledger.SecretName(key), ledger.SecretName(reborn))
	_, found, err := l.Get(ctx, reborn)
	require.NoError(t, err)
	require.False(t, found)
}
