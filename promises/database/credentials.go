package database

import (
	"context"
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"promised.dev/promised/pipelines/ledger"
	"promised.dev/promised/pipelines/stage"
)

// CredentialName is the ledger credential (ledger.Key.Credential) holding
// a request's database password.
const CredentialName = "password"

// passwordKey is the ledger entry's data key for the password.
const passwordKey = "password"

// Variables of the credential policy, set on the configure container in
// promise.yaml. Both are Go durations (2160h); without them a password
// never ages out and rotates only on the rotate annotation.
const (
	// EnvPasswordTTL is how long a password is used before it is rotated.
	EnvPasswordTTL = "DATABASE_PASSWORD_TTL"
	// EnvPasswordRotateBefore rotates that long before the TTL ends.
	EnvPasswordRotateBefore = "DATABASE_PASSWORD_ROTATE_BEFORE"
)

// policy is the password's ledger policy for a request. Meaning is the
// plan and role: a password is only ever good for the role it was minted
// for.
func policy(getenv func(string) string, obj *unstructured.Unstructured, plan Plan, role string) (ledger.Policy, error) {
	p := ledger.Policy{Meaning: string(plan) + "/" + role, RotateRequest: ledger.RotateRequest(obj)}
	for name, d := range map[string]*time.Duration{EnvPasswordTTL: &p.TTL, EnvPasswordRotateBefore: &p.RotateBefore} {
		v := strings.TrimSpace(getenv(name))
		if v == "" {
			continue
		}
		parsed, err := time.ParseDuration(v)
		if err != nil {
			return ledger.Policy{}, fmt.Errorf("%s %q: %w", name, v, err)
		}
		*d = parsed
	}
	if err := p.Validate(); err != nil {
		return ledger.Policy{}, err
	}
	return p, nil
}

// passwordBytes is the entropy of a minted password: 256 bits, written in
// 43 URL-safe characters, so it needs no escaping in a URI.
const passwordBytes = 32

// mintPassword only generates material, as ledger.MintFunc must: the role
// gets the password after Obtain has recorded it.
func mintPassword(context.Context) (ledger.Entry, error) {
	b := make([]byte, passwordBytes)
	if _, err := rand.Read(b); err != nil {
		return ledger.Entry{}, fmt.Errorf("generating a password: %w", err)
	}
	return ledger.Entry{Data: map[string][]byte{passwordKey: []byte(base64.RawURLEncoding.EncodeToString(b))}}, nil
}

// obtainPassword returns the request's password from the ledger, minting
// one only when its policy says so.
func obtainPassword(ctx context.Context, c *stage.Context, obj *unstructured.Unstructured, plan Plan, role string) (ledger.Ledger, ledger.Issued, error) {
	l, err := c.Ledger()
	if err != nil {
		return nil, ledger.Issued{}, err
	}
	p, err := policy(c.Getenv, obj, plan, role)
	if err != nil {
		return nil, ledger.Issued{}, err
	}
	key := ledger.Key{Owner: ledger.OwnerFromObject(c.Env.PromiseName, obj), Credential: CredentialName}
	issued, err := ledger.Obtain(ctx, l, key, p, time.Now(), mintPassword)
	if err != nil {
		return nil, ledger.Issued{}, err
	}
	if len(issued.Entry.Data[passwordKey]) == 0 {
		return nil, ledger.Issued{}, fmt.Errorf("%s holds no %q", key, passwordKey)
	}
	return l, issued, nil
}

// scramIterations is PostgreSQL's default scram_iterations.
const scramIterations = 4096

// scramVerifier returns the SCRAM-SHA-256 verifier PostgreSQL stores for
// password (RFC 5802, RFC 7677), in pg_authid's format. The role is given
// the verifier, never the password: PostgreSQL stores a verifier it is
// given as is, so the plaintext never crosses the connection and never
// reaches a server log (log_statement = ddl logs ALTER ROLE in full),
// which is what psql's \password does too. The password must be ASCII, for
// which SASLprep changes nothing; minted ones are.
func scramVerifier(password string, salt []byte, iterations int) (string, error) {
	for i := 0; i < len(password); i++ {
		if password[i] < 0x21 || password[i] > 0x7e {
			return "", errors.New("the password holds characters that need SASLprep, which minted passwords never do")
		}
	}
	salted, err := pbkdf2.Key(sha256.New, password, salt, iterations, sha256.Size)
	if err != nil {
		return "", fmt.Errorf("deriving the SCRAM key: %w", err)
	}
	mac := func(key []byte, msg string) []byte {
		m := hmac.New(sha256.New, key)
		m.Write([]byte(msg))
		return m.Sum(nil)
	}
	storedKey := sha256.Sum256(mac(salted, "Client Key"))
	serverKey := mac(salted, "Server Key")
	b64 := base64.StdEncoding.EncodeToString
	return fmt.Sprintf("SCRAM-SHA-256$%d:%s$%s:%s", iterations, b64(salt), b64(storedKey[:]), b64(serverKey)), nil
}

// newVerifier is scramVerifier with a fresh random salt.
func newVerifier(password string) (string, error) {
	salt := make([]byte, 16)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("generating a SCRAM salt: %w", err)
	}
	return scramVerifier(password, salt, scramIterations)
}

// quoteLiteral quotes s as an SQL string literal the way PostgreSQL's own
// quote_literal does. It is only for the few values utility statements
// (CREATE ROLE ... PASSWORD, COMMENT ON) cannot take as parameters; every
// other value is a parameter.
func quoteLiteral(s string) (string, error) {
	if strings.ContainsRune(s, 0) {
		return "", errors.New("an SQL string cannot hold a NUL character")
	}
	q := strings.ReplaceAll(s, "'", "''")
	if strings.Contains(s, `\`) {
		// An E'' string reads backslashes as escapes whatever
		// standard_conforming_strings says, so doubling them is exact.
		return "E'" + strings.ReplaceAll(q, `\`, `\\`) + "'", nil
	}
	return "'" + q + "'", nil
}
