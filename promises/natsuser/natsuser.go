// Package natsuser is the NatsUser promise: a developer asks for a NATS user
// with the subjects it may publish and subscribe to, and the platform issues
// it with NATS decentralised authentication, seals the credentials for the
// destination and keeps them stable across reconciles until rotation is due.
//
// Two stages:
//
//   - the credentials stage (configure) signs a user JWT with an account
//     signing key the platform holds, records the user's seed and JWT in the
//     credential ledger (ledger.Obtain) so that every re-run reuses them, and
//     writes a plaintext Secret (nats.creds, url) and a ConfigMap of the
//     non-secret facts; the seal stage that runs after it turns the Secret
//     into a SealedSecret and re-emits the previous sealed bytes while the
//     credentials are unchanged, so a periodic reconcile makes no commit;
//   - the revoke stage (delete) adds the user's public key, and any user it
//     replaced, to the account's revocation list, re-signs the account JWT
//     with the operator's signing key and pushes it to the NATS account
//     resolver ($SYS.REQ.CLAIMS.UPDATE) with the system account's
//     credentials.
//
// Issuing needs no connection to NATS: a user JWT is checked by the servers
// against the account JWT they already hold. Only revocation talks to the
// servers. README.md describes the platform Secret both stages read.
package natsuser

import (
	"time"

	"promised.dev/promised/pipelines/stage"
)

// Names of the built-in stages; their images are stage.Image(name).
const (
	// CredentialsStageName issues the user (the configure pipeline).
	CredentialsStageName = "natsuser-credentials"
	// RevokeStageName revokes it (the delete pipeline).
	RevokeStageName = "natsuser-revoke"
)

// Stages returns the promise's built-in stages keyed by name, for the
// binary's stage registry.
func Stages() map[string]stage.Func { return StagesAt(time.Now) }

// StagesAt returns the stages reading the time from now instead of the
// wall clock: tests move it to reach a rotation window or to issue
// credentials that have already expired. Revocation always stamps with the
// wall clock (see revokeAt), because the JWT library stamps issue times
// with it.
func StagesAt(now func() time.Time) map[string]stage.Func {
	s := &stages{now: now, timeout: defaultTimeout}
	return map[string]stage.Func{
		CredentialsStageName: s.credentials,
		RevokeStageName:      s.revoke,
	}
}

// defaultTimeout bounds the connection to each NATS server and each request
// a revocation makes (a lookup, a push and a lookup to check it).
const defaultTimeout = 5 * time.Second

// stages holds what the stage functions share.
type stages struct {
	now     func() time.Time
	timeout time.Duration
}

// credentialName names the user's credential in the ledger.
const credentialName = "nats"

// Keys of the ledger entry's data.
const (
	dataSeed = "user.seed"
	dataJWT  = "user.jwt"
)
