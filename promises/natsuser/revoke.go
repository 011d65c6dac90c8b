package natsuser

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"promised.dev/promised/pipelines/ledger"
	"promised.dev/promised/pipelines/stage"
)

// Subjects of the NATS system account's resolver API.
const (
	// lookupSubject returns an account's JWT as the resolver holds it.
	lookupSubject = "$SYS.REQ.ACCOUNT.%s.CLAIMS.LOOKUP"
	// updateSubject stores an account JWT and applies it to every server.
	updateSubject = "$SYS.REQ.CLAIMS.UPDATE"
)

// revoke is the delete stage: revoke every user the request holds (its
// current one and any it replaced that are not confirmed revoked yet),
// then forget them. Any failure is returned, so the controller keeps the
// request's finalizer and retries; a re-run after a partial failure
// revokes again, which changes nothing for users already revoked.
func (s *stages) revoke(ctx context.Context, c *stage.Context) error {
	obj, err := c.Object()
	if err != nil {
		return err
	}
	l, err := c.Ledger()
	if err != nil {
		return err
	}
	owner := ledger.OwnerFromObject(c.Env.PromiseName, obj)
	keys, err := l.List(ctx, owner)
	if err != nil {
		return fmt.Errorf("listing the users of NatsUser %s/%s: %w", obj.GetNamespace(), obj.GetName(), err)
	}
	var users []string
	for _, k := range keys {
		e, found, err := l.Get(ctx, k)
		if err != nil {
			return fmt.Errorf("reading %s: %w", k, err)
		}
		if found {
			users = append(users, e.ID)
			users = append(users, e.Retire...)
		}
	}
	if len(users) == 0 {
		// Never issued (the configure pipeline failed first), or revoked
		// and forgotten by an earlier run of this workflow.
		return nil
	}
	slices.Sort(users)
	users = slices.Compact(users)

	name, err := accountOf(obj)
	if err != nil {
		return err
	}
	plat, err := loadPlatform(ctx, c)
	if err != nil {
		return err
	}
	mode, err := plat.revocation(name)
	if err != nil {
		return err
	}
	if mode == RevocationResolver {
		pub, err := plat.accountPublicKey(name)
		if err != nil {
			return err
		}
		res, err := plat.resolver(name)
		if err != nil {
			return err
		}
		if err := res.revoke(ctx, s.timeout, pub, users); err != nil {
			return err
		}
	}
	for _, k := range keys {
		if err := l.Delete(ctx, k); err != nil {
			return fmt.Errorf("the users are revoked but forgetting them failed: %w", err)
		}
	}
	return nil
}

// accountOf reads spec.account alone: a delete must not fail because some
// other field no longer passes a check that has since been tightened.
func accountOf(obj *unstructured.Unstructured) (string, error) {
	name, _, err := unstructured.NestedString(obj.Object, "spec", "account")
	if err != nil {
		return "", fmt.Errorf("%w: NatsUser %s/%s: spec.account: %w", errBadRequest, obj.GetNamespace(), obj.GetName(), err)
	}
	var errs fieldErrors
	checkAccountName(&errs, name)
	return name, errs.err(obj)
}

// accountLocks serialises revocations per account within this process: a
// revocation reads the account JWT, adds to it and writes it back, and two
// at once would each drop the other's users. Across processes (a second
// controller, an operator's nsc push) the check after each push catches a
// lost update; see revoke.
var accountLocks sync.Map // account public key → *sync.Mutex

// maxRevokeAttempts bounds how often a revocation is pushed again after
// finding another writer's account JWT in place of its own.
const maxRevokeAttempts = 3

// revoke adds users to the revocation list of the account accountPub and
// pushes the account JWT to the resolver, then reads it back to check the
// users are in it: the resolver answers "jwt updated" even when it keeps a
// newer JWT instead, which is how a concurrent writer's update would
// silently drop ours. Users already revoked are left as they are, so
// revoking twice pushes nothing.
func (r *resolver) revoke(ctx context.Context, timeout time.Duration, accountPub string, users []string) error {
	mu, _ := accountLocks.LoadOrStore(accountPub, &sync.Mutex{})
	mu.(*sync.Mutex).Lock()
	defer mu.(*sync.Mutex).Unlock()

	// Connect does not take a context; Timeout bounds each server tried.
	nc, err := nats.Connect(strings.Join(r.servers, ","),
		nats.UserJWTAndSeed(r.systemJWT, r.systemSeed),
		nats.Name("promised natsuser revocation"),
		nats.Timeout(timeout),
		nats.NoReconnect(),
	)
	if err != nil {
		return fmt.Errorf("revoking users of account %s: connecting to the NATS servers %v with the system account's credentials: %w", accountPub, r.servers, err)
	}
	defer nc.Close()

	for attempt := 1; ; attempt++ {
		ac, err := r.lookup(ctx, nc, timeout, accountPub)
		if err != nil {
			return err
		}
		missing := unrevoked(ac, users)
		if len(missing) == 0 {
			return nil
		}
		if attempt > maxRevokeAttempts {
			return fmt.Errorf("revoking users of account %s: after %d pushes the resolver still holds an account JWT without users %v: another writer keeps replacing it", accountPub, maxRevokeAttempts, missing)
		}
		if attempt > 1 {
			// The last push did not stick: another writer replaced it, or
			// in a cluster the lookup reached a server the push had not
			// been replicated to yet. Give either a moment.
			select {
			case <-ctx.Done():
				return fmt.Errorf("revoking users of account %s: %w", accountPub, ctx.Err())
			case <-time.After(time.Duration(attempt) * 200 * time.Millisecond):
			}
			if ac, err = r.lookup(ctx, nc, timeout, accountPub); err != nil {
				return err
			}
			if missing = unrevoked(ac, users); len(missing) == 0 {
				return nil
			}
		}
		at := revokeAt()
		for _, u := range missing {
			ac.RevokeAt(u, at)
		}
		token, err := ac.Encode(r.signer)
		if err != nil {
			return fmt.Errorf("revoking users of account %s: signing the account JWT with the operator signing key: %w", accountPub, err)
		}
		if err := r.push(ctx, nc, timeout, accountPub, token); err != nil {
			return err
		}
	}
}

// revokeAt is the time users are revoked at: every JWT of theirs issued up
// to it is refused. It is the wall clock, never a stage's clock, because the
// JWT library stamps issue times with the wall clock.
func revokeAt() time.Time { return time.Now() }

// unrevoked returns the users that ac does not revoke. A user key is minted
// once and all its JWTs are issued before it is ever revoked, so any
// revocation entry for it covers them all.
func unrevoked(ac *jwt.AccountClaims, users []string) []string {
	var out []string
	for _, u := range users {
		if _, ok := ac.Revocations[u]; !ok {
			out = append(out, u)
		}
	}
	return out
}

// lookup returns the account JWT the resolver holds: the revocation list
// is read from there and never from a copy in the platform Secret, which
// would be stale after the first revocation and, pushed back, undo it.
func (r *resolver) lookup(ctx context.Context, nc *nats.Conn, timeout time.Duration, accountPub string) (*jwt.AccountClaims, error) {
	msg, err := request(ctx, nc, timeout, fmt.Sprintf(lookupSubject, accountPub), nil)
	if err != nil {
		return nil, fmt.Errorf("revoking users of account %s: looking its JWT up: %w", accountPub, err)
	}
	if len(msg.Data) == 0 {
		return nil, fmt.Errorf("revoking users of account %s: the account resolver does not know the account", accountPub)
	}
	ac, err := jwt.DecodeAccountClaims(string(msg.Data))
	if err != nil {
		return nil, fmt.Errorf("revoking users of account %s: the resolver's answer is not an account JWT: %w", accountPub, err)
	}
	if ac.Subject != accountPub {
		return nil, fmt.Errorf("revoking users of account %s: the resolver answered with the JWT of account %s", accountPub, ac.Subject)
	}
	if !r.trusted[ac.Issuer] {
		return nil, fmt.Errorf("revoking users of account %s: its JWT is signed by %s, which the operator in %q does not trust: is %q the operator of these servers?", accountPub, ac.Issuer, KeyOperatorJWT, KeyOperatorJWT)
	}
	return ac, nil
}

// updateResponse is the resolver's answer to an update
// (server.ServerAPIClaimUpdateResponse).
type updateResponse struct {
	Data *struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	} `json:"data"`
	Error *struct {
		Code        int    `json:"code"`
		Description string `json:"description"`
	} `json:"error"`
}

func (r *resolver) push(ctx context.Context, nc *nats.Conn, timeout time.Duration, accountPub, token string) error {
	msg, err := request(ctx, nc, timeout, updateSubject, []byte(token))
	if err != nil {
		return fmt.Errorf("revoking users of account %s: pushing the account JWT: %w", accountPub, err)
	}
	var resp updateResponse
	if err := json.Unmarshal(msg.Data, &resp); err != nil {
		return fmt.Errorf("revoking users of account %s: the resolver's answer to the push is not JSON: %w", accountPub, err)
	}
	if resp.Error != nil {
		return fmt.Errorf("revoking users of account %s: the resolver refused the account JWT: %s (code %d)", accountPub, resp.Error.Description, resp.Error.Code)
	}
	return nil
}

// request sends one request to the system account's services, bounded by
// timeout and ctx, and explains the one failure that is a configuration
// error rather than an outage.
func request(ctx context.Context, nc *nats.Conn, timeout time.Duration, subject string, data []byte) (*nats.Msg, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	msg, err := nc.RequestWithContext(ctx, subject, data)
	if errors.Is(err, nats.ErrNoResponders) {
		return nil, fmt.Errorf("nothing answers %s: the servers need a full account resolver (resolver: {type: full}) and the credentials in %q must be of the system account: %w", subject, KeySystemCreds, err)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", subject, err)
	}
	return msg, nil
}
