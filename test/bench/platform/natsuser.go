package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"promised.dev/promised/api/v1alpha1"
	"promised.dev/promised/pipelines/stage"
	"promised.dev/promised/test/liveplatform"
)

const natsDir = "promises/natsuser"

// natsWorkload issues NATS users against an embedded nats-server in
// operator mode, as promises/natsuser's README describes: the platform
// Secret holds the operator's and accounts' signing keys and the server
// URLs. Every request mints a user (a ledger Secret) and seals it.
func natsWorkload(o options) *workload {
	if _, err := os.Stat(filepath.Join(o.root, natsDir, "promise.yaml")); err != nil {
		return nil
	}
	w := &workload{name: "natsuser", dirs: []string{natsDir}}
	var ex []*unstructured.Unstructured
	var srv *server.Server
	var data map[string]string
	w.setup = func(ctx context.Context, p *platform) error {
		var err error
		if ex, err = examples(o.root, natsDir); err != nil {
			return err
		}
		if len(ex) == 0 {
			// What the promise's own tests ask for, until it has testdata.
			ex = []*unstructured.Unstructured{{Object: map[string]any{
				"apiVersion": "nats.promised.dev/v1alpha1", "kind": "NatsUser",
				"spec": map[string]any{
					"account":   "orders",
					"publish":   map[string]any{"allow": []any{"orders.>"}},
					"subscribe": map[string]any{"allow": []any{"orders.>", "_INBOX.>"}},
				},
			}}}
		}
		accounts := map[string]bool{}
		for _, u := range ex {
			if a, _, _ := unstructured.NestedString(u.Object, "spec", "account"); a != "" {
				accounts[a] = true
			}
		}
		names := make([]string, 0, len(accounts))
		for a := range accounts {
			names = append(names, a)
		}
		sort.Strings(names)
		srv, data, err = startNATS(filepath.Join(p.Work, "nats"), names)
		if err != nil {
			return err
		}
		return p.platformSecret(ctx, "nats-accounts", data)
	}
	w.close = func() {
		if srv != nil {
			srv.Shutdown()
			srv.WaitForShutdown()
		}
	}
	w.request = func(i int, ns string) (*unstructured.Unstructured, error) {
		return fromExample(ex, i, fmt.Sprintf("nats-%05d", i), ns), nil
	}
	// The platform moves the promise to a second platform Secret whose
	// server list names the same server by another address: every user's
	// Secret gets the new URL and is sealed again; the credentials stay.
	w.change = func(ctx context.Context, p *platform) (string, error) {
		v2 := map[string]string{}
		for k, v := range data {
			v2[k] = v
		}
		v2["servers"] = strings.Replace(data["servers"], "127.0.0.1", "localhost", 1)
		if err := p.platformSecret(ctx, "nats-accounts-v2", v2); err != nil {
			return "", err
		}
		err := updatePromise(ctx, p, "natsuser", func(pr *v1alpha1.Promise) error {
			return setContainerEnv(pr, "credentials", "NATS_ACCOUNTS_SECRET", liveplatform.PlatformNamespace+"/nats-accounts-v2")
		})
		return "natsuser: NATS_ACCOUNTS_SECRET to a Secret with another server URL (every user's Secret changes and is sealed again)", err
	}
	w.affected = func(*unstructured.Unstructured) bool { return true }
	return w
}

// platformSecret creates a platform configuration Secret stages may read.
func (p *platform) platformSecret(ctx context.Context, name string, data map[string]string) error {
	sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: liveplatform.PlatformNamespace,
		Labels: map[string]string{stage.LabelPlatformConfig: "true"}}, StringData: data}
	return p.Client.Create(ctx, sec)
}

// startNATS serves a NATS system in operator mode (an operator with a
// signing key, a system account with a user, and accounts each with a
// signing key) with a full account resolver, and returns the platform
// Secret's data for it.
func startNATS(dir string, accounts []string) (*server.Server, map[string]string, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, nil, err
	}
	seed := func(kp nkeys.KeyPair) string { s, _ := kp.Seed(); return string(s) }
	pub := func(kp nkeys.KeyPair) string { s, _ := kp.PublicKey(); return s }
	operator, err := nkeys.CreateOperator()
	if err != nil {
		return nil, nil, err
	}
	opSigner, err := nkeys.CreateOperator()
	if err != nil {
		return nil, nil, err
	}
	sys, err := nkeys.CreateAccount()
	if err != nil {
		return nil, nil, err
	}
	// The operator is strict: identity keys sign only their own JWTs, so
	// the system account's user is signed by a signing key of it.
	sysSigner, err := nkeys.CreateAccount()
	if err != nil {
		return nil, nil, err
	}
	sysClaims := jwt.NewAccountClaims(pub(sys))
	sysClaims.Name = "SYS"
	sysClaims.SigningKeys.Add(pub(sysSigner))
	sysJWT, err := sysClaims.Encode(opSigner)
	if err != nil {
		return nil, nil, err
	}
	sysUser, err := nkeys.CreateUser()
	if err != nil {
		return nil, nil, err
	}
	uc := jwt.NewUserClaims(pub(sysUser))
	uc.Name = "platform"
	uc.IssuerAccount = pub(sys)
	userJWT, err := uc.Encode(sysSigner)
	if err != nil {
		return nil, nil, err
	}
	sysCreds, err := jwt.FormatUserConfig(userJWT, []byte(seed(sysUser)))
	if err != nil {
		return nil, nil, err
	}
	oc := jwt.NewOperatorClaims(pub(operator))
	oc.Name = "bench"
	oc.SigningKeys.Add(pub(opSigner))
	oc.SystemAccount = pub(sys)
	oc.StrictSigningKeyUsage = true
	opJWT, err := oc.Encode(operator)
	if err != nil {
		return nil, nil, err
	}
	data := map[string]string{
		"operator-signing-seed": seed(opSigner),
		"operator-jwt":          opJWT,
		"system-creds":          string(sysCreds),
	}
	preload := fmt.Sprintf("    %s: %q\n", pub(sys), sysJWT)
	for _, name := range accounts {
		kp, err := nkeys.CreateAccount()
		if err != nil {
			return nil, nil, err
		}
		signer, err := nkeys.CreateAccount()
		if err != nil {
			return nil, nil, err
		}
		ac := jwt.NewAccountClaims(pub(kp))
		ac.Name = name
		ac.SigningKeys.Add(pub(signer))
		accJWT, err := ac.Encode(opSigner)
		if err != nil {
			return nil, nil, err
		}
		preload += fmt.Sprintf("    %s: %q\n", pub(kp), accJWT)
		data[name+".public-key"] = pub(kp)
		data[name+".signing-seed"] = seed(signer)
	}
	opPath := filepath.Join(dir, "operator.jwt")
	if err := os.WriteFile(opPath, []byte(opJWT), 0o600); err != nil {
		return nil, nil, err
	}
	conf := fmt.Sprintf("host: 127.0.0.1\nport: -1\noperator: %q\nsystem_account: %s\nresolver: {\n  type: full\n  dir: %q\n  allow_delete: false\n  interval: \"2m\"\n}\nresolver_preload: {\n%s}\n",
		opPath, pub(sys), filepath.Join(dir, "jwt"), preload)
	confPath := filepath.Join(dir, "server.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		return nil, nil, err
	}
	opts, err := server.ProcessConfigFile(confPath)
	if err != nil {
		return nil, nil, err
	}
	opts.NoSigs, opts.NoLog = true, true
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, nil, err
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		return nil, nil, fmt.Errorf("nats-server did not start")
	}
	data["servers"] = srv.ClientURL()
	return srv, data, nil
}
