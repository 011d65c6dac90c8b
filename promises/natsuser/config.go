package natsuser

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"

	"promised.dev/promised/pipelines/stage"
)

// EnvAccountsSecret is the pipeline container's variable naming the platform
// Secret ("namespace/name") that describes the NATS system. It is set in
// promise.yaml, by the platform team, never by a request.
const EnvAccountsSecret = "NATS_ACCOUNTS_SECRET"

// Keys of the platform Secret. Keys of one account are "<account>.<suffix>";
// an account name is a DNS label and so holds no dot, which keeps them apart
// from the system-wide keys, which hold none either.
const (
	// KeyServers lists the client URLs (nats://, tls://, ws://, wss://)
	// written into every user's Secret and used to revoke, separated by
	// commas or white space.
	KeyServers = "servers"
	// KeyOperatorSigningSeed is an operator signing key's seed (SO...): the
	// key that re-signs an account JWT to add revocations. NATS servers
	// only accept account JWTs signed by their operator.
	KeyOperatorSigningSeed = "operator-signing-seed"
	// KeyOperatorJWT is the operator's JWT, which says which keys the
	// servers trust: the operator signing key above must be one of them.
	KeyOperatorJWT = "operator-jwt"
	// KeySystemCreds is a .creds file of a user of the system account,
	// which may publish $SYS.REQ.> requests to the account resolver.
	KeySystemCreds = "system-creds"

	// SuffixPublicKey follows an account name: the account's public key
	// (A...).
	SuffixPublicKey = ".public-key"
	// SuffixSigningSeed follows an account name: the seed (SA...) of an
	// unscoped signing key of the account, which signs its user JWTs.
	SuffixSigningSeed = ".signing-seed"
	// SuffixRevocation follows an account name: how users of the account
	// are revoked, RevocationResolver (the default) or RevocationExpiry.
	SuffixRevocation = ".revocation"
)

// Revocation modes of an account (SuffixRevocation).
const (
	// RevocationResolver revokes users by pushing the account JWT, with the
	// users in its revocation list, to the account resolver. It needs
	// KeyOperatorSigningSeed, KeyOperatorJWT and KeySystemCreds.
	RevocationResolver = "resolver"
	// RevocationExpiry never revokes: a deleted or replaced user keeps
	// working until its JWT expires, so keep the ttl short. For services
	// whose operator key the platform cannot hold.
	RevocationExpiry = "expiry"
)

// errPlatform marks errors in the platform's configuration, as opposed to
// the request: the developer cannot fix them.
var errPlatform = errors.New("platform NATS configuration")

// platform is the platform Secret, read once per run.
type platform struct {
	// ref is "namespace/name", for errors.
	ref  string
	data map[string][]byte
}

// loadPlatform reads the platform Secret the pipeline's env names.
func loadPlatform(ctx context.Context, c *stage.Context) (*platform, error) {
	ref := strings.TrimSpace(c.Getenv(EnvAccountsSecret))
	ns, name, ok := strings.Cut(ref, "/")
	if ref == "" || !ok || ns == "" || name == "" {
		return nil, fmt.Errorf("%w: the pipeline's %s is %q, want the platform Secret as namespace/name (set it in promise.yaml)", errPlatform, EnvAccountsSecret, ref)
	}
	secrets, err := c.Secrets()
	if err != nil {
		return nil, err
	}
	data, err := secrets.Get(ctx, ns, name)
	if err != nil {
		return nil, fmt.Errorf("%w: reading Secret %s: %w", errPlatform, ref, err)
	}
	return &platform{ref: ref, data: data}, nil
}

// value returns a key's value with surrounding white space removed (a
// Secret made with `kubectl create secret --from-file` ends in a newline).
func (p *platform) value(key string) string {
	return strings.TrimSpace(string(p.data[key]))
}

func (p *platform) missing(key, what string) error {
	return fmt.Errorf("%w: Secret %s has no key %q (%s)", errPlatform, p.ref, key, what)
}

// servers returns the client URLs, checked.
func (p *platform) servers() ([]string, error) {
	raw := p.value(KeyServers)
	if raw == "" {
		return nil, p.missing(KeyServers, "the NATS client URLs")
	}
	var out []string
	for _, s := range strings.FieldsFunc(raw, func(r rune) bool { return r == ',' || r == ' ' || r == '\n' || r == '\t' || r == '\r' }) {
		u, err := url.Parse(s)
		if err != nil {
			// url.Parse quotes the URL, which holds no secret: user
			// information is refused below.
			return nil, fmt.Errorf("%w: Secret %s, key %q: %w", errPlatform, p.ref, KeyServers, err)
		}
		switch {
		case u.User != nil:
			return nil, fmt.Errorf("%w: Secret %s, key %q: a URL carries user information; NATS credentials belong in %q and the users' Secrets, never in a URL", errPlatform, p.ref, KeyServers, KeySystemCreds)
		case u.Scheme != "nats" && u.Scheme != "tls" && u.Scheme != "ws" && u.Scheme != "wss":
			return nil, fmt.Errorf("%w: Secret %s, key %q: %q: want a nats://, tls://, ws:// or wss:// URL", errPlatform, p.ref, KeyServers, s)
		case u.Host == "":
			return nil, fmt.Errorf("%w: Secret %s, key %q: %q has no host", errPlatform, p.ref, KeyServers, s)
		}
		out = append(out, s)
	}
	return out, nil
}

// account is an account as the platform configures it.
type account struct {
	Name      string
	PublicKey string
	// Signer signs the account's user JWTs; SignerPublicKey is its public
	// key, which the account JWT lists as a signing key (or the account's
	// own key, when the platform holds the account's identity seed).
	Signer          nkeys.KeyPair
	SignerPublicKey string
}

// account returns the named account with its signing key. It never names a
// seed's value in an error, only its key.
func (p *platform) account(name string) (account, error) {
	pub, err := p.accountPublicKey(name)
	if err != nil {
		return account{}, err
	}
	seedKey := name + SuffixSigningSeed
	seed := p.value(seedKey)
	if seed == "" {
		return account{}, p.missing(seedKey, "the seed of a signing key of account "+name)
	}
	kp, err := nkeys.FromSeed([]byte(seed))
	if err != nil {
		return account{}, fmt.Errorf("%w: Secret %s, key %q is not an nkey seed: %w", errPlatform, p.ref, seedKey, err)
	}
	signer, err := kp.PublicKey()
	if err != nil {
		return account{}, fmt.Errorf("%w: Secret %s, key %q: %w", errPlatform, p.ref, seedKey, err)
	}
	if !nkeys.IsValidPublicAccountKey(signer) {
		return account{}, fmt.Errorf("%w: Secret %s, key %q holds the seed of %s key, want an account signing key (seed SA...)", errPlatform, p.ref, seedKey, keyKind(signer))
	}
	return account{Name: name, PublicKey: pub, Signer: kp, SignerPublicKey: signer}, nil
}

// accountPublicKey returns an account's public key; it is all the revoke
// stage needs of the account, so deleting a user does not depend on its
// signing key still being configured.
func (p *platform) accountPublicKey(name string) (string, error) {
	pubKey := name + SuffixPublicKey
	if _, ok := p.data[pubKey]; !ok {
		return "", fmt.Errorf("%w: spec.account: account %q is not configured (Secret %s has no key %q)", errBadRequest, name, p.ref, pubKey)
	}
	pub := p.value(pubKey)
	if !nkeys.IsValidPublicAccountKey(pub) {
		return "", fmt.Errorf("%w: Secret %s, key %q is not an account public key (A...)", errPlatform, p.ref, pubKey)
	}
	return pub, nil
}

// revocation returns an account's revocation mode.
func (p *platform) revocation(name string) (string, error) {
	key := name + SuffixRevocation
	switch m := p.value(key); m {
	case "", RevocationResolver:
		return RevocationResolver, nil
	case RevocationExpiry:
		return RevocationExpiry, nil
	default:
		return "", fmt.Errorf("%w: Secret %s, key %q is %q: want %q or %q", errPlatform, p.ref, key, m, RevocationResolver, RevocationExpiry)
	}
}

// resolver is what revoking through the account resolver needs.
type resolver struct {
	servers []string
	// systemJWT and systemSeed authenticate as the system account's user.
	systemJWT  string
	systemSeed string
	// signer re-signs account JWTs; trusted are the keys the operator JWT
	// trusts to sign them.
	signer  nkeys.KeyPair
	trusted map[string]bool
}

// resolver returns the revocation configuration for users of the account
// named account, checked without connecting: the configure stage calls it
// too, so that a platform that cannot revoke finds out when a user is
// issued rather than when one is deleted and its finalizer hangs.
func (p *platform) resolver(account string) (*resolver, error) {
	servers, err := p.servers()
	if err != nil {
		return nil, err
	}
	r := &resolver{servers: servers}

	need := fmt.Sprintf("needed to revoke users of account %s; or set %q to %q to rely on expiry", account, account+SuffixRevocation, RevocationExpiry)
	seed := p.value(KeyOperatorSigningSeed)
	if seed == "" {
		return nil, p.missing(KeyOperatorSigningSeed, "an operator signing key seed, "+need)
	}
	if r.signer, err = nkeys.FromSeed([]byte(seed)); err != nil {
		return nil, fmt.Errorf("%w: Secret %s, key %q is not an nkey seed: %w", errPlatform, p.ref, KeyOperatorSigningSeed, err)
	}
	signer, err := r.signer.PublicKey()
	if err != nil {
		return nil, fmt.Errorf("%w: Secret %s, key %q: %w", errPlatform, p.ref, KeyOperatorSigningSeed, err)
	}
	if !nkeys.IsValidPublicOperatorKey(signer) {
		return nil, fmt.Errorf("%w: Secret %s, key %q holds the seed of %s key, want an operator signing key (seed SO...)", errPlatform, p.ref, KeyOperatorSigningSeed, keyKind(signer))
	}

	opJWT := p.value(KeyOperatorJWT)
	if opJWT == "" {
		return nil, p.missing(KeyOperatorJWT, "the operator JWT, "+need)
	}
	op, err := jwt.DecodeOperatorClaims(opJWT)
	if err != nil {
		return nil, fmt.Errorf("%w: Secret %s, key %q is not an operator JWT: %w", errPlatform, p.ref, KeyOperatorJWT, err)
	}
	r.trusted = map[string]bool{}
	if !op.StrictSigningKeyUsage {
		r.trusted[op.Subject] = true
	}
	for _, k := range op.SigningKeys {
		r.trusted[k] = true
	}
	if !r.trusted[signer] {
		return nil, fmt.Errorf("%w: Secret %s: the key in %q (%s) is not one the operator %s in %q trusts to sign accounts", errPlatform, p.ref, KeyOperatorSigningSeed, signer, op.Subject, KeyOperatorJWT)
	}

	creds := p.data[KeySystemCreds]
	if len(strings.TrimSpace(string(creds))) == 0 {
		return nil, p.missing(KeySystemCreds, "a system account user's .creds, "+need)
	}
	if r.systemJWT, err = jwt.ParseDecoratedJWT(creds); err != nil {
		return nil, fmt.Errorf("%w: Secret %s, key %q is not a .creds file: %w", errPlatform, p.ref, KeySystemCreds, err)
	}
	uc, err := jwt.DecodeUserClaims(r.systemJWT)
	if err != nil {
		return nil, fmt.Errorf("%w: Secret %s, key %q does not hold a user JWT: %w", errPlatform, p.ref, KeySystemCreds, err)
	}
	kp, err := jwt.ParseDecoratedUserNKey(creds)
	if err != nil {
		return nil, fmt.Errorf("%w: Secret %s, key %q holds no user seed: %w", errPlatform, p.ref, KeySystemCreds, err)
	}
	pub, err := kp.PublicKey()
	if err != nil || pub != uc.Subject {
		return nil, fmt.Errorf("%w: Secret %s, key %q: its seed is not the key of its JWT's user", errPlatform, p.ref, KeySystemCreds)
	}
	seedBytes, err := kp.Seed()
	if err != nil {
		return nil, fmt.Errorf("%w: Secret %s, key %q: %w", errPlatform, p.ref, KeySystemCreds, err)
	}
	r.systemSeed = string(seedBytes)
	return r, nil
}

// keyKind names the kind of a public key, with its article, for errors.
func keyKind(pub string) string {
	switch {
	case nkeys.IsValidPublicOperatorKey(pub):
		return "an operator"
	case nkeys.IsValidPublicAccountKey(pub):
		return "an account"
	case nkeys.IsValidPublicUserKey(pub):
		return "a user"
	case nkeys.IsValidPublicServerKey(pub):
		return "a server"
	case nkeys.IsValidPublicClusterKey(pub):
		return "a cluster"
	default:
		return "a non-NATS"
	}
}
