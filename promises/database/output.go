package database

import (
	"net"
	"net/url"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Output files of the configure stage, under the pipeline's output folder.
const (
	// CredentialsFile holds the workload's Secret (sealed by the seal stage).
	CredentialsFile = "database/credentials.yaml"
	// ConnectionFile holds the ConfigMap with the parts that are not secret.
	ConnectionFile = "database/connection.yaml"
	// ClusterFile holds the dedicated plan's CloudNativePG Cluster and
	// Database.
	ClusterFile = "database/cluster.yaml"
	// OwnerCredentialsFile holds the dedicated plan's basic-auth Secret
	// CloudNativePG bootstraps the owner role with.
	OwnerCredentialsFile = "database/owner-credentials.yaml"
)

// Keys of the workload's Secret; the ConfigMap of the same name holds all
// but password and uri.
const (
	KeyHost     = "host"
	KeyPort     = "port"
	KeyDatabase = "database"
	KeyUser     = "user"
	KeyPassword = "password"
	// KeyURI is a postgresql:// URI with everything a driver needs.
	KeyURI = "uri"
	// KeySSLMode is the libpq sslmode the workload should use.
	KeySSLMode = "sslmode"
	// KeyCACert is the server's certificate authority, when the platform
	// configured one (ConfigMap only: it is not secret).
	KeyCACert = "ca.crt"
)

// connection is what the workload is given.
type connection struct {
	namespace, secretName string
	host                  string
	port                  int
	database, user        string
	password              string
	sslMode               string
	caCert                []byte
	// request is "namespace/name" of the request, noted on the objects so
	// that someone looking at them in a workload cluster can find it.
	request string
}

// uri is a libpq connection URI; user and password are escaped by
// net/url, so any password is safe in it.
func (c connection) uri() string {
	u := url.URL{
		Scheme: "postgresql", User: url.UserPassword(c.user, c.password),
		Host: net.JoinHostPort(c.host, strconv.Itoa(c.port)), Path: "/" + c.database,
	}
	if c.sslMode != "" {
		u.RawQuery = url.Values{"sslmode": {c.sslMode}}.Encode()
	}
	return u.String()
}

// secret is the workload's Secret, in plaintext: the seal stage after this
// one seals it.
func (c connection) secret() *corev1.Secret {
	data := map[string][]byte{
		KeyHost: []byte(c.host), KeyPort: []byte(strconv.Itoa(c.port)), KeyDatabase: []byte(c.database),
		KeyUser: []byte(c.user), KeyPassword: []byte(c.password), KeyURI: []byte(c.uri()),
	}
	if c.sslMode != "" {
		data[KeySSLMode] = []byte(c.sslMode)
	}
	return &corev1.Secret{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
		ObjectMeta: c.meta(),
		Type:       corev1.SecretTypeOpaque,
		Data:       data,
	}
}

// configMap holds what a workload may show or log.
func (c connection) configMap() *corev1.ConfigMap {
	data := map[string]string{
		KeyHost: c.host, KeyPort: strconv.Itoa(c.port), KeyDatabase: c.database, KeyUser: c.user,
	}
	if c.sslMode != "" {
		data[KeySSLMode] = c.sslMode
	}
	if len(c.caCert) > 0 {
		data[KeyCACert] = string(c.caCert)
	}
	return &corev1.ConfigMap{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"},
		ObjectMeta: c.meta(),
		Data:       data,
	}
}

func (c connection) meta() metav1.ObjectMeta {
	return objectMeta(c.namespace, c.secretName, c.request)
}

// RequestAnnotation on every object the promise writes names the request
// (namespace/name) it was written for. An annotation, not a label: request
// names may be longer than a label value can be.
const RequestAnnotation = "database.promised.dev/request"

// objectMeta is the metadata of an object written for request.
func objectMeta(namespace, name, request string) metav1.ObjectMeta {
	return metav1.ObjectMeta{
		Name: name, Namespace: namespace,
		Labels:      map[string]string{"app.kubernetes.io/managed-by": "promised"},
		Annotations: map[string]string{RequestAnnotation: request},
	}
}
