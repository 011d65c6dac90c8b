package ledger

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Labels and annotations of the Kubernetes ledger's Secrets.
const (
	// LabelLedger marks a Secret as a ledger entry ("true").
	LabelLedger = "promised.dev/ledger"
	// LabelPromise and LabelRequest carry the promise and request names
	// when they fit in a label value, for `kubectl get secrets -l`.
	LabelPromise = "promised.dev/promise"
	LabelRequest = "promised.dev/request"
	// LabelRequestUID carries the owner's UID; List selects on it.
	LabelRequestUID = "promised.dev/request-uid"

	annotationPrefix = "ledger.promised.dev/"
	// The key, in full (labels cannot hold every name).
	annPromise          = annotationPrefix + "promise"
	annRequestNamespace = annotationPrefix + "request-namespace"
	annRequestName      = annotationPrefix + "request-name"
	annCredential       = annotationPrefix + "credential"
	// The entry's bookkeeping: none of it is secret, so it sits in
	// annotations where `kubectl describe` shows it.
	annID          = annotationPrefix + "id"
	annIssuedAt    = annotationPrefix + "issued-at"
	annExpiresAt   = annotationPrefix + "expires-at"
	annReason      = annotationPrefix + "issued-because"
	annMeaning     = annotationPrefix + "meaning"
	annRotateToken = annotationPrefix + "rotate-honoured"
	annUsed        = annotationPrefix + "used"
	annRetire      = annotationPrefix + "retire"
)

// SecretType is the type of the Kubernetes ledger's Secrets.
const SecretType corev1.SecretType = "promised.dev/ledger"

// Kubernetes is a ledger of Secrets in the platform cluster, one per
// request and credential, named promised-ledger-<hash of the key>.
//
// Each Secret lives in the request's own namespace, with an owner
// reference to the request, so it is garbage-collected when the request
// is: Kubernetes ignores owner references across namespaces (and would
// collect such a Secret at once), so a platform namespace is only used for
// cluster-scoped owners (Namespace). Anyone who may read Secrets in the
// request's namespace can read its credentials; they are the credentials
// issued to that namespace's team, sealed into their own workloads.
//
// The controller needs get, list, create, update and delete on secrets.
type Kubernetes struct {
	// Client writes entries.
	Client client.Client
	// Reader reads entries; nil means Client. Give the manager's API
	// reader (mgr.GetAPIReader()): a cached client can return an entry
	// older than the last Put, and deciding on a stale entry is how a
	// second credential gets minted. It also keeps the controller from
	// caching every Secret of the cluster.
	Reader client.Reader
	// Namespace holds the entries of cluster-scoped owners (such as a
	// Promise's own workflow); unused for namespaced requests.
	Namespace string
}

func (k *Kubernetes) reader() client.Reader {
	if k.Reader != nil {
		return k.Reader
	}
	return k.Client
}

func (k *Kubernetes) namespaceFor(o Owner) (string, error) {
	if o.Namespace != "" {
		return o.Namespace, nil
	}
	if k.Namespace == "" {
		return "", fmt.Errorf("%s %s is cluster-scoped and the ledger has no platform namespace configured", kindOr(o.Kind), o.Name)
	}
	return k.Namespace, nil
}

func (k *Kubernetes) check(key Key) error {
	if err := checkKey(key); err != nil {
		return err
	}
	o := key.Owner
	if o.UID == "" || o.APIVersion == "" || o.Kind == "" {
		return fmt.Errorf("ledger key for %s: the Kubernetes ledger needs the request's apiVersion, kind and uid to own its entry", key)
	}
	return nil
}

// SecretName is the name of key's Secret. The UID is part of it so that a
// request deleted and re-created under the same name never picks up its
// predecessor's entry, which the garbage collector is about to delete.
func SecretName(key Key) string {
	o := key.Owner
	h := sha256.New()
	writeFields(h, o.Promise, o.Namespace, o.Name, string(o.UID), key.Credential)
	return "promised-ledger-" + hex.EncodeToString(h.Sum(nil))[:40]
}

// Get implements Ledger.
func (k *Kubernetes) Get(ctx context.Context, key Key) (Entry, bool, error) {
	if err := k.check(key); err != nil {
		return Entry{}, false, err
	}
	ns, err := k.namespaceFor(key.Owner)
	if err != nil {
		return Entry{}, false, err
	}
	var s corev1.Secret
	if err := k.reader().Get(ctx, client.ObjectKey{Namespace: ns, Name: SecretName(key)}, &s); err != nil {
		if apierrors.IsNotFound(err) {
			return Entry{}, false, nil
		}
		return Entry{}, false, fmt.Errorf("reading the ledger entry for %s: %w", key, err)
	}
	// A Secret of this name that is not our entry for this key was made by
	// someone else; using it would hand out a credential nobody minted.
	if !isEntryFor(&s, key) {
		return Entry{}, false, fmt.Errorf("Secret %s/%s exists but is not the ledger entry for %s", ns, s.Name, key)
	}
	e, err := entryOf(&s)
	if err != nil {
		return Entry{}, false, fmt.Errorf("reading the ledger entry for %s from Secret %s/%s: %w", key, ns, s.Name, err)
	}
	return e, true, nil
}

func entryOf(s *corev1.Secret) (Entry, error) {
	a := s.Annotations
	e := Entry{
		ID: a[annID], Data: s.Data, Reason: Reason(a[annReason]), Meaning: a[annMeaning],
		RotateToken: a[annRotateToken], Used: a[annUsed] == "true", Revision: s.ResourceVersion,
	}
	var err error
	if e.IssuedAt, err = parseTime(a[annIssuedAt]); err != nil {
		return Entry{}, fmt.Errorf("annotation %s: %w", annIssuedAt, err)
	}
	if e.ExpiresAt, err = parseTime(a[annExpiresAt]); err != nil {
		return Entry{}, fmt.Errorf("annotation %s: %w", annExpiresAt, err)
	}
	if r := a[annRetire]; r != "" {
		if err := json.Unmarshal([]byte(r), &e.Retire); err != nil {
			return Entry{}, fmt.Errorf("annotation %s: %w", annRetire, err)
		}
	}
	return e, nil
}

func parseTime(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	return time.Parse(time.RFC3339, s)
}

// Put implements Ledger.
func (k *Kubernetes) Put(ctx context.Context, key Key, e Entry) (Entry, error) {
	if err := k.check(key); err != nil {
		return Entry{}, err
	}
	if err := checkEntry(e); err != nil {
		return Entry{}, err
	}
	s, err := k.secretFor(key, e)
	if err != nil {
		return Entry{}, err
	}
	if e.Revision == "" {
		err = k.Client.Create(ctx, s)
	} else {
		s.ResourceVersion = e.Revision
		err = k.Client.Update(ctx, s)
	}
	switch {
	case apierrors.IsAlreadyExists(err), apierrors.IsConflict(err), e.Revision != "" && apierrors.IsNotFound(err):
		return Entry{}, fmt.Errorf("recording %s: %w", key, errors.Join(ErrConflict, err))
	case err != nil:
		return Entry{}, fmt.Errorf("recording %s in Secret %s/%s: %w", key, s.Namespace, s.Name, err)
	}
	e.Revision = s.ResourceVersion
	return e, nil
}

func (k *Kubernetes) secretFor(key Key, e Entry) (*corev1.Secret, error) {
	o := key.Owner
	ns, err := k.namespaceFor(o)
	if err != nil {
		return nil, err
	}
	labels := map[string]string{LabelLedger: "true", LabelRequestUID: string(o.UID)}
	for l, v := range map[string]string{LabelPromise: o.Promise, LabelRequest: o.Name} {
		if len(validation.IsValidLabelValue(v)) == 0 {
			labels[l] = v
		}
	}
	ann := map[string]string{
		annPromise: o.Promise, annRequestNamespace: o.Namespace, annRequestName: o.Name, annCredential: key.Credential,
		annID: e.ID, annReason: string(e.Reason),
	}
	set := func(k, v string) {
		if v != "" {
			ann[k] = v
		}
	}
	set(annIssuedAt, formatTime(e.IssuedAt))
	set(annExpiresAt, formatTime(e.ExpiresAt))
	set(annMeaning, e.Meaning)
	set(annRotateToken, e.RotateToken)
	if e.Used {
		ann[annUsed] = "true"
	}
	if len(e.Retire) > 0 {
		raw, err := json.Marshal(e.Retire)
		if err != nil {
			return nil, fmt.Errorf("recording %s: %w", key, err)
		}
		ann[annRetire] = string(raw)
	}
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: ns, Name: SecretName(key), Labels: labels, Annotations: ann,
			// Not a controller reference and no blockOwnerDeletion: the
			// entry must not keep the request alive, and setting
			// blockOwnerDeletion needs delete permission on the owner.
			OwnerReferences: []metav1.OwnerReference{{APIVersion: o.APIVersion, Kind: o.Kind, Name: o.Name, UID: o.UID}},
		},
		Type: SecretType,
		Data: e.Data,
	}, nil
}

// Delete implements Ledger. It deletes only a Secret that is key's entry,
// by UID, so a Secret someone else created under the same name survives.
func (k *Kubernetes) Delete(ctx context.Context, key Key) error {
	if err := k.check(key); err != nil {
		return err
	}
	ns, err := k.namespaceFor(key.Owner)
	if err != nil {
		return err
	}
	var s corev1.Secret
	if err := k.reader().Get(ctx, client.ObjectKey{Namespace: ns, Name: SecretName(key)}, &s); err != nil {
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("deleting the ledger entry for %s: %w", key, err)
	}
	if !isEntryFor(&s, key) {
		return fmt.Errorf("deleting the ledger entry for %s: Secret %s/%s is not it", key, ns, s.Name)
	}
	if err := k.Client.Delete(ctx, &s, client.Preconditions{UID: &s.UID}); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("deleting the ledger entry for %s: %w", key, err)
	}
	return nil
}

func isEntryFor(s *corev1.Secret, key Key) bool {
	return s.Labels[LabelLedger] == "true" && s.Annotations[annCredential] == key.Credential &&
		s.Annotations[annRequestName] == key.Owner.Name && s.Annotations[annPromise] == key.Owner.Promise
}

// List implements Ledger.
func (k *Kubernetes) List(ctx context.Context, owner Owner) ([]Key, error) {
	if err := k.check(Key{Owner: owner, Credential: "x"}); err != nil {
		return nil, err
	}
	ns, err := k.namespaceFor(owner)
	if err != nil {
		return nil, err
	}
	var list corev1.SecretList
	if err := k.reader().List(ctx, &list, client.InNamespace(ns),
		client.MatchingLabels{LabelLedger: "true", LabelRequestUID: string(owner.UID)}); err != nil {
		return nil, fmt.Errorf("listing the ledger entries of %s %s/%s: %w", kindOr(owner.Kind), owner.Namespace, owner.Name, err)
	}
	var keys []Key
	for _, s := range list.Items {
		if s.Annotations[annPromise] != owner.Promise {
			continue
		}
		keys = append(keys, Key{Owner: owner, Credential: s.Annotations[annCredential]})
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i].Credential < keys[j].Credential })
	return keys, nil
}
