package seal_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"math/big"
	"strings"
	"sync"
	"testing"
	"time"

	ssv1alpha1 "github.com/bitnami/sealed-secrets/pkg/apis/sealedsecrets/v1alpha1"
	sscrypto "github.com/bitnami/sealed-secrets/pkg/crypto"
	"github.com/stretchr/testify/require"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/yaml"

	"promised.dev/promised/pipelines/seal"
	"promised.dev/promised/pipelines/validate"
)

// sealingKey is a sealed-secrets controller's key pair: the private key
// the controller unseals with and the certificate the platform seals with.
type sealingKey struct {
	priv    *rsa.PrivateKey
	certPEM []byte
}

func newSealingKey(t testing.TB, bits int) sealingKey {
	t.Helper()
	priv, cert, err := sscrypto.GeneratePrivateKeyAndCert(bits, 24*time.Hour, "sealed-secrets")
	require.NoError(t, err)
	return sealingKey{priv: priv, certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})}
}

// Key generation takes a good fraction of a second; the tests share two.
var (
	keysOnce sync.Once
	keyA     sealingKey
	keyB     sealingKey
)

func keys(t testing.TB) (sealingKey, sealingKey) {
	keysOnce.Do(func() { keyA, keyB = newSealingKey(t, 2048), newSealingKey(t, 2048) })
	return keyA, keyB
}

var fpKey = bytes.Repeat([]byte{0x5a}, 32)

func (k sealingKey) config(scope seal.Scope) seal.Config {
	return seal.Config{CertPEM: k.certPEM, Scope: scope, FingerprintKey: fpKey}
}

// unseal runs the sealed-secrets controller's own unseal path.
func (k sealingKey) unseal(t *testing.T, ss *ssv1alpha1.SealedSecret) (map[string][]byte, error) {
	t.Helper()
	fp, err := sscrypto.PublicKeyFingerprint(&k.priv.PublicKey)
	require.NoError(t, err)
	sec, err := ss.Unseal(scheme.Codecs, map[string]*rsa.PrivateKey{fp: k.priv})
	if err != nil {
		return nil, err
	}
	return sec.Data, nil
}

const dbSecret = `apiVersion: v1
kind: Secret
metadata:
  name: db
  namespace: payments
  labels:
    app: api
  annotations:
    kubectl.kubernetes.io/last-applied-configuration: '{"stringData":{"password":"hunter2"}}'
type: Opaque
data:
  username: YWRtaW4=
stringData:
  password: hunter2
`

func sealedOf(t *testing.T, doc []byte) *ssv1alpha1.SealedSecret {
	t.Helper()
	var ss ssv1alpha1.SealedSecret
	require.NoError(t, yaml.UnmarshalStrict(doc, &ss))
	require.Equal(t, "bitnami.com/v1alpha1", ss.APIVersion)
	require.Equal(t, "SealedSecret", ss.Kind)
	return &ss
}

func TestRoundTripThroughTheControllersUnseal(t *testing.T) {
	k, _ := keys(t)
	for _, tc := range []struct {
		scope seal.Scope
		// moves says which renames the controller must still unseal.
		renameOK, moveOK bool
	}{
		{seal.ScopeStrict, false, false},
		{seal.ScopeNamespaceWide, true, false},
		{seal.ScopeClusterWide, true, true},
	} {
		t.Run(string(tc.scope), func(t *testing.T) {
			out, report, err := seal.SealFiles(k.config(tc.scope), map[string][]byte{"db.yaml": []byte(dbSecret)}, nil)
			require.NoError(t, err)
			require.NotContains(t, string(out["db.yaml"]), "hunter2", "the plaintext (and kubectl's last-applied copy) never reaches the output")
			require.NotContains(t, string(out["db.yaml"]), base64.StdEncoding.EncodeToString([]byte("hunter2")))
			_, err = validate.Objects("db.yaml", out["db.yaml"])
			require.NoError(t, err, "the sealed output passes output validation")

			require.Len(t, report, 1)
			require.Equal(t, seal.Sealed{File: "db.yaml", Document: 1, Namespace: "payments", Name: "db", Scope: tc.scope, Fingerprint: report[0].Fingerprint}, report[0])
			ss := sealedOf(t, out["db.yaml"])
			require.Equal(t, report[0].Fingerprint, ss.Annotations[seal.FingerprintAnnotation])
			require.Equal(t, map[string]string{"app": "api"}, ss.Spec.Template.Labels)

			data, err := k.unseal(t, ss)
			require.NoError(t, err)
			require.Equal(t, map[string][]byte{"username": []byte("admin"), "password": []byte("hunter2")}, data)

			renamed := ss.DeepCopy()
			renamed.Name = "other"
			_, err = k.unseal(t, renamed)
			require.Equal(t, tc.renameOK, err == nil, "unsealing under another name: %v", err)

			moved := ss.DeepCopy()
			moved.Namespace = "elsewhere"
			_, err = k.unseal(t, moved)
			require.Equal(t, tc.moveOK, err == nil, "unsealing in another namespace: %v", err)

			_, other := keys(t)
			_, err = other.unseal(t, ss)
			require.Error(t, err, "another controller's key cannot unseal it")
		})
	}
}

func TestSecretAnnotationsDecideScopeUnlessThePlatformSetsOne(t *testing.T) {
	k, _ := keys(t)
	annotated := strings.Replace(dbSecret, "  annotations:\n", "  annotations:\n    sealedsecrets.bitnami.com/cluster-wide: \"true\"\n", 1)
	_, report, err := seal.SealFiles(k.config(""), map[string][]byte{"db.yaml": []byte(annotated)}, nil)
	require.NoError(t, err)
	require.Equal(t, seal.ScopeClusterWide, report[0].Scope)

	_, report, err = seal.SealFiles(k.config(""), map[string][]byte{"db.yaml": []byte(dbSecret)}, nil)
	require.NoError(t, err)
	require.Equal(t, seal.ScopeStrict, report[0].Scope, "strict by default")

	out, report, err := seal.SealFiles(k.config(seal.ScopeStrict), map[string][]byte{"db.yaml": []byte(annotated)}, nil)
	require.NoError(t, err)
	require.Equal(t, seal.ScopeStrict, report[0].Scope, "the platform's scope wins")
	moved := sealedOf(t, out["db.yaml"])
	moved.Namespace = "elsewhere"
	_, err = k.unseal(t, moved)
	require.Error(t, err)
}

func TestOnlySecretsChange(t *testing.T) {
	k, _ := keys(t)
	cm := "# the app's settings\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings, namespace: payments}\ndata:\n  Secret: \"not one\"\n"
	deploy := "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: api\n  namespace: payments\n"
	mixed := cm + "--- # the credentials\n" + dbSecret + "---\n" + deploy
	jsonSecret := `{"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "j", "namespace": "payments"}, "stringData": {"token": "s3cr3t-token"}}`
	files := map[string][]byte{
		"app/mixed.yaml":    []byte(mixed),
		"app/settings.yaml": []byte(cm),
		"app/token.json":    []byte(jsonSecret),
	}
	input := map[string][]byte{}
	for p, d := range files {
		input[p] = bytes.Clone(d)
	}
	out, report, err := seal.SealFiles(k.config(""), files, nil)
	require.NoError(t, err)
	require.Equal(t, input, files, "the input is not modified")
	require.Len(t, report, 2)

	require.Equal(t, files["app/settings.yaml"], out["app/settings.yaml"], "a file without a Secret is untouched")

	parts := strings.SplitAfter(string(out["app/mixed.yaml"]), "\n---")
	require.Len(t, parts, 3)
	require.True(t, strings.HasPrefix(string(out["app/mixed.yaml"]), cm+"--- # the credentials\n"), "documents before the Secret keep their bytes, separator comment included")
	require.True(t, strings.HasSuffix(string(out["app/mixed.yaml"]), "\n---\n"+deploy), "documents after it keep their bytes")
	require.NotContains(t, string(out["app/mixed.yaml"]), "hunter2")
	_, err = validate.Objects("app/mixed.yaml", out["app/mixed.yaml"])
	require.NoError(t, err)

	require.True(t, bytes.HasPrefix(out["app/token.json"], []byte("{")), "a Secret written as JSON is sealed as JSON")
	require.NotContains(t, string(out["app/token.json"]), "s3cr3t-token")
	data, err := k.unseal(t, sealedOf(t, out["app/token.json"]))
	require.NoError(t, err)
	require.Equal(t, "s3cr3t-token", string(data["token"]))
}

func TestUnchangedSecretKeepsItsSealedBytes(t *testing.T) {
	k, other := keys(t)
	files := map[string][]byte{"db.yaml": []byte(dbSecret)}
	first, report, err := seal.SealFiles(k.config(""), files, nil)
	require.NoError(t, err)
	require.False(t, report[0].Reused)

	again, report, err := seal.SealFiles(k.config(""), files, first)
	require.NoError(t, err)
	require.True(t, report[0].Reused)
	require.Equal(t, first, again, "same content, same bytes")

	// Moving the password from stringData to data is the same Secret to
	// the API server, so it is the same Secret to the guard.
	moved := strings.Replace(strings.Replace(dbSecret, "stringData:\n  password: hunter2\n", "", 1),
		"  username: YWRtaW4=\n", "  username: YWRtaW4=\n  password: "+base64.StdEncoding.EncodeToString([]byte("hunter2"))+"\n", 1)
	again, _, err = seal.SealFiles(k.config(""), map[string][]byte{"db.yaml": []byte(moved)}, first)
	require.NoError(t, err)
	require.Equal(t, first, again)

	renamed, report, err := seal.SealFiles(k.config(""), map[string][]byte{"renamed/db.yaml": []byte(dbSecret)}, first)
	require.NoError(t, err)
	require.True(t, report[0].Reused, "the previous SealedSecret is found in whichever file it was")
	require.Equal(t, first["db.yaml"], renamed["renamed/db.yaml"])

	for name, tc := range map[string]struct {
		cfg  seal.Config
		file string
	}{
		"plaintext":   {k.config(""), strings.Replace(dbSecret, "hunter2\n", "hunter3\n", 1)},
		"label":       {k.config(""), strings.Replace(dbSecret, "app: api", "app: web", 1)},
		"type":        {k.config(""), strings.Replace(dbSecret, "type: Opaque", "type: kubernetes.io/basic-auth", 1)},
		"certificate": {other.config(""), dbSecret},
		"scope":       {k.config(seal.ScopeNamespaceWide), dbSecret},
		"key":         {seal.Config{CertPEM: k.certPEM, FingerprintKey: bytes.Repeat([]byte{1}, 32)}, dbSecret},
	} {
		t.Run(name, func(t *testing.T) {
			out, report, err := seal.SealFiles(tc.cfg, map[string][]byte{"db.yaml": []byte(tc.file)}, first)
			require.NoError(t, err)
			require.False(t, report[0].Reused)
			require.NotEqual(t, first["db.yaml"], out["db.yaml"])
			require.NotEqual(t, sealedOf(t, first["db.yaml"]).Annotations[seal.FingerprintAnnotation], report[0].Fingerprint)
		})
	}
}

// selfSignedECDSA is a certificate sealed-secrets cannot use.
func selfSignedECDSA(t *testing.T) []byte {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "ec"}, NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &priv.PublicKey, priv)
	require.NoError(t, err)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func TestErrorsNeverHoldSecretData(t *testing.T) {
	k, _ := keys(t)
	secret := func(body string) string {
		return "apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\n  namespace: payments\n" + body
	}
	const plain = "hunter2"
	for name, tc := range map[string]struct {
		cfg    seal.Config
		file   string
		want   string
		secret []string
	}{
		"no certificate":    {seal.Config{FingerprintKey: fpKey}, secret("stringData: {password: hunter2}\n"), "no sealing certificate", nil},
		"garbage PEM":       {seal.Config{CertPEM: []byte("hunter2"), FingerprintKey: fpKey}, secret("stringData: {password: hunter2}\n"), "no PEM CERTIFICATE block", nil},
		"corrupt DER":       {seal.Config{CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte("hunter2")}), FingerprintKey: fpKey}, secret("stringData: {password: hunter2}\n"), "sealing certificate: parsing", nil},
		"not RSA":           {seal.Config{CertPEM: selfSignedECDSA(t), FingerprintKey: fpKey}, secret("stringData: {password: hunter2}\n"), "sealed-secrets needs RSA", nil},
		"no key":            {seal.Config{CertPEM: k.certPEM}, secret("stringData: {password: hunter2}\n"), "no fingerprint key", nil},
		"short key":         {seal.Config{CertPEM: k.certPEM, FingerprintKey: []byte("hunter2")}, secret("stringData: {password: hunter2}\n"), "at least 32", nil},
		"bad scope":         {seal.Config{CertPEM: k.certPEM, FingerprintKey: fpKey, Scope: "global"}, secret("stringData: {password: x}\n"), "want strict", nil},
		"numeric pin":       {k.config(""), secret("stringData:\n  pin: 90210417\n"), `stringData key "pin" holds a number`, []string{"90210417"}},
		"bad base64":        {k.config(""), secret("data:\n  password: hunter2!!\n"), `data key "password" is not valid base64`, nil},
		"data not a map":    {k.config(""), secret("data: hunter2\n"), "data is a string, want a map", nil},
		"nested value":      {k.config(""), secret("stringData:\n  password: [hunter2]\n"), `holds a list`, nil},
		"no namespace":      {k.config(""), "apiVersion: v1\nkind: Secret\nmetadata: {name: db}\nstringData: {password: hunter2}\n", "no metadata.namespace", nil},
		"generateName":      {k.config(""), "apiVersion: v1\nkind: Secret\nmetadata: {generateName: db-, name: db, namespace: x}\nstringData: {password: hunter2}\n", "generateName", nil},
		"secret in a list":  {k.config(""), "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Secret\n  metadata: {name: db, namespace: x}\n  stringData: {password: hunter2}\n", "item 1 of a List is a Secret", nil},
		"bad immutable":     {k.config(""), secret("immutable: 1234\nstringData: {password: hunter2}\n"), "immutable is a number", []string{"1234"}},
		"bad key name":      {k.config(""), secret("stringData:\n  \"pass word\": hunter2\n"), `stringData key "pass word"`, nil},
		"number in a label": {k.config(""), "apiVersion: v1\nkind: Secret\nmetadata: {name: db, namespace: x, labels: {a: 1}}\nstringData: {password: hunter2}\n", "metadata", nil},
	} {
		t.Run(name, func(t *testing.T) {
			_, _, err := seal.SealFiles(tc.cfg, map[string][]byte{"db.yaml": []byte(tc.file)}, nil)
			require.ErrorContains(t, err, tc.want)
			require.Contains(t, err.Error(), `"db.yaml"`, "errors name the file")
			for _, s := range append(tc.secret, plain, base64.StdEncoding.EncodeToString([]byte(plain))) {
				require.NotContains(t, err.Error(), s)
			}
		})
	}
}

func TestCertificateAndKeyAreOnlyNeededForSecrets(t *testing.T) {
	files := map[string][]byte{"cm.yaml": []byte("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: Secret}\n")}
	out, report, err := seal.SealFiles(seal.Config{}, files, nil)
	require.NoError(t, err)
	require.Empty(t, report)
	require.Equal(t, files, out)
}

func TestInputs(t *testing.T) {
	k, _ := keys(t)
	in, err := seal.Inputs(k.certPEM, seal.ScopeNamespaceWide, fpKey)
	require.NoError(t, err)
	require.Equal(t, map[string][]byte{seal.CertFile: k.certPEM, seal.ScopeFile: []byte("namespace-wide\n"), seal.FingerprintKeyFile: fpKey}, in)

	in, err = seal.Inputs(k.certPEM, "", fpKey)
	require.NoError(t, err)
	require.NotContains(t, in, seal.ScopeFile, "no scope file: each Secret's annotations decide")

	_, err = seal.Inputs([]byte("nope"), "", fpKey)
	require.ErrorContains(t, err, "no PEM CERTIFICATE block")

	platform := bytes.Repeat([]byte{7}, 32)
	a, err := seal.DeriveFingerprintKey(platform, "nats", "payments", "api")
	require.NoError(t, err)
	b, err := seal.DeriveFingerprintKey(platform, "nats", "payments", "web")
	require.NoError(t, err)
	a2, err := seal.DeriveFingerprintKey(platform, "nats", "payments", "api")
	require.NoError(t, err)
	require.Len(t, a, 32)
	require.Equal(t, a, a2, "derivation is deterministic, so every run of a request gets the same key")
	require.NotEqual(t, a, b, "each request gets its own key")
	c, err := seal.DeriveFingerprintKey(platform, "nats", "paymentsa", "pi")
	require.NoError(t, err)
	require.NotEqual(t, a, c, "fields are length-prefixed")
	_, err = seal.DeriveFingerprintKey([]byte("short"), "nats", "payments", "api")
	require.ErrorContains(t, err, "at least 32")
}
