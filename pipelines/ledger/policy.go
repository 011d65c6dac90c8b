package ledger

import (
	"fmt"
	"time"
)

// Policy says when a credential is re-issued. TTL and RotateBefore are a
// credential's fixed terms; Meaning and RotateRequest are read from the
// request on each run.
type Policy struct {
	// TTL is how long a new credential is valid; zero means it does not
	// expire.
	TTL time.Duration
	// RotateBefore re-issues a credential this long before it expires, so
	// the new one is in place before the old one stops working. It must be
	// shorter than TTL, or every run would rotate.
	RotateBefore time.Duration
	// Meaning fingerprints what the credential grants now (permissions,
	// account); it differing from the entry's re-issues the credential.
	Meaning string
	// RotateRequest is the request's RotateAnnotation value now (see
	// RotateRequest); a value the entry has not honoured yet forces one
	// rotation.
	RotateRequest string
}

// Validate refuses terms that would rotate on every run or never make
// sense.
func (p Policy) Validate() error {
	switch {
	case p.TTL < 0:
		return fmt.Errorf("credential policy: negative TTL %s", p.TTL)
	case p.RotateBefore < 0:
		return fmt.Errorf("credential policy: negative rotate-before window %s", p.RotateBefore)
	case p.TTL > 0 && p.RotateBefore >= p.TTL:
		return fmt.Errorf("credential policy: rotate-before window %s is not shorter than the TTL %s, so every run would rotate", p.RotateBefore, p.TTL)
	}
	return nil
}

// NextRotation is when e becomes due for rotation by age: RotateBefore
// ahead of its expiry, zero when it does not expire.
func (p Policy) NextRotation(e Entry) time.Time {
	if e.ExpiresAt.IsZero() {
		return time.Time{}
	}
	return e.ExpiresAt.Add(-p.RotateBefore)
}

// Reason says why Decide decided what it did.
type Reason string

// The reasons of a Decision.
const (
	// ReasonFresh: there was no credential; mint one.
	ReasonFresh Reason = "fresh"
	// ReasonReuse: the recorded credential is still good; use it.
	ReasonReuse Reason = "reuse"
	// ReasonExpiring: the recorded credential is inside its rotate-before
	// window (or expired); mint a replacement.
	ReasonExpiring Reason = "expiring"
	// ReasonMeaningChanged: what the credential should grant changed;
	// mint one that grants it.
	ReasonMeaningChanged Reason = "meaning-changed"
	// ReasonForced: the request carries a rotate annotation value not yet
	// honoured; mint a replacement once.
	ReasonForced Reason = "forced"
)

// Decision is what to do about one credential.
type Decision struct {
	// Mint is true for every reason but ReasonReuse.
	Mint bool
	// Reason says why.
	Reason Reason
	// NextRotation is when the reused credential becomes due by age, zero
	// when it never does or when minting (Obtain fills it in then).
	NextRotation time.Time
}

// Decide decides about the recorded credential current (nil when there is
// none) under p at now. It is pure: same arguments, same decision. A
// change of meaning outranks a forced rotation, which outranks age, so the
// reason names the most significant cause; any of them mints exactly once,
// because the new entry records the meaning, the rotate value and a fresh
// expiry.
func Decide(p Policy, current *Entry, now time.Time) Decision {
	switch {
	case current == nil:
		return Decision{Mint: true, Reason: ReasonFresh}
	case current.Meaning != p.Meaning:
		return Decision{Mint: true, Reason: ReasonMeaningChanged}
	case p.RotateRequest != "" && p.RotateRequest != current.RotateToken:
		return Decision{Mint: true, Reason: ReasonForced}
	}
	next := p.NextRotation(*current)
	if !next.IsZero() && !now.Before(next) {
		return Decision{Mint: true, Reason: ReasonExpiring}
	}
	return Decision{Reason: ReasonReuse, NextRotation: next}
}

// CredentialStatus is what a stage reports about a credential in the
// request's status: identity and timing, never the secret material. Times
// are RFC 3339 in UTC; they only change when the credential does, so
// reporting them on every run does not churn the status.
type CredentialStatus struct {
	// Name is the credential's name within the request (Key.Credential).
	Name string `json:"name"`
	// ID is the credential's public identity (Entry.ID).
	ID string `json:"id"`
	// IssuedAt is when it was minted, IssuedBecause why.
	IssuedAt      string `json:"issuedAt"`
	IssuedBecause Reason `json:"issuedBecause,omitempty"`
	// ExpiresAt is when it stops working; NextRotation when it will be
	// replaced by age. Both are empty for a credential that never expires.
	ExpiresAt    string `json:"expiresAt,omitempty"`
	NextRotation string `json:"nextRotation,omitempty"`
	// PendingRetire counts replaced credentials not yet revoked.
	PendingRetire int `json:"pendingRetire,omitempty"`
}

// Status returns what to report about i in the request's status.
func (i Issued) Status() CredentialStatus {
	return CredentialStatus{
		Name:          i.Key.Credential,
		ID:            i.Entry.ID,
		IssuedAt:      formatTime(i.Entry.IssuedAt),
		IssuedBecause: i.Entry.Reason,
		ExpiresAt:     formatTime(i.Entry.ExpiresAt),
		NextRotation:  formatTime(i.Decision.NextRotation),
		PendingRetire: len(i.Entry.Retire),
	}
}

func formatTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}
