package natsuser

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"promised.dev/promised/pipelines/apischema"
	"promised.dev/promised/pipelines/local"
	"promised.dev/promised/promises/natsuser/natstest"
)

func natsUser(spec map[string]any) *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "nats.promised.dev/v1alpha1", "kind": "NatsUser",
		"metadata": map[string]any{"name": "orders", "namespace": "payments"}, "spec": spec,
	}}
}

func TestCheckSubject(t *testing.T) {
	for _, tc := range []struct {
		subject, want string
	}{
		{"orders", ""},
		{"orders.created", ""},
		{"orders.*.created", ""},
		{"orders.>", ""},
		{">", ""},
		{"*", ""},
		{"_INBOX.>", ""},
		{"$JS.API.>", ""},
		{"orders*", ""}, // a literal token: NATS wildcards are whole tokens
		{"", "empty subject"},
		{"orders created", "holds white space"},
		{"orders\tcreated", "holds white space"},
		{"orders..created", "empty token"},
		{".orders", "empty token"},
		{"orders.", "empty token"},
		{"orders.>.created", `">" may only be the whole last token`},
		{"orders>", `">" may only be the whole last token`},
		{strings.Repeat("a", 257), "at most 256"},
	} {
		err := checkSubject(tc.subject)
		if tc.want == "" {
			require.NoError(t, err, tc.subject)
			continue
		}
		require.ErrorContains(t, err, tc.want, tc.subject)
	}
}

// TestSubjectPatternIsTheCRDs: the stage checks the same pattern as the
// API, so a local run refuses what the apiserver would.
func TestSubjectPatternIsTheCRDs(t *testing.T) {
	p, err := local.LoadPromise(".")
	require.NoError(t, err)
	crd, err := apischema.CRD(p)
	require.NoError(t, err)
	spec := crd.Spec.Versions[0].Schema.OpenAPIV3Schema.Properties["spec"]
	for _, perm := range []string{"publish", "subscribe"} {
		for _, list := range []string{"allow", "deny"} {
			items := spec.Properties[perm].Properties[list].Items.Schema
			require.Equal(t, subjectPattern, items.Pattern, "%s.%s", perm, list)
			require.EqualValues(t, maxSubjectLength, *items.MaxLength)
			require.EqualValues(t, maxSubjects, *spec.Properties[perm].Properties[list].MaxItems)
		}
	}
	require.Equal(t, durationRE.String(), spec.Properties["credentials"].Properties["ttl"].Pattern)
	limits := spec.Properties["limits"].Properties
	require.EqualValues(t, maxPayload, *limits["payload"].Maximum)
	require.EqualValues(t, maxData, *limits["data"].Maximum)
	require.EqualValues(t, maxSubscriptions, *limits["subscriptions"].Maximum)
	var enum []string
	for _, e := range spec.Properties["connectionTypes"].Items.Schema.Enum {
		enum = append(enum, strings.Trim(string(e.Raw), `"`))
	}
	require.Equal(t, connectionTypes, enum)
}

func TestParseUser(t *testing.T) {
	u, err := parseUser(natsUser(map[string]any{
		"account":   "payments",
		"publish":   map[string]any{"allow": []any{"b.>", "a.>", "b.>"}},
		"subscribe": map[string]any{"allow": []any{"_INBOX.>"}, "deny": []any{"x"}},
		"responses": map[string]any{"maxMessages": 2, "expires": "30s"},
		"limits":    map[string]any{"subscriptions": 0, "payload": 1024},
		"credentials": map[string]any{
			"ttl": "24h", "rotateBefore": "1h30m",
		},
		"secret": map[string]any{"name": "orders-creds", "namespace": "apps"},
	}))
	require.NoError(t, err)
	require.Equal(t, user{
		Namespace: "payments", Name: "orders", Account: "payments",
		Pub:  permission{Allow: []string{"a.>", "b.>"}},
		Sub:  permission{Allow: []string{"_INBOX.>"}, Deny: []string{"x"}},
		Resp: &jwt.ResponsePermission{MaxMsgs: 2, Expires: 30 * time.Second},
		Subs: 0, Payload: 1024, Data: jwt.NoLimit,
		ConnTypes: []string{"STANDARD"},
		TTL:       24 * time.Hour, RotateBefore: 90 * time.Minute,
		SecretName: "orders-creds", SecretNamespace: "apps",
	}, u)

	u, err = parseUser(natsUser(map[string]any{"account": "payments"}))
	require.NoError(t, err)
	require.Equal(t, "orders-nats", u.SecretName)
	require.Equal(t, "payments", u.SecretNamespace)
	require.Equal(t, defaultTTL, u.TTL)
	require.Equal(t, 180*time.Hour, u.RotateBefore, "a quarter of the ttl")
	u, err = parseUser(natsUser(map[string]any{"account": "payments", "credentials": map[string]any{"ttl": "2h"}}))
	require.NoError(t, err)
	require.Equal(t, 30*time.Minute, u.RotateBefore, "a short ttl alone is valid")
	require.Nil(t, u.Resp)
	require.Equal(t, jwt.Permission{Deny: jwt.StringList{">"}}, u.Pub.jwtPermission(), "an empty allow list allows nothing")
}

func TestParseUserNamesEveryBadField(t *testing.T) {
	_, err := parseUser(natsUser(map[string]any{
		"account":         "Payments",
		"publish":         map[string]any{"allow": []any{"ok", "not ok"}},
		"subscribe":       map[string]any{"deny": []any{"a..b"}},
		"responses":       map[string]any{"maxMessages": 0},
		"limits":          map[string]any{"payload": 1 << 30, "data": 0},
		"connectionTypes": []any{},
		"credentials":     map[string]any{"ttl": "1h", "rotateBefore": "2h"},
		"secret":          map[string]any{"name": "Bad_Name"},
	}))
	require.True(t, errors.Is(err, errBadRequest))
	for _, field := range []string{
		"spec.account", "spec.publish.allow[1]", "spec.subscribe.deny[0]", "spec.responses.maxMessages",
		"spec.limits.payload", "spec.limits.data", "spec.connectionTypes", "spec.credentials.rotateBefore", "spec.secret.name",
	} {
		require.Contains(t, err.Error(), field+":")
	}
	require.NotContains(t, err.Error(), "spec.publish.allow[0]")

	_, err = parseUser(natsUser(map[string]any{"account": "payments", "credentials": map[string]any{"ttl": "5m"}}))
	require.ErrorContains(t, err, "spec.credentials.ttl: 5m0s is out of range 10m0s to 8760h0m0s")
	_, err = parseUser(natsUser(map[string]any{"account": "payments", "typo": true}))
	require.ErrorContains(t, err, `unknown field "typo"`)
	_, err = parseUser(natsUser(map[string]any{}))
	require.ErrorContains(t, err, "spec.account: required")
}

func TestMeaning(t *testing.T) {
	ns := natstest.NewKeys(t, "payments")
	a := account{Name: "payments", PublicKey: ns.Accounts["payments"].Pub, SignerPublicKey: ns.Accounts["payments"].SignerPub}
	base := map[string]any{"account": "payments", "publish": map[string]any{"allow": []any{"a", "b"}}}
	meaning := func(spec map[string]any, a account) string {
		u, err := parseUser(natsUser(spec))
		require.NoError(t, err)
		return u.meaning(a)
	}
	m := meaning(base, a)
	require.True(t, strings.HasPrefix(m, "sha256:"))
	require.Equal(t, m, meaning(map[string]any{"account": "payments", "publish": map[string]any{"allow": []any{"b", "a", "a"}}}, a),
		"order and duplicates grant nothing more")
	require.Equal(t, m, meaning(map[string]any{"account": "payments", "publish": map[string]any{"allow": []any{"a", "b"}},
		"credentials": map[string]any{"ttl": "1h", "rotateBefore": "10m"}, "secret": map[string]any{"name": "x"}}, a),
		"terms and the Secret's name are not what the user grants")
	for name, spec := range map[string]map[string]any{
		"a subject":       {"account": "payments", "publish": map[string]any{"allow": []any{"a"}}},
		"allow to deny":   {"account": "payments", "publish": map[string]any{"allow": []any{"a", "b"}, "deny": []any{"a.x"}}},
		"a limit":         {"account": "payments", "publish": map[string]any{"allow": []any{"a", "b"}}, "limits": map[string]any{"payload": 1}},
		"responses":       {"account": "payments", "publish": map[string]any{"allow": []any{"a", "b"}}, "responses": map[string]any{}},
		"connection type": {"account": "payments", "publish": map[string]any{"allow": []any{"a", "b"}}, "connectionTypes": []any{"WEBSOCKET"}},
	} {
		require.NotEqual(t, m, meaning(spec, a), name)
	}
	other := a
	other.SignerPublicKey = ns.Accounts["SYS"].SignerPub
	require.NotEqual(t, m, meaning(base, other), "a new signing key re-issues")
}

func TestRedact(t *testing.T) {
	creds := "-----BEGIN-----\nSUAXYZ\n"
	// Quoted as is, and escaped: the seed alone still gives it away.
	err := redact(errors.New("value \""+creds+"\" or `-----BEGIN-----\\nSUAXYZ\\n` and eyJtoken"), creds, "SUAXYZ", "eyJtoken", "")
	require.Equal(t, "value \"[redacted]\" or `-----BEGIN-----\\n[redacted]\\n` and [redacted]", err.Error())
}
