// Package ledger is the platform's record of the credentials pipeline
// stages mint (a NATS user, a database role), so that a re-run finds the
// credential it issued before and reuses it instead of minting another.
//
// A stage never talks to the ledger's storage itself: it reaches it
// through the stage SDK (stage.Context.Ledger) and uses Obtain, which
// implements mint → record → use: an entry is recorded before the
// credential is handed back, so a crash after recording reuses it, and a
// crash before recording loses only material nobody has used. Rotation is
// decided by Decide, a pure function of the entry, a Policy and the time.
//
// Two implementations: Kubernetes (a Secret per credential in the platform
// cluster, owned by the request) for the controller, and Folder (0600 files)
// for `promised render` and other local runs.
package ledger

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
)

// Owner identifies the request (or, for promise workflows, the Promise)
// whose pipeline issued credentials.
type Owner struct {
	// Promise names the promise whose pipeline issued the credential.
	Promise string
	// APIVersion and Kind are the request's; the Kubernetes ledger needs
	// them for the owner reference that garbage-collects its entries.
	APIVersion string
	Kind       string
	// Namespace is empty for a cluster-scoped object.
	Namespace string
	Name      string
	// UID tells two objects of the same name apart over time; the
	// Kubernetes ledger requires it, the folder ledger ignores it (local
	// runs have none).
	UID types.UID
}

// Key identifies one credential of one request.
type Key struct {
	// Owner is the request the credential was issued for.
	Owner Owner
	// Credential names the credential within the request, e.g. "nats" or
	// "db-admin": a valid Secret data key.
	Credential string
}

// String names the credential and its owner for errors; it holds no
// secret data.
func (k Key) String() string {
	ns := k.Owner.Namespace
	if ns == "" {
		ns = "(cluster)"
	}
	return fmt.Sprintf("credential %q of %s %s/%s (promise %q)", k.Credential, kindOr(k.Owner.Kind), ns, k.Owner.Name, k.Owner.Promise)
}

func kindOr(kind string) string {
	if kind == "" {
		return "request"
	}
	return kind
}

// OwnerFromObject returns the owner of credentials a pipeline issues for
// obj (the stage's input object, stage.Context.Object).
func OwnerFromObject(promise string, obj *unstructured.Unstructured) Owner {
	return Owner{
		Promise: promise, APIVersion: obj.GetAPIVersion(), Kind: obj.GetKind(),
		Namespace: obj.GetNamespace(), Name: obj.GetName(), UID: obj.GetUID(),
	}
}

// RotateAnnotation on a request forces one rotation of every credential
// its pipelines obtain: set it to a new value (conventionally the current
// time, `kubectl annotate --overwrite ... promised.dev/rotate=$(date -Iseconds)`)
// to rotate once more. A value is honoured once and recorded, so leaving
// the annotation in place does not rotate again.
const RotateAnnotation = "promised.dev/rotate"

// RotateRequest returns obj's RotateAnnotation value, for Policy.RotateRequest.
func RotateRequest(obj *unstructured.Unstructured) string {
	return strings.TrimSpace(obj.GetAnnotations()[RotateAnnotation])
}

// Entry is one recorded credential.
type Entry struct {
	// ID identifies the credential in the system that accepts it (a NATS
	// user's public key, a role name); a random one is assigned when the
	// mint function leaves it empty.
	ID string
	// Data is the credential's secret material, keyed like a Secret's
	// data. It never appears in status, logs or errors.
	Data map[string][]byte
	// IssuedAt is when it was minted; ExpiresAt when it stops being valid,
	// zero when it does not expire.
	IssuedAt  time.Time
	ExpiresAt time.Time
	// Reason is why it was minted: ReasonFresh, ReasonExpiring,
	// ReasonMeaningChanged or ReasonForced.
	Reason Reason
	// Meaning is a fingerprint of what the credential grants (its
	// permissions, its account); a different Policy.Meaning re-issues it.
	Meaning string
	// RotateToken is the last RotateAnnotation value honoured, so the same
	// value never rotates twice.
	RotateToken string
	// Used is set by Settle once the stage has put the credential to use.
	Used bool
	// Retire lists the IDs of credentials this one replaced that the stage
	// has not yet confirmed revoked (see Settle). Carrying them here means
	// a crash between rotating and revoking still revokes them next run.
	Retire []string
	// Revision is the stored version, set by Get and Put and checked by
	// Put: empty creates, anything else updates only that version.
	Revision string
}

// Ledger stores entries. Implementations are safe for concurrent use.
type Ledger interface {
	// Get returns the entry for key and whether there is one.
	Get(ctx context.Context, key Key) (Entry, bool, error)
	// Put stores e and returns it as stored, with its new Revision. It is
	// a compare-and-swap: an empty e.Revision creates the entry and fails
	// with ErrConflict if one exists; otherwise it replaces the entry only
	// if it is still at e.Revision, failing with ErrConflict if not.
	Put(ctx context.Context, key Key, e Entry) (Entry, error)
	// Delete removes the entry for key; a missing entry is not an error.
	Delete(ctx context.Context, key Key) error
	// List returns the keys of owner's entries, sorted by credential name,
	// for a delete pipeline that revokes everything a request holds.
	List(ctx context.Context, owner Owner) ([]Key, error)
}

// ErrConflict is returned (wrapped) by Put when the entry changed since it
// was read or, when creating, already exists.
var ErrConflict = errors.New("ledger entry changed concurrently")

// checkKey refuses keys that could not be stored safely: every name
// becomes a path element in the folder ledger.
func checkKey(k Key) error {
	o := k.Owner
	if errs := validation.IsDNS1123Subdomain(o.Promise); len(errs) > 0 {
		return fmt.Errorf("ledger key: promise name %q: %s", o.Promise, strings.Join(errs, "; "))
	}
	if o.Namespace != "" {
		if errs := validation.IsDNS1123Label(o.Namespace); len(errs) > 0 {
			return fmt.Errorf("ledger key: namespace %q: %s", o.Namespace, strings.Join(errs, "; "))
		}
	}
	if errs := validation.IsDNS1123Subdomain(o.Name); len(errs) > 0 {
		return fmt.Errorf("ledger key: request name %q: %s", o.Name, strings.Join(errs, "; "))
	}
	if errs := validation.IsConfigMapKey(k.Credential); len(errs) > 0 {
		return fmt.Errorf("ledger key: credential name %q: %s", k.Credential, strings.Join(errs, "; "))
	}
	return nil
}

// checkEntry refuses entries that could not be stored in a Secret.
func checkEntry(e Entry) error {
	if e.ID == "" {
		return errors.New("ledger entry has no ID")
	}
	for k := range e.Data {
		if errs := validation.IsConfigMapKey(k); len(errs) > 0 {
			return fmt.Errorf("ledger entry data key %q: %s", k, strings.Join(errs, "; "))
		}
	}
	return nil
}

// writeFields writes length-prefixed fields so that no two different lists
// of fields produce the same bytes ("a","bc" versus "ab","c").
func writeFields(w io.Writer, fields ...string) {
	var n [8]byte
	for _, f := range fields {
		binary.BigEndian.PutUint64(n[:], uint64(len(f)))
		_, _ = w.Write(n[:])
		_, _ = io.WriteString(w, f)
	}
}
