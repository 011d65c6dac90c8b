package natsuser

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"promised.dev/promised/pipelines/apischema"
	"promised.dev/promised/pipelines/ledger"
	"promised.dev/promised/pipelines/local"
	"promised.dev/promised/promises/natsuser/natstest"
)

// ordersSpec is the typical request: an orders service that publishes its
// events, consumes commands and answers requests.
func ordersSpec() map[string]any {
	return map[string]any{
		"account":   "payments",
		"publish":   map[string]any{"allow": []any{"orders.events.>"}, "deny": []any{"orders.events.internal"}},
		"subscribe": map[string]any{"allow": []any{"orders.commands.*", "_INBOX.>"}},
		"responses": map[string]any{"maxMessages": int64(1), "expires": "30s"},
		"limits":    map[string]any{"payload": int64(4096), "subscriptions": int64(3)},
		"secret":    map[string]any{"name": "orders-nats"},
	}
}

// eventually waits for cond, which the server decides asynchronously.
func eventually(t *testing.T, cond func() bool, msg string) {
	t.Helper()
	require.Eventually(t, cond, 10*time.Second, 10*time.Millisecond, msg)
}

// TestIssuedUserWorksAsRequested takes the .creds file exactly as the
// workload gets it (unsealed by the sealed-secrets controller's code) and
// proves against a real nats-server that the user can do what the request
// allows and nothing else.
func TestIssuedUserWorksAsRequested(t *testing.T) {
	ns := natstest.Serve(t, "payments")
	p := newRig(t, ns)
	obj := p.request("orders", ordersSpec())
	res := p.mustConfigure(obj)

	w := p.unseal(res)
	require.Equal(t, ns.URL, w.URL)
	uc := w.Claims(t)
	require.Equal(t, ns.Accounts["payments"].Pub, uc.IssuerAccount)
	require.Equal(t, ns.Accounts["payments"].SignerPub, uc.Issuer)
	require.Equal(t, "payments/orders", uc.Name)
	entry, found := p.entry(obj)
	require.True(t, found)
	require.Equal(t, entry.ID, uc.Subject)
	require.Equal(t, entry.ExpiresAt.Unix(), uc.Expires)
	require.WithinDuration(t, time.Now().Add(720*time.Hour), time.Unix(uc.Expires, 0), time.Minute)

	// The ConfigMap holds the facts, and no secret.
	var cm struct {
		Kind     string            `json:"kind"`
		Metadata map[string]any    `json:"metadata"`
		Data     map[string]string `json:"data"`
	}
	require.NoError(t, yaml.Unmarshal(res.Files()["user/configmap.yaml"], &cm))
	require.Equal(t, "ConfigMap", cm.Kind)
	require.Equal(t, "orders-nats", cm.Metadata["name"])
	require.Equal(t, map[string]string{
		"account": "payments", "account-public-key": ns.Accounts["payments"].Pub,
		"user-public-key": entry.ID, "expires-at": entry.ExpiresAt.UTC().Format(time.RFC3339), "url": ns.URL,
	}, cm.Data)
	// The status says which credential it is and when it rotates.
	creds := res.Status["credentials"].([]any)[0].(map[string]any)
	require.Equal(t, entry.ID, creds["id"])
	require.Equal(t, "fresh", creds["issuedBecause"])
	require.Equal(t, entry.ExpiresAt.Add(-180*time.Hour).UTC().Format(time.RFC3339), creds["nextRotation"])

	c := w.MustConnect(t)

	// Allowed: subscribe to a command, publish an event.
	cmds, err := c.NC.SubscribeSync("orders.commands.create")
	require.NoError(t, err)
	require.NoError(t, c.NC.Flush())
	other := newPeer(t, p, "peer")
	require.NoError(t, other.NC.Publish("orders.commands.create", []byte("go")))
	msg, err := cmds.NextMsg(5 * time.Second)
	require.NoError(t, err)
	require.Equal(t, "go", string(msg.Data))

	events, err := other.NC.SubscribeSync("orders.events.>")
	require.NoError(t, err)
	require.NoError(t, other.NC.Flush())
	require.NoError(t, c.NC.Publish("orders.events.created", []byte("order 1")))
	msg, err = events.NextMsg(5 * time.Second)
	require.NoError(t, err)
	require.Equal(t, "order 1", string(msg.Data))

	// Refused: the server reports each violation asynchronously, after a
	// flush, and drops the message or subscription.
	require.NoError(t, c.NC.Publish("billing.charge", []byte("x")))
	require.NoError(t, c.NC.Publish("orders.events.internal", []byte("x")))
	require.NoError(t, c.NC.Flush())
	eventually(t, func() bool {
		return c.HasError(nil, `Permissions Violation for Publish to "billing.charge"`) &&
			c.HasError(nil, `Permissions Violation for Publish to "orders.events.internal"`)
	}, "publishing outside the allowed subjects is refused")
	_, err = c.NC.SubscribeSync("billing.>")
	require.NoError(t, err)
	require.NoError(t, c.NC.Flush())
	eventually(t, func() bool { return c.HasError(nil, `Permissions Violation for Subscription to "billing.>"`) },
		"subscribing outside the allowed subjects is refused")
	_, err = events.NextMsg(200 * time.Millisecond)
	require.ErrorIs(t, err, nats.ErrTimeout, "no refused message was delivered")

	// Responses: the user answers a request on its reply subject without
	// any publish permission for it.
	svc, err := c.NC.Subscribe("orders.commands.get", func(m *nats.Msg) { _ = m.Respond([]byte("order 1")) })
	require.NoError(t, err)
	defer svc.Unsubscribe()
	require.NoError(t, c.NC.Flush())
	reply, err := other.NC.Request("orders.commands.get", nil, 5*time.Second)
	require.NoError(t, err)
	require.Equal(t, "order 1", string(reply.Data))

	// Limits: two subscriptions are open (refused ones do not count); a
	// fourth is over the limit of three.
	for _, subj := range []string{"orders.commands.delete", "orders.commands.update"} {
		_, err = c.NC.SubscribeSync(subj)
		require.NoError(t, err)
	}
	require.NoError(t, c.NC.Flush())
	eventually(t, func() bool { return c.HasError(nil, "maximum subscriptions exceeded") }, "the subscription limit holds")

	// The payload limit is the user's own, below the server's: the server
	// tells the client after authenticating it, and the client refuses.
	eventually(t, func() bool { return c.NC.MaxPayload() == 4096 }, "the payload limit reaches the client")
	require.ErrorIs(t, c.NC.Publish("orders.events.big", bytes.Repeat([]byte("x"), 5000)), nats.ErrMaxPayload)
}

// newPeer issues another user of the same account allowed everything, to
// talk to the user under test.
func newPeer(t *testing.T, p *rig, name string) *natstest.Client {
	t.Helper()
	res := p.mustConfigure(p.request(name, map[string]any{
		"account":   "payments",
		"publish":   map[string]any{"allow": []any{">"}},
		"subscribe": map[string]any{"allow": []any{">"}},
	}))
	return p.unseal(res).MustConnect(t)
}

// TestEmptyAllowListAllowsNothing: NATS would allow everything; the API
// allows nothing.
func TestEmptyAllowListAllowsNothing(t *testing.T) {
	ns := natstest.Serve(t, "payments")
	p := newRig(t, ns)
	w := p.unseal(p.mustConfigure(p.request("mute", map[string]any{"account": "payments"})))
	c := w.MustConnect(t)
	require.NoError(t, c.NC.Publish("anything", nil))
	_, err := c.NC.SubscribeSync("anything")
	require.NoError(t, err)
	require.NoError(t, c.NC.Flush())
	eventually(t, func() bool {
		return c.HasError(nil, `Permissions Violation for Publish to "anything"`) &&
			c.HasError(nil, `Permissions Violation for Subscription to "anything"`)
	}, "a user that lists nothing may do nothing")
}

// TestReconcilesAreStableAndRotationHappensOnce is the idempotency guard
// end to end: 100 re-runs change nothing, the same user is reused; moving
// into the rotate-before window issues exactly one new user, and the old
// one keeps working, since it has not expired.
func TestReconcilesAreStableAndRotationHappensOnce(t *testing.T) {
	ns := natstest.Serve(t, "payments")
	p := newRig(t, ns)
	spec := ordersSpec()
	spec["credentials"] = map[string]any{"ttl": "1h", "rotateBefore": "10m"}
	obj := p.request("orders", spec)

	var outputs []map[string][]byte
	var statuses []string
	run := func(n int) {
		t.Helper()
		for range n {
			res := p.mustConfigure(obj)
			status, err := yaml.Marshal(res.Status)
			require.NoError(t, err)
			files := res.Files()
			if len(outputs) == 0 || !equalFiles(outputs[len(outputs)-1], files) {
				outputs = append(outputs, files)
			}
			if len(statuses) == 0 || statuses[len(statuses)-1] != string(status) {
				statuses = append(statuses, string(status))
			}
		}
	}
	run(100)
	require.Len(t, outputs, 1, "100 reconciles, one output")
	require.Len(t, statuses, 1, "100 reconciles, one status")
	first, _ := p.entry(obj)
	old := p.unsealFiles(outputs[0])

	p.clock.advance(49 * time.Minute)
	run(20)
	require.Len(t, outputs, 1, "before the window nothing changes")

	p.clock.advance(2 * time.Minute) // 51 minutes in: inside the 10 minute window
	run(50)
	require.Len(t, outputs, 2, "the rotation changes the output exactly once")
	require.Len(t, statuses, 2)
	second, _ := p.entry(obj)
	require.NotEqual(t, first.ID, second.ID)
	require.Equal(t, ledger.ReasonExpiring, second.Reason)
	require.Equal(t, []string{first.ID}, second.Retire, "the old user is valid for 9 more minutes: deleting now would revoke it")
	require.Contains(t, statuses[1], "pendingRetire: 1")
	for _, f := range []string{"user/secret.yaml", "user/configmap.yaml"} {
		require.NotEqual(t, outputs[0][f], outputs[1][f], f)
	}

	// Both users work: the old one until it expires, as the workload may
	// not have picked up the new Secret yet.
	current := p.unsealFiles(outputs[1])
	require.NotEqual(t, old.Claims(t).Subject, current.Claims(t).Subject)
	for _, w := range []natstest.Workload{old, current} {
		c := w.MustConnect(t)
		require.NoError(t, c.NC.Publish("orders.events.created", nil))
		require.NoError(t, c.NC.Flush())
	}
	require.Empty(t, ns.AccountClaims(t, "payments").Revocations, "a rotation by age revokes nothing")

	// Once the old user has expired it is forgotten; only the status says so.
	p.clock.advance(10 * time.Minute)
	run(10)
	require.Len(t, outputs, 2)
	require.Len(t, statuses, 3)
	require.NotContains(t, statuses[2], "pendingRetire")
	third, _ := p.entry(obj)
	require.Equal(t, second.ID, third.ID)
	require.Empty(t, third.Retire)
	require.True(t, third.Used)
}

// TestDeleteDuringHandOverRevokesBothUsers: a request deleted while the
// user it replaced by age is still valid revokes that one as well.
func TestDeleteDuringHandOverRevokesBothUsers(t *testing.T) {
	ns := natstest.Serve(t, "payments")
	p := newRig(t, ns)
	spec := ordersSpec()
	spec["credentials"] = map[string]any{"ttl": "1h", "rotateBefore": "10m"}
	obj := p.request("orders", spec)
	old := p.unseal(p.mustConfigure(obj))
	p.clock.advance(55 * time.Minute)
	current := p.unseal(p.mustConfigure(obj))
	oldClient, newClient := old.MustConnect(t), current.MustConnect(t)

	require.NoError(t, p.delete(obj))
	for _, c := range []*natstest.Client{oldClient, newClient} {
		eventually(t, func() bool { return c.HasError(nats.ErrAuthRevoked, "") }, "both users are revoked")
	}
}

func equalFiles(a, b map[string][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || !bytes.Equal(v, w) {
			return false
		}
	}
	return true
}

// TestForcedRotationRevokesTheOldUser: the rotate annotation exists for a
// leaked file, so the replaced user stops working at once, connected
// clients included.
func TestForcedRotationRevokesTheOldUser(t *testing.T) {
	ns := natstest.Serve(t, "payments")
	p := newRig(t, ns)
	obj := p.request("orders", ordersSpec())
	old := p.unseal(p.mustConfigure(obj))
	c := old.MustConnect(t)

	obj.SetAnnotations(map[string]string{ledger.RotateAnnotation: "2026-03-01T10:00:00Z"})
	res := p.mustConfigure(obj)
	current := p.unseal(res)
	require.NotEqual(t, old.Claims(t).Subject, current.Claims(t).Subject)
	require.Equal(t, "forced", res.Status["credentials"].([]any)[0].(map[string]any)["issuedBecause"])

	eventually(t, func() bool { return c.HasError(nats.ErrAuthRevoked, "") }, "the old user's connection is revoked")
	_, err := old.Connect(t)
	require.ErrorIs(t, err, nats.ErrAuthorization)
	current.MustConnect(t)

	// The annotation is honoured once.
	before := p.previous["orders"]
	p.mustConfigure(obj)
	require.True(t, equalFiles(before, p.previous["orders"]))
}

// TestPermissionChangeReissues: a new subject re-issues the user with a new
// key and revokes the old one, whose file still grants the old permissions.
func TestPermissionChangeReissues(t *testing.T) {
	ns := natstest.Serve(t, "payments")
	p := newRig(t, ns)
	spec := ordersSpec()
	obj := p.request("orders", spec)
	old := p.unseal(p.mustConfigure(obj))

	// Reordering lists grants the same: nothing changes.
	spec["subscribe"] = map[string]any{"allow": []any{"_INBOX.>", "orders.commands.*", "_INBOX.>"}}
	before := p.previous["orders"]
	p.mustConfigure(p.request("orders", spec))
	require.True(t, equalFiles(before, p.previous["orders"]))

	spec["publish"] = map[string]any{"allow": []any{"orders.events.>", "audit.>"}}
	obj = p.request("orders", spec)
	res := p.mustConfigure(obj)
	current := p.unseal(res)
	require.NotEqual(t, old.Claims(t).Subject, current.Claims(t).Subject)
	require.Equal(t, "meaning-changed", res.Status["credentials"].([]any)[0].(map[string]any)["issuedBecause"])
	_, err := old.Connect(t)
	require.ErrorIs(t, err, nats.ErrAuthorization, "the old user is revoked")
	c := current.MustConnect(t)
	require.NoError(t, c.NC.Publish("audit.login", nil))
	require.NoError(t, c.NC.Flush())
	time.Sleep(100 * time.Millisecond)
	require.Empty(t, c.Errors(), "the new permission is in force")
}

// TestDeleteRevokes: the delete workflow revokes the user through the
// resolver; a connected client is disconnected and cannot come back.
func TestDeleteRevokes(t *testing.T) {
	ns := natstest.Serve(t, "payments")
	p := newRig(t, ns)
	obj := p.request("orders", ordersSpec())
	w := p.unseal(p.mustConfigure(obj))
	c := w.MustConnect(t)
	user := w.Claims(t).Subject

	require.NoError(t, p.delete(obj))
	eventually(t, func() bool { return c.HasError(nats.ErrAuthRevoked, "") }, "the client hears that it is revoked")
	select {
	case <-c.Closed:
	case <-time.After(10 * time.Second):
		t.Fatal("the revoked client was not disconnected for good")
	}
	_, err := w.Connect(t)
	require.ErrorIs(t, err, nats.ErrAuthorization)
	require.Contains(t, ns.AccountClaims(t, "payments").Revocations, user)
	_, found := p.entry(obj)
	require.False(t, found, "the ledger forgets a revoked user")

	// A retried delete (the controller retries until it can drop the
	// finalizer) finds nothing left to do.
	require.NoError(t, p.delete(obj))
}

// TestDeleteRevokesReplacedUsersToo: a user replaced by age is still valid
// until it expires; deleting the request revokes it as well as the current
// one when a crash left it unsettled.
func TestDeleteRevokesReplacedUsersToo(t *testing.T) {
	ns := natstest.Serve(t, "payments")
	p := newRig(t, ns)
	obj := p.request("orders", ordersSpec())
	old := p.unseal(p.mustConfigure(obj))
	// A re-issue whose run stopped before settling leaves the old user in
	// Retire: the next runs reuse the new user, and delete must revoke both.
	e, _ := p.entry(obj)
	e.Retire = []string{"UDXU4RCSJNZOIQHZNWXHXORDPRTGNJAHAHFRGZNEEJCPQTT2M7NLCNF4"}
	key := ledger.Key{Owner: ledger.OwnerFromObject(p.promise.Name, obj), Credential: credentialName}
	_, err := p.ledger.Put(context.Background(), key, e)
	require.NoError(t, err)

	require.NoError(t, p.delete(obj))
	revoked := ns.AccountClaims(t, "payments").Revocations
	require.Contains(t, revoked, old.Claims(t).Subject)
	require.Contains(t, revoked, "UDXU4RCSJNZOIQHZNWXHXORDPRTGNJAHAHFRGZNEEJCPQTT2M7NLCNF4")
}

// TestConcurrentDeletesKeepEveryRevocation: revocations rewrite one
// account JWT; deleting many users at once must lose none of them.
func TestConcurrentDeletesKeepEveryRevocation(t *testing.T) {
	ns := natstest.Serve(t, "payments")
	p := newRig(t, ns)
	var objs []*unstructured.Unstructured
	var users []string
	for _, name := range []string{"a", "b", "c", "d", "e", "f"} {
		obj := p.request(name, ordersSpec())
		users = append(users, p.unseal(p.mustConfigure(obj)).Claims(t).Subject)
		objs = append(objs, obj)
	}
	errs := make(chan error, len(objs))
	for _, obj := range objs {
		go func() { errs <- p.delete(obj) }()
	}
	for range objs {
		require.NoError(t, <-errs)
	}
	revoked := ns.AccountClaims(t, "payments").Revocations
	for _, u := range users {
		require.Contains(t, revoked, u)
	}
}

// TestExpiredUserCannotConnect issues a user whose ttl ended an hour ago.
func TestExpiredUserCannotConnect(t *testing.T) {
	ns := natstest.Serve(t, "payments")
	p := newRig(t, ns)
	p.clock.advance(-2 * time.Hour)
	spec := ordersSpec()
	spec["credentials"] = map[string]any{"ttl": "1h", "rotateBefore": "10m"}
	w := p.unseal(p.mustConfigure(p.request("orders", spec)))
	require.Less(t, w.Claims(t).Expires, time.Now().Unix())
	_, err := w.Connect(t)
	require.ErrorIs(t, err, nats.ErrAuthorization)
}

// TestDeleteFailsWhileTheResolverIsUnreachable: the error says what failed;
// nothing is forgotten, so the retry revokes once NATS is back.
func TestDeleteFailsWhileTheResolverIsUnreachable(t *testing.T) {
	ns := natstest.Serve(t, "payments")
	p := newRig(t, ns)
	obj := p.request("orders", ordersSpec())
	w := p.unseal(p.mustConfigure(obj))

	p.secrets.set(t, platformData(t, ns, "nats://127.0.0.1:1"))
	err := p.delete(obj)
	require.Error(t, err)
	require.Contains(t, err.Error(), "connecting to the NATS servers [nats://127.0.0.1:1]")
	require.Contains(t, err.Error(), `pipeline "revoke"`)
	p.checkNoLeak(nil, err)
	_, found := p.entry(obj)
	require.True(t, found, "the user is not forgotten before it is revoked")
	w.MustConnect(t)

	p.secrets.set(t, platformData(t, ns, ns.URL))
	require.NoError(t, p.delete(obj))
	_, err = w.Connect(t)
	require.ErrorIs(t, err, nats.ErrAuthorization)
}

// TestRevocationByExpiry: an account whose operator key the platform does
// not hold is configured to rely on expiry; delete forgets the user, which
// keeps working until its JWT expires.
func TestRevocationByExpiry(t *testing.T) {
	ns := natstest.Serve(t, "payments")
	p := newRig(t, ns)
	data := platformData(t, ns, ns.URL)
	for _, k := range []string{KeyOperatorSigningSeed, KeyOperatorJWT, KeySystemCreds} {
		delete(data, k)
	}
	p.secrets.set(t, data)
	obj := p.request("orders", ordersSpec())
	_, err := p.configure(obj)
	require.ErrorContains(t, err, `no key "operator-signing-seed"`)
	require.ErrorContains(t, err, "payments.revocation")
	_, found := p.entry(obj)
	require.False(t, found, "nothing is issued on a platform that could not revoke it")

	data["payments"+SuffixRevocation] = RevocationExpiry
	p.secrets.set(t, data)
	w := p.unseal(p.mustConfigure(obj))
	require.NoError(t, p.delete(obj))
	_, found = p.entry(obj)
	require.False(t, found)
	w.MustConnect(t)
}

// TestResolverRefusesAnUntrustedSigner: an operator signing key the
// servers do not trust is caught before a revocation is pushed, instead of
// the resolver storing a JWT the servers then ignore.
func TestResolverRefusesAnUntrustedSigner(t *testing.T) {
	ns := natstest.Serve(t, "payments")
	p := newRig(t, ns)
	obj := p.request("orders", ordersSpec())
	p.mustConfigure(obj)

	stranger := natstest.NewKeys(t)
	data := platformData(t, ns, ns.URL)
	data[KeyOperatorSigningSeed] = natstest.Seed(t, stranger.OperatorSigner)
	p.secrets.set(t, data)
	err := p.delete(obj)
	require.ErrorContains(t, err, "is not one the operator")
	p.checkNoLeak(nil, err)

	// Both from another operator: the resolver's JWT gives it away.
	data[KeyOperatorJWT] = stranger.OperatorJWT
	p.secrets.set(t, data)
	err = p.delete(obj)
	require.ErrorContains(t, err, "does not trust")
	p.checkNoLeak(nil, err)
	_, found := p.entry(obj)
	require.True(t, found)
}

// TestBadInputIssuesNothing: requests and platform configurations that
// cannot give a working user fail with an error naming what to fix, issue
// no credential and write nothing.
func TestBadInputIssuesNothing(t *testing.T) {
	ns := natstest.Serve(t, "payments")
	for _, tc := range []struct {
		name     string
		spec     func(map[string]any)
		platform func(map[string]string)
		want     []string
	}{
		{name: "unknown account", spec: func(s map[string]any) { s["account"] = "billing" },
			want: []string{`spec.account: account "billing" is not configured`, `no key "billing.public-key"`}},
		{name: "signing key missing", platform: func(d map[string]string) { delete(d, "payments.signing-seed") },
			want: []string{`no key "payments.signing-seed"`}},
		{name: "signing key malformed", platform: func(d map[string]string) { d["payments.signing-seed"] = "SAnotaseed" },
			want: []string{`key "payments.signing-seed" is not an nkey seed`}},
		{name: "signing key of the wrong kind", platform: func(d map[string]string) { d["payments.signing-seed"] = natstest.Seed(t, ns.OperatorSigner) },
			want: []string{`key "payments.signing-seed" holds the seed of an operator key`}},
		{name: "account public key malformed", platform: func(d map[string]string) { d["payments.public-key"] = "UABC" },
			want: []string{`key "payments.public-key" is not an account public key`}},
		{name: "servers missing", platform: func(d map[string]string) { delete(d, KeyServers) },
			want: []string{`no key "servers"`}},
		{name: "servers with a password", platform: func(d map[string]string) { d[KeyServers] = "nats://u:hunter2@127.0.0.1:4222" },
			want: []string{"carries user information"}},
		{name: "system creds malformed", platform: func(d map[string]string) { d[KeySystemCreds] = "not creds" },
			want: []string{`key "system-creds"`}},
		{name: "revocation mode unknown", platform: func(d map[string]string) { d["payments.revocation"] = "never" },
			want: []string{`"payments.revocation" is "never"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newRig(t, ns)
			data := platformData(t, ns, ns.URL)
			if tc.platform != nil {
				tc.platform(data)
				p.secrets.set(t, data)
			}
			spec := ordersSpec()
			if tc.spec != nil {
				tc.spec(spec)
			}
			obj := p.request("orders", spec)
			res, err := p.configure(obj)
			require.Error(t, err)
			require.Nil(t, res, "nothing is written")
			for _, w := range tc.want {
				require.Contains(t, err.Error(), w)
			}
			require.NotContains(t, err.Error(), "hunter2")
			p.checkNoLeak(nil, err)
			_, found := p.entry(obj)
			require.False(t, found, "no credential is issued")
		})
	}
}

// TestSchemaRefusesBadRequests: the promise's API refuses what the stage
// would refuse, naming the field, before any pipeline runs.
func TestSchemaRefusesBadRequests(t *testing.T) {
	ns := natstest.NewKeys(t, "payments")
	p := &rig{t: t, nats: ns}
	var err error
	p.promise, err = local.LoadPromise(".")
	require.NoError(t, err)
	p.crd, err = apischema.CRD(p.promise)
	require.NoError(t, err)
	for _, tc := range []struct {
		name string
		spec func(map[string]any)
		want string
	}{
		{"subject with a space", func(s map[string]any) { s["publish"] = map[string]any{"allow": []any{"orders created"}} }, "spec.publish.allow[0]"},
		{"empty token", func(s map[string]any) { s["subscribe"] = map[string]any{"deny": []any{"orders..created"}} }, "spec.subscribe.deny[0]"},
		{"> not last", func(s map[string]any) { s["publish"] = map[string]any{"allow": []any{"orders.>.x"}} }, "spec.publish.allow[0]"},
		{"payload out of range", func(s map[string]any) { s["limits"] = map[string]any{"payload": int64(100 << 20)} }, "spec.limits.payload"},
		{"subscriptions negative", func(s map[string]any) { s["limits"] = map[string]any{"subscriptions": int64(-2)} }, "spec.limits.subscriptions"},
		{"unknown connection type", func(s map[string]any) { s["connectionTypes"] = []any{"SMOKE_SIGNALS"} }, "spec.connectionTypes[0]"},
		{"bad ttl", func(s map[string]any) { s["credentials"] = map[string]any{"ttl": "a month"} }, "spec.credentials.ttl"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			spec := ordersSpec()
			tc.spec(spec)
			obj := &unstructured.Unstructured{Object: map[string]any{
				"apiVersion": "nats.promised.dev/v1alpha1", "kind": "NatsUser",
				"metadata": map[string]any{"name": "orders", "namespace": "payments"}, "spec": spec,
			}}
			_, err := apischema.Check(p.crd, obj)
			require.ErrorContains(t, err, tc.want)
			// The stage refuses it too, in case it gets there another way.
			_, err = parseUser(obj)
			require.ErrorContains(t, err, tc.want)
		})
	}
}

// TestNoJWTInStatus: the status names the credential; neither the seed nor
// the JWT, which is a bearer of the permissions if anyone loses the seed
// with it.
func TestNoJWTInStatus(t *testing.T) {
	ns := natstest.Serve(t, "payments")
	p := newRig(t, ns)
	res := p.mustConfigure(p.request("orders", ordersSpec()))
	status, err := yaml.Marshal(res.Status)
	require.NoError(t, err)
	require.NotContains(t, string(status), "eyJ", "no JWT")
	p.checkNoLeak(res, nil)
	var parsed struct {
		Credentials []ledger.CredentialStatus `json:"credentials"`
	}
	require.NoError(t, yaml.Unmarshal(status, &parsed))
	require.Len(t, parsed.Credentials, 1)
	require.True(t, strings.HasPrefix(parsed.Credentials[0].ID, "U"))
}
