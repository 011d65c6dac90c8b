package natsuser

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"

	"promised.dev/promised/pipelines/ledger"
	"promised.dev/promised/pipelines/stage"
	"promised.dev/promised/pipelines/ytt"
)

//go:embed all:templates
var templates embed.FS

// credentials is the configure stage: obtain the user from the ledger
// (minting it only when the policy says so), revoke the users it replaced
// when they must stop working now, and write the Secret and ConfigMap.
func (s *stages) credentials(ctx context.Context, c *stage.Context) error {
	obj, err := c.Object()
	if err != nil {
		return err
	}
	u, err := parseUser(obj)
	if err != nil {
		return err
	}
	plat, err := loadPlatform(ctx, c)
	if err != nil {
		return err
	}
	acct, err := plat.account(u.Account)
	if err != nil {
		return err
	}
	servers, err := plat.servers()
	if err != nil {
		return err
	}
	mode, err := plat.revocation(u.Account)
	if err != nil {
		return err
	}
	var res *resolver
	if mode == RevocationResolver {
		if res, err = plat.resolver(u.Account); err != nil {
			return err
		}
	}
	l, err := c.Ledger()
	if err != nil {
		return err
	}

	key := ledger.Key{Owner: ledger.OwnerFromObject(c.Env.PromiseName, obj), Credential: credentialName}
	// Obtain stores whole seconds; the JWT's expiry must be the entry's.
	now := s.now().UTC().Truncate(time.Second)
	policy := ledger.Policy{TTL: u.TTL, RotateBefore: u.RotateBefore, Meaning: u.meaning(acct), RotateRequest: ledger.RotateRequest(obj)}
	issued, err := ledger.Obtain(ctx, l, key, policy, now, func(context.Context) (ledger.Entry, error) {
		return mint(u, acct, now)
	})
	if err != nil {
		return err
	}
	userJWT, seed, err := fromEntry(issued)
	if err != nil {
		return err
	}

	// Provisioning: with decentralised authentication there is nothing to
	// create in NATS, the servers check the JWT against the account JWT
	// they hold. What remains is retiring the users this one replaced.
	if len(issued.Entry.Retire) > 0 && revokesReplaced(issued.Entry.Reason) && res != nil {
		if err := res.revoke(ctx, s.timeout, acct.PublicKey, issued.Entry.Retire); err != nil {
			return fmt.Errorf("the user was re-issued (%s) and the users it replaced must stop working now: %w", issued.Entry.Reason, err)
		}
	}

	creds, err := jwt.FormatUserConfig(userJWT, seed)
	if err != nil {
		// The library's errors name the claim type or the mismatch, never
		// the seed or the token.
		return fmt.Errorf("formatting the .creds file of %s: %w", key, err)
	}
	files, err := render(ctx, map[string]any{
		"request":          map[string]any{"namespace": u.Namespace, "name": u.Name},
		"secret":           map[string]any{"namespace": u.SecretNamespace, "name": u.SecretName},
		"account":          acct.Name,
		"accountPublicKey": acct.PublicKey,
		"userPublicKey":    issued.Entry.ID,
		"expiresAt":        formatTime(issued.Entry.ExpiresAt),
		"url":              strings.Join(servers, ","),
		"creds":            string(creds),
	}, string(creds), string(seed), userJWT)
	if err != nil {
		return err
	}
	for _, name := range sortedNames(files) {
		if err := c.WriteFile(name, files[name]); err != nil {
			return err
		}
	}

	if !replacedStillValid(issued.Entry, u.RotateBefore, now) {
		if err := ledger.SettleIssued(ctx, l, issued); err != nil {
			return err
		}
		issued.Entry.Retire = nil
	}
	return c.SetStatus(map[string]any{
		"credentials": []ledger.CredentialStatus{issued.Status()},
		"account":     acct.Name,
		"secret":      map[string]any{"namespace": u.SecretNamespace, "name": u.SecretName},
	})
}

// revokesReplaced says whether the users a credential replaced are revoked
// as soon as it is issued. A credential replaced by age keeps working until
// it expires: the rotate-before window is the time the workload has to pick
// up the new Secret, and revoking the old one at once would disconnect it.
// One replaced because its permissions changed, or because someone asked
// for a rotation (a leaked file), must stop working now: a permission that
// the old file still grants has not been taken away.
func revokesReplaced(r ledger.Reason) bool {
	return r == ledger.ReasonMeaningChanged || r == ledger.ReasonForced
}

// replacedStillValid says whether users e replaced by age may still be
// valid: each expires at most rotateBefore after its replacement was
// issued, since that is when it became due. Until then they stay in
// e.Retire (unsettled, counted in the status as pendingRetire), so that
// deleting the request meanwhile revokes them too.
func replacedStillValid(e ledger.Entry, rotateBefore time.Duration, now time.Time) bool {
	return len(e.Retire) > 0 && e.Reason == ledger.ReasonExpiring && now.Before(e.IssuedAt.Add(rotateBefore))
}

// mint creates a user: a fresh user key and a JWT for it valid from now for
// the request's ttl. A change of meaning mints a new key too, rather than
// re-signing a JWT for the old one: NATS revokes by key and issue time in
// whole seconds, so revoking the old JWT of a kept key would also revoke a
// new one issued in the same second, and a new key lets the old one be
// revoked outright. The workload reloads the .creds file either way.
func mint(u user, a account, now time.Time) (ledger.Entry, error) {
	kp, err := nkeys.CreateUser()
	if err != nil {
		return ledger.Entry{}, fmt.Errorf("creating a user key: %w", err)
	}
	defer kp.Wipe()
	pub, err := kp.PublicKey()
	if err != nil {
		return ledger.Entry{}, fmt.Errorf("creating a user key: %w", err)
	}
	// Seed returns the key pair's own buffer, which Wipe overwrites.
	seed, err := kp.Seed()
	if err != nil {
		return ledger.Entry{}, fmt.Errorf("creating a user key: %w", err)
	}
	seed = slices.Clone(seed)
	uc := jwt.NewUserClaims(pub)
	uc.Name = u.Namespace + "/" + u.Name
	if a.SignerPublicKey != a.PublicKey {
		uc.IssuerAccount = a.PublicKey
	}
	uc.Expires = now.Add(u.TTL).Unix()
	uc.Pub = u.Pub.jwtPermission()
	uc.Sub = u.Sub.jwtPermission()
	uc.Resp = u.Resp
	uc.Limits.Subs, uc.Limits.Payload, uc.Limits.Data = u.Subs, u.Payload, u.Data
	uc.AllowedConnectionTypes = slices.Clone(u.ConnTypes)
	// Times are left out of the check: the stage's clock decides them, and
	// the request's ttl is already checked.
	vr := jwt.CreateValidationResults()
	uc.Validate(vr)
	if vr.IsBlocking(false) {
		return ledger.Entry{}, fmt.Errorf("the user's claims are invalid: %w", errors.Join(vr.Errors()...))
	}
	token, err := uc.Encode(a.Signer)
	if err != nil {
		return ledger.Entry{}, fmt.Errorf("signing the user JWT with the signing key of account %s: %w", a.Name, err)
	}
	return ledger.Entry{ID: pub, Data: map[string][]byte{dataSeed: seed, dataJWT: []byte(token)}}, nil
}

// fromEntry returns the JWT and seed of an issued credential, checking that
// the entry holds them: a ledger entry edited by hand must not turn into a
// .creds file the servers refuse.
func fromEntry(i ledger.Issued) (string, []byte, error) {
	token, seed := string(i.Entry.Data[dataJWT]), i.Entry.Data[dataSeed]
	if token == "" || len(seed) == 0 {
		return "", nil, fmt.Errorf("the ledger entry of %s lacks %s or %s; delete it to issue a new user", i.Key, dataJWT, dataSeed)
	}
	uc, err := jwt.DecodeUserClaims(token)
	if err != nil || uc.Subject != i.Entry.ID {
		return "", nil, fmt.Errorf("the ledger entry of %s holds no JWT for user %s; delete it to issue a new user", i.Key, i.Entry.ID)
	}
	return token, seed, nil
}

// render renders the templates. ytt's messages can quote data values, and
// one of them is the .creds file, so an error is rebuilt with every secret
// replaced rather than wrapped.
func render(ctx context.Context, values map[string]any, secrets ...string) (map[string][]byte, error) {
	tpl, err := fs.Sub(templates, "templates")
	if err != nil {
		return nil, fmt.Errorf("opening templates: %w", err)
	}
	files, err := ytt.Render(ctx, tpl, values)
	if err != nil {
		return nil, redact(err, secrets...)
	}
	return files, nil
}

// redact returns err's message with every secret replaced. Pass the seed
// and the JWT on their own besides the .creds file holding them: a message
// may quote the file escaped or in part, but the tokens only whole.
func redact(err error, secrets ...string) error {
	msg := err.Error()
	// Longest first, so a secret inside another is replaced with it.
	secrets = slices.Clone(secrets)
	sort.Slice(secrets, func(i, j int) bool { return len(secrets[i]) > len(secrets[j]) })
	for _, s := range secrets {
		if s != "" {
			msg = strings.ReplaceAll(msg, s, "[redacted]")
		}
	}
	return errors.New(msg)
}

func sortedNames(m map[string][]byte) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func formatTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}
