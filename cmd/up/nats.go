package up

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"promised.dev/promised/pipelines/stage"
	"promised.dev/promised/promises/natsuser"
)

// natsAccount is the one NATS account the local platform offers.
const natsAccount = "payments"

// startNATS runs a nats-server in operator mode with a full account
// resolver, as a platform team runs one, and registers it with the
// NatsUser promise. Keys are made once and kept in the state folder, so a
// second `up` trusts the users the first one issued.
func (p *Platform) startNATS(ctx context.Context) error {
	dir := p.path("nats")
	if err := os.MkdirAll(filepath.Join(dir, "jwt"), 0o700); err != nil {
		return fmt.Errorf("creating %s: %w", dir, err)
	}
	seed := func(name string, create func() (nkeys.KeyPair, error)) (nkeys.KeyPair, error) {
		path := filepath.Join(dir, name+".nk")
		if b, err := os.ReadFile(path); err == nil {
			return nkeys.FromSeed([]byte(strings.TrimSpace(string(b))))
		}
		kp, err := create()
		if err != nil {
			return nil, err
		}
		s, err := kp.Seed()
		if err != nil {
			return nil, err
		}
		return kp, os.WriteFile(path, s, 0o600)
	}
	var keys [7]nkeys.KeyPair
	for i, k := range []struct {
		name   string
		create func() (nkeys.KeyPair, error)
	}{
		{"operator", nkeys.CreateOperator}, {"operator-signer", nkeys.CreateOperator},
		{"sys", nkeys.CreateAccount}, {"sys-signer", nkeys.CreateAccount}, {"sys-user", nkeys.CreateUser},
		{"account", nkeys.CreateAccount}, {"account-signer", nkeys.CreateAccount},
	} {
		kp, err := seed(k.name, k.create)
		if err != nil {
			return fmt.Errorf("making the NATS %s key: %w", k.name, err)
		}
		keys[i] = kp
	}
	op, opSigner, sys, sysSigner, sysUser, acct, acctSigner := keys[0], keys[1], keys[2], keys[3], keys[4], keys[5], keys[6]
	pub := func(kp nkeys.KeyPair) string { s, _ := kp.PublicKey(); return s }

	oc := jwt.NewOperatorClaims(pub(op))
	oc.Name = "promised-local"
	oc.SigningKeys.Add(pub(opSigner))
	oc.SystemAccount = pub(sys)
	oc.StrictSigningKeyUsage = true
	opJWT, err := oc.Encode(op)
	if err != nil {
		return fmt.Errorf("signing the NATS operator: %w", err)
	}
	account := func(kp, signer nkeys.KeyPair, name string) (string, error) {
		ac := jwt.NewAccountClaims(pub(kp))
		ac.Name = name
		ac.SigningKeys.Add(pub(signer))
		return ac.Encode(opSigner)
	}
	sysJWT, err := account(sys, sysSigner, "SYS")
	if err != nil {
		return err
	}
	acctJWT, err := account(acct, acctSigner, natsAccount)
	if err != nil {
		return err
	}
	uc := jwt.NewUserClaims(pub(sysUser))
	uc.Name = "platform"
	uc.IssuerAccount = pub(sys)
	sysUserJWT, err := uc.Encode(sysSigner)
	if err != nil {
		return err
	}
	sysUserSeed, _ := sysUser.Seed()
	sysCreds, err := jwt.FormatUserConfig(sysUserJWT, sysUserSeed)
	if err != nil {
		return err
	}

	opPath := filepath.Join(dir, "operator.jwt")
	if err := os.WriteFile(opPath, []byte(opJWT), 0o600); err != nil {
		return err
	}
	conf := fmt.Sprintf("host: 127.0.0.1\nport: -1\noperator: %q\nsystem_account: %s\nresolver: {\n  type: full\n  dir: %q\n  allow_delete: false\n  interval: \"2m\"\n}\nresolver_preload: {\n  %s: %q\n  %s: %q\n}\n",
		opPath, pub(sys), filepath.Join(dir, "jwt"), pub(sys), sysJWT, pub(acct), acctJWT)
	confPath := filepath.Join(dir, "server.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		return err
	}
	opts, err := server.ProcessConfigFile(confPath)
	if err != nil {
		return fmt.Errorf("reading the NATS configuration: %w", err)
	}
	opts.NoSigs, opts.NoLog = true, true
	srv, err := server.NewServer(opts)
	if err != nil {
		return fmt.Errorf("starting NATS: %w", err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		return fmt.Errorf("NATS did not start within 10s")
	}
	p.stop = append(p.stop, func() { srv.Shutdown(); srv.WaitForShutdown() })
	p.natsURL = srv.ClientURL()

	opSeed, _ := opSigner.Seed()
	acctSeed, _ := acctSigner.Seed()
	sec := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "nats-accounts", Namespace: platformNamespace, Labels: map[string]string{stage.LabelPlatformConfig: "true"}},
		Data: map[string][]byte{
			natsuser.KeyServers:                      []byte(p.natsURL),
			natsuser.KeyOperatorSigningSeed:          opSeed,
			natsuser.KeyOperatorJWT:                  []byte(opJWT),
			natsuser.KeySystemCreds:                  sysCreds,
			natsAccount + natsuser.SuffixPublicKey:   []byte(pub(acct)),
			natsAccount + natsuser.SuffixSigningSeed: acctSeed,
			natsAccount + natsuser.SuffixRevocation:  []byte(natsuser.RevocationResolver),
		},
	}
	if err := apply(ctx, p.client, sec); err != nil {
		return err
	}
	p.say("NATS (operator mode, full resolver) at %s with account %s", p.natsURL, natsAccount)
	return nil
}

// checkNATS connects with a NatsUser's delivered credentials and proves a
// message published on an allowed subject arrives.
func (p *Platform) checkNATS(ctx context.Context, r row) string {
	req := &unstructured.Unstructured{}
	req.SetAPIVersion("nats.promised.dev/v1alpha1")
	req.SetKind("NatsUser")
	if err := p.client.Get(ctx, client.ObjectKey{Namespace: r.namespace, Name: r.name}, req); err != nil {
		return "cannot read the request: " + err.Error()
	}
	secretName, _, _ := unstructured.NestedString(req.Object, "spec", "secret", "name")
	if secretName == "" {
		secretName = r.name
	}
	pubs, _, _ := unstructured.NestedStringSlice(req.Object, "spec", "publish", "allow")
	subs, _, _ := unstructured.NestedStringSlice(req.Object, "spec", "subscribe", "allow")
	if len(r.destinations) == 0 || len(pubs) == 0 || len(subs) == 0 {
		return "nothing to check: no destination or no allowed subjects"
	}
	c, err := p.workloadClient(r.destinations[0])
	if err != nil {
		return err.Error()
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		msg, ok := tryNATS(ctx, c, r.namespace, secretName, concrete(pubs[0]), concrete(subs[0]))
		if ok || time.Now().After(deadline) {
			return msg
		}
		time.Sleep(time.Second)
	}
}

// concrete turns a subject pattern into one subject it matches.
func concrete(pattern string) string {
	parts := strings.Split(pattern, ".")
	for i, t := range parts {
		if t == "*" || t == ">" {
			parts[i] = "check"
		}
	}
	return strings.Join(parts, ".")
}

func tryNATS(ctx context.Context, c client.Client, namespace, secretName, pubSubject, subSubject string) (string, bool) {
	sec := &corev1.Secret{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: secretName}, sec); err != nil {
		return fmt.Sprintf("Secret %s/%s not delivered: %v", namespace, secretName, err), false
	}
	creds := sec.Data["nats.creds"]
	userJWT, err := jwt.ParseDecoratedJWT(creds)
	if err != nil {
		return "the delivered nats.creds does not parse", false
	}
	kp, err := jwt.ParseDecoratedUserNKey(creds)
	if err != nil {
		return "the delivered nats.creds holds no key", false
	}
	seed, _ := kp.Seed()
	nc, err := nats.Connect(string(sec.Data["url"]), nats.UserJWTAndSeed(userJWT, string(seed)), nats.Timeout(5*time.Second))
	if err != nil {
		return "connecting with the delivered credentials failed: " + err.Error(), false
	}
	defer nc.Close()
	sub, err := nc.SubscribeSync(subSubject)
	if err != nil {
		return "subscribing failed: " + err.Error(), false
	}
	if err := nc.Flush(); err != nil {
		return "subscribing failed: " + err.Error(), false
	}
	if err := nc.Publish(pubSubject, []byte("hello from promised up")); err != nil {
		return "publishing failed: " + err.Error(), false
	}
	if err := nc.Flush(); err != nil {
		return "publishing failed: " + err.Error(), false
	}
	if pubSubject == subSubject {
		if _, err := sub.NextMsg(5 * time.Second); err != nil {
			return "the published message did not arrive: " + err.Error(), false
		}
		return fmt.Sprintf("connected to NATS with the delivered credentials, published and received on %s", pubSubject), true
	}
	return fmt.Sprintf("connected to NATS with the delivered credentials, subscribed to %s and published on %s", subSubject, pubSubject), true
}
