package seal

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"reflect"
	"strings"

	ssv1alpha1 "github.com/bitnami/sealed-secrets/pkg/apis/sealedsecrets/v1alpha1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/yaml"
)

// secretIn returns the v1 Secret a document holds, nil when it holds
// something else or does not parse (output validation reports that).
//
// The Secret is decoded by hand rather than with a JSON or YAML decoder
// because their errors quote the offending value ("cannot unmarshal number
// 123456 into ..."), and for a Secret that value is the plaintext.
func secretIn(doc []byte) (*corev1.Secret, error) {
	var m map[string]any
	if err := yaml.Unmarshal(doc, &m); err != nil || m == nil {
		return nil, nil
	}
	apiVersion, _ := m["apiVersion"].(string)
	kind, _ := m["kind"].(string)
	if strings.HasSuffix(kind, "List") {
		return nil, listWithSecret(m)
	}
	if apiVersion != "v1" || kind != "Secret" {
		return nil, nil
	}
	return decodeSecret(m)
}

// listWithSecret refuses a List holding a Secret: such a Secret would
// otherwise pass through unsealed, and splitting a List would rewrite the
// other items.
func listWithSecret(m map[string]any) error {
	items, _ := m["items"].([]any)
	for i, it := range items {
		o, _ := it.(map[string]any)
		if v, _ := o["apiVersion"].(string); v != "v1" {
			continue
		}
		if k, _ := o["kind"].(string); k == "Secret" {
			return fmt.Errorf("item %d of a List is a Secret: write each Secret as its own document so it can be sealed", i+1)
		}
	}
	return nil
}

func decodeSecret(m map[string]any) (*corev1.Secret, error) {
	sec := &corev1.Secret{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"}}
	if md, ok := m["metadata"]; ok {
		// Metadata is not secret data, so the decoder's own message is
		// kept. kubectl's last-applied annotation can hold the whole
		// Secret, but as a string, which a type error never quotes.
		raw, err := json.Marshal(md)
		if err != nil {
			return nil, fmt.Errorf("reading the Secret's metadata: %w", err)
		}
		if err := json.Unmarshal(raw, &sec.ObjectMeta); err != nil {
			return nil, fmt.Errorf("reading the Secret's metadata: %w", err)
		}
	}
	if sec.Name == "" {
		return nil, fmt.Errorf("the Secret has no metadata.name")
	}
	if t, ok := m["type"]; ok && t != nil {
		s, ok := t.(string)
		if !ok {
			return nil, fmt.Errorf("Secret %q: type is a %s, want a string", sec.Name, typeName(t))
		}
		sec.Type = corev1.SecretType(s)
	}
	if im, ok := m["immutable"]; ok && im != nil {
		b, ok := im.(bool)
		if !ok {
			return nil, fmt.Errorf("Secret %q: immutable is a %s, want true or false", sec.Name, typeName(im))
		}
		sec.Immutable = &b
	}
	data, err := stringMap(m["data"], sec.Name, "data")
	if err != nil {
		return nil, err
	}
	for k, v := range data {
		b, err := base64.StdEncoding.DecodeString(v)
		if err != nil {
			// A CorruptInputError names a byte offset, never the value.
			return nil, fmt.Errorf("Secret %q: data key %q is not valid base64: %w", sec.Name, k, err)
		}
		if sec.Data == nil {
			sec.Data = map[string][]byte{}
		}
		sec.Data[k] = b
	}
	if sec.StringData, err = stringMap(m["stringData"], sec.Name, "stringData"); err != nil {
		return nil, err
	}
	return sec, nil
}

// stringMap reads data or stringData: a map of valid Secret keys to
// strings. Messages name the key and the type found, never the value.
func stringMap(v any, name, field string) (map[string]string, error) {
	if v == nil {
		return nil, nil
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("Secret %q: %s is a %s, want a map", name, field, typeName(v))
	}
	out := make(map[string]string, len(m))
	for k, val := range m {
		if errs := validation.IsConfigMapKey(k); len(errs) > 0 {
			return nil, fmt.Errorf("Secret %q: %s key %q: %s", name, field, k, strings.Join(errs, "; "))
		}
		s, ok := val.(string)
		if !ok {
			return nil, fmt.Errorf("Secret %q: %s key %q holds a %s, want a string", name, field, k, typeName(val))
		}
		out[k] = s
	}
	return out, nil
}

func typeName(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case bool:
		return "boolean"
	case float64, int64, int, json.Number:
		return "number"
	case string:
		return "string"
	case []any:
		return "list"
	case map[string]any:
		return "map"
	default:
		return fmt.Sprintf("%T", v)
	}
}

// normalize prepares sec for sealing in place, as kubeseal does: drop
// server-set metadata and kubectl's last-applied copy (which would leak
// the plaintext into the template), apply the platform's scope, and merge
// stringData into data the way the API server does (stringData wins), so
// moving a key between the two changes nothing.
func (s *sealer) normalize(sec *corev1.Secret) error {
	if sec.GenerateName != "" {
		return fmt.Errorf("metadata.generateName cannot be sealed: the ciphertext is bound to a fixed name")
	}
	sec.SelfLink, sec.UID, sec.ResourceVersion = "", "", ""
	sec.Generation = 0
	sec.CreationTimestamp = metav1.Time{}
	sec.DeletionTimestamp, sec.DeletionGracePeriodSeconds = nil, nil
	sec.ManagedFields, sec.OwnerReferences = nil, nil
	ssv1alpha1.StripLastAppliedAnnotations(sec.Annotations)
	if s.scope != "" {
		sec.Annotations = ssv1alpha1.UpdateScopeAnnotations(sec.Annotations, s.scope.library())
	}
	if len(sec.Annotations) == 0 {
		sec.Annotations = nil
	}
	if scope := ssv1alpha1.SecretScope(sec); scope != ssv1alpha1.ClusterWideScope && sec.Namespace == "" {
		return fmt.Errorf("no metadata.namespace: %s sealing binds the ciphertext to a namespace; set one, or seal cluster-wide", scopeOf(scope))
	}
	if len(sec.StringData) > 0 {
		merged := make(map[string][]byte, len(sec.Data)+len(sec.StringData))
		maps.Copy(merged, sec.Data)
		for k, v := range sec.StringData {
			merged[k] = []byte(v)
		}
		sec.Data, sec.StringData = merged, nil
	}
	return nil
}

// canonical is what the fingerprint covers: everything that decides the
// SealedSecret's content other than the encryption's randomness. Fields
// are listed one by one rather than marshalling the Secret whole so that a
// change in how a Kubernetes library version encodes an unset field does
// not re-seal every Secret; any metadata field not listed lands in Rest,
// so nothing that reaches the template escapes the fingerprint.
type canonical struct {
	Format      string            `json:"format"`
	CertSHA256  string            `json:"certSHA256"`
	Scope       Scope             `json:"scope"`
	Namespace   string            `json:"namespace"`
	Name        string            `json:"name"`
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
	Finalizers  []string          `json:"finalizers"`
	Rest        json.RawMessage   `json:"rest,omitempty"`
	Type        corev1.SecretType `json:"type"`
	Immutable   *bool             `json:"immutable"`
	Data        map[string][]byte `json:"data"`
}

// fingerprint is the keyed fingerprint of a normalized Secret under this
// sealer's certificate. encoding/json writes map keys sorted, so the same
// content always gives the same bytes.
func (s *sealer) fingerprint(sec *corev1.Secret) (string, error) {
	c := canonical{
		Format: fingerprintFormat, CertSHA256: s.certSum, Scope: scopeOf(ssv1alpha1.SecretScope(sec)),
		Namespace: sec.Namespace, Name: sec.Name, Labels: sec.Labels, Annotations: sec.Annotations,
		Finalizers: sec.Finalizers, Type: sec.Type, Immutable: sec.Immutable, Data: sec.Data,
	}
	rest := sec.ObjectMeta.DeepCopy()
	rest.Namespace, rest.Name, rest.Labels, rest.Annotations, rest.Finalizers = "", "", nil, nil, nil
	if !reflect.DeepEqual(*rest, metav1.ObjectMeta{}) {
		raw, err := json.Marshal(rest)
		if err != nil {
			return "", fmt.Errorf("computing the fingerprint: %w", err)
		}
		c.Rest = raw
	}
	raw, err := json.Marshal(c)
	if err != nil {
		return "", fmt.Errorf("computing the fingerprint: %w", err)
	}
	m := hmac.New(sha256.New, s.key)
	m.Write(raw)
	return "hmac-sha256:" + hex.EncodeToString(m.Sum(nil)), nil
}

// seal returns the document to write in place of sec: the previous
// output's bytes when they seal the same content, a fresh SealedSecret
// otherwise.
func (s *sealer) seal(sec *corev1.Secret, prev *previousIndex, file string, asJSON bool) ([]byte, Sealed, error) {
	if err := s.normalize(sec); err != nil {
		return nil, Sealed{}, err
	}
	fp, err := s.fingerprint(sec)
	if err != nil {
		return nil, Sealed{}, err
	}
	rec := Sealed{Namespace: sec.Namespace, Name: sec.Name, Scope: scopeOf(ssv1alpha1.SecretScope(sec)), Fingerprint: fp}
	if body, ok := prev.lookup(sec.Namespace, sec.Name, fp, file, asJSON); ok {
		rec.Reused = true
		return body, rec, nil
	}
	ss, err := ssv1alpha1.NewSealedSecret(scheme.Codecs, s.pub, sec)
	if err != nil {
		return nil, Sealed{}, fmt.Errorf("encrypting: %w", err)
	}
	ss.TypeMeta = metav1.TypeMeta{APIVersion: ssv1alpha1.SchemeGroupVersion.String(), Kind: "SealedSecret"}
	if ss.Annotations == nil {
		ss.Annotations = map[string]string{}
	}
	ss.Annotations[FingerprintAnnotation] = fp
	var body []byte
	if asJSON {
		if body, err = json.MarshalIndent(ss, "", "  "); err == nil {
			body = append(body, '\n')
		}
	} else {
		body, err = yaml.Marshal(ss)
	}
	if err != nil {
		return nil, Sealed{}, fmt.Errorf("marshalling the SealedSecret: %w", err)
	}
	return body, rec, nil
}
