package ledger

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"time"
)

// MintFunc creates a credential's material: generate a password, create
// and sign a NATS user. It should have no effect outside the process (no
// role created yet), or only effects keyed by the credential's ID that a
// later provisioning repeats harmlessly: Obtain may discard what it mints
// when another run recorded a credential first, and a crash before the
// entry is recorded discards it too. Provision the credential in the
// system that accepts it after Obtain returns, by Entry.ID, idempotently.
// Obtain sets the entry's times from the Policy: a credential with its own
// expiry (a signed token) should be made valid for Policy.TTL from now.
type MintFunc func(ctx context.Context) (Entry, error)

// Issued is a credential Obtain returns: the recorded entry and why.
type Issued struct {
	// Key is the credential's key.
	Key Key
	// Entry is the credential as recorded.
	Entry Entry
	// Decision says whether it was minted on this run, and why.
	Decision Decision
}

// maxAttempts bounds Obtain's retries after losing a race to record: each
// loss means another writer recorded a credential, which the next attempt
// reuses, so more than a couple means something keeps rewriting the entry.
const maxAttempts = 3

// Obtain returns key's credential, minting and recording a new one only
// when Decide says so (mint → record → use):
//
//  1. read the entry and decide under p at now;
//  2. to reuse, return the entry;
//  3. to mint, call mint, fill in the entry's bookkeeping (ID when empty,
//     issue and expiry times, meaning, rotate value, reason, and the
//     replaced credential's ID in Retire), record it with a
//     compare-and-swap Put, and only then return it.
//
// The caller then uses it: provisions it by ID, revokes each ID in
// Entry.Retire, writes it to its output, and calls Settle. A crash at any
// point leaves at most one recorded credential per key, and the next run
// picks up where this one stopped. If another run records first, what this
// run minted is discarded unused and the other's is returned.
func Obtain(ctx context.Context, l Ledger, key Key, p Policy, now time.Time, mint MintFunc) (Issued, error) {
	if l == nil {
		return Issued{}, fmt.Errorf("obtaining %s: no ledger", key)
	}
	if err := checkKey(key); err != nil {
		return Issued{}, err
	}
	if err := p.Validate(); err != nil {
		return Issued{}, fmt.Errorf("obtaining %s: %w", key, err)
	}
	// Stored times have whole seconds, as Kubernetes annotations hold
	// them, so both ledgers decide alike.
	now = now.UTC().Truncate(time.Second)
	for range maxAttempts {
		current, found, err := l.Get(ctx, key)
		if err != nil {
			return Issued{}, fmt.Errorf("obtaining %s: reading the ledger: %w", key, err)
		}
		var cur *Entry
		if found {
			cur = &current
		}
		d := Decide(p, cur, now)
		if !d.Mint {
			return Issued{Key: key, Entry: current, Decision: d}, nil
		}
		e, err := mint(ctx)
		if err != nil {
			return Issued{}, fmt.Errorf("obtaining %s: minting (%s): %w", key, d.Reason, err)
		}
		if e.ID == "" {
			if e.ID, err = randomID(); err != nil {
				return Issued{}, fmt.Errorf("obtaining %s: %w", key, err)
			}
		}
		e.IssuedAt = now
		e.ExpiresAt = time.Time{}
		if p.TTL > 0 {
			e.ExpiresAt = now.Add(p.TTL)
		}
		e.Reason, e.Meaning, e.RotateToken, e.Used = d.Reason, p.Meaning, p.RotateRequest, false
		e.Retire, e.Revision = nil, ""
		if found {
			e.Retire = append(slices.Clone(current.Retire), current.ID)
			e.Revision = current.Revision
		}
		stored, err := l.Put(ctx, key, e)
		if errors.Is(err, ErrConflict) {
			continue
		}
		if err != nil {
			return Issued{}, fmt.Errorf("obtaining %s: recording the new credential: %w", key, err)
		}
		d.NextRotation = p.NextRotation(stored)
		return Issued{Key: key, Entry: stored, Decision: d}, nil
	}
	return Issued{}, fmt.Errorf("obtaining %s: the entry changed under every one of %d attempts: %w", key, maxAttempts, ErrConflict)
}

// Settle records that the credential id is in use and that every
// credential it replaced (Entry.Retire) has been revoked. It writes only
// when that changes something, so a run that reuses a settled credential
// makes no write. It fails with ErrConflict when key's credential is no
// longer id (rotated by another run since).
func Settle(ctx context.Context, l Ledger, key Key, id string) error {
	e, found, err := l.Get(ctx, key)
	if err != nil {
		return fmt.Errorf("settling %s: reading the ledger: %w", key, err)
	}
	if !found || e.ID != id {
		return fmt.Errorf("settling %s: it is no longer credential %q: %w", key, id, ErrConflict)
	}
	if e.Used && len(e.Retire) == 0 {
		return nil
	}
	e.Used, e.Retire = true, nil
	if _, err := l.Put(ctx, key, e); err != nil {
		return fmt.Errorf("settling %s: %w", key, err)
	}
	return nil
}

// SettleIssued settles what Obtain returned. A credential Obtain found
// already in use with nothing to retire needs no write, and so not even
// Settle's read: an unchanged re-run reads the ledger once, in Obtain.
// Runs of one request never overlap, so nothing can have rotated it since.
func SettleIssued(ctx context.Context, l Ledger, is Issued) error {
	if !is.Decision.Mint && is.Entry.Used && len(is.Entry.Retire) == 0 {
		return nil
	}
	return Settle(ctx, l, is.Key, is.Entry.ID)
}

func randomID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("generating a credential ID: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}
