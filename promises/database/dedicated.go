package database

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	"promised.dev/promised/pipelines/ledger"
	"promised.dev/promised/pipelines/stage"
	"promised.dev/promised/pipelines/ytt"
)

//go:embed all:templates
var templates embed.FS

// EnvDedicatedImage names the variable holding the image repository of the
// dedicated plan's PostgreSQL; the request's major version is its tag.
const EnvDedicatedImage = "DATABASE_DEDICATED_IMAGE"

// DefaultDedicatedImage is CloudNativePG's own PostgreSQL image.
const DefaultDedicatedImage = "ghcr.io/cloudnative-pg/postgresql"

// dedicatedPort is the port of CloudNativePG's services.
const dedicatedPort = 5432

// cnpgSecretSuffixes are the Secrets CloudNativePG makes for a cluster
// (<cluster>-<suffix>); the workload's Secret must not be one of them, nor
// the owner's, or two writers would fight over it.
var cnpgSecretSuffixes = []string{"app", "superuser", "replication", "ca", "server", "owner"}

// ownerSecretName is the basic-auth Secret CloudNativePG bootstraps the
// owner role from.
func ownerSecretName(cluster string) string { return cluster + "-owner" }

// checkDedicated refuses requests CloudNativePG would refuse later, out of
// sight of the request's status.
func checkDedicated(r request) error {
	name := r.obj.GetName()
	if msgs := validation.IsDNS1035Label(name); len(msgs) > 0 || len(name) > maxDedicatedClusterName {
		return fmt.Errorf("a dedicated database's request name %q names its CloudNativePG cluster, whose services and pods add suffixes to it: use at most %d lower-case letters, digits and '-', starting with a letter", name, maxDedicatedClusterName)
	}
	for _, suffix := range cnpgSecretSuffixes {
		if r.spec.SecretName == name+"-"+suffix {
			return fmt.Errorf("spec.secretName %q is a Secret CloudNativePG or this promise makes for cluster %q: choose another name", r.spec.SecretName, name)
		}
	}
	return nil
}

// configureDedicated renders a CloudNativePG cluster for the request, with
// the owner's password from the ledger in a basic-auth Secret, and the
// workload's Secret and ConfigMap. Nothing outside the platform changes:
// the destination's CloudNativePG operator does the provisioning.
func configureDedicated(ctx context.Context, c *stage.Context, r request) error {
	if err := checkDedicated(r); err != nil {
		return err
	}
	role := r.spec.DatabaseName
	l, issued, err := obtainPassword(ctx, c, r.obj, PlanDedicated, role)
	if err != nil {
		return err
	}
	password := string(issued.Entry.Data[passwordKey])
	cluster, ns := r.obj.GetName(), r.obj.GetNamespace()
	image := strings.TrimSpace(c.Getenv(EnvDedicatedImage))
	if image == "" {
		image = DefaultDedicatedImage
	}
	tpl, err := fs.Sub(templates, "templates")
	if err != nil {
		return fmt.Errorf("opening templates: %w", err)
	}
	// No secret goes through ytt: its errors quote data values.
	exts := make([]any, 0, len(r.spec.Extensions))
	for _, e := range r.spec.Extensions {
		exts = append(exts, e)
	}
	files, err := ytt.Render(ctx, tpl, map[string]any{
		"name": cluster, "namespace": ns, "request": r.ref(),
		"database": r.spec.DatabaseName, "owner": role, "ownerSecret": ownerSecretName(cluster),
		"instances": r.spec.Dedicated.Instances, "storage": r.spec.Dedicated.Storage,
		"image":           image + ":" + r.spec.Dedicated.Version,
		"extensions":      exts,
		"connectionLimit": r.spec.ConnectionLimit,
		"retain":          r.spec.DeletionPolicy == DeletionRetain,
	})
	if err != nil {
		return err
	}
	rendered, ok := files["cluster.yaml"]
	if !ok || len(files) != 1 {
		return fmt.Errorf("rendering the dedicated plan: want templates/cluster.yaml's output alone, got %d files", len(files))
	}
	owner := &corev1.Secret{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
		ObjectMeta: objectMeta(ns, ownerSecretName(cluster), r.ref()),
		Type:       corev1.SecretTypeBasicAuth,
		Data:       map[string][]byte{corev1.BasicAuthUsernameKey: []byte(role), corev1.BasicAuthPasswordKey: []byte(password)},
	}
	conn := connection{
		namespace: ns, secretName: r.spec.SecretName, request: r.ref(),
		// The read-write service CloudNativePG makes for the primary.
		host: cluster + "-rw." + ns + ".svc", port: dedicatedPort,
		database: r.spec.DatabaseName, user: role, password: password,
		// CloudNativePG serves TLS with a CA of its own making, in the
		// <cluster>-ca Secret, which the workload may mount to verify.
		sslMode: "require",
	}
	if err := c.WriteFile(ClusterFile, rendered); err != nil {
		return err
	}
	if err := c.WriteObjects(OwnerCredentialsFile, owner); err != nil {
		return err
	}
	if err := c.WriteObjects(CredentialsFile, conn.secret()); err != nil {
		return err
	}
	if err := c.WriteObjects(ConnectionFile, conn.configMap()); err != nil {
		return err
	}
	// The password is in use once it is in the output: CloudNativePG,
	// not this stage, sets it on the role, and a replaced one needs no
	// revoking here because the operator overwrites it.
	if err := ledger.SettleIssued(ctx, l, issued); err != nil {
		return err
	}
	issued.Entry.Retire = nil
	return c.SetStatus(map[string]any{
		"plan": string(PlanDedicated), "database": r.spec.DatabaseName, "user": role,
		"cluster": cluster, "host": conn.host, "secretName": r.spec.SecretName,
		"credentials": []ledger.CredentialStatus{issued.Status()},
		"message": fmt.Sprintf("CloudNativePG cluster %s is rendered for database %q; the workload's credentials in Secret %s work once the operator has bootstrapped it",
			cluster, r.spec.DatabaseName, r.spec.SecretName),
	})
}
