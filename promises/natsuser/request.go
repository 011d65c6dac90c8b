package natsuser

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/jwt/v2"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/validation"
)

// subjectPattern is the CRD's pattern for a subject (promise.yaml): tokens
// separated by dots, none empty and none holding white space, ">" only as
// the whole last token. The stage checks it again because a local run
// validates with the OpenAPI schema alone, and a request that reached the
// stage some other way must not become a JWT the servers would misread.
const subjectPattern = `^([^.\s>]+\.)*([^.\s>]+|>)$`

var subjectRE = regexp.MustCompile(subjectPattern)

// durationPattern is the CRD's pattern for ttl, rotateBefore and expires.
var durationRE = regexp.MustCompile(`^([0-9]+(h|m|s))+$`)

// Bounds of the API, the same as the CRD's (promise.yaml).
const (
	maxSubjects      = 64
	maxSubjectLength = 256
	minTTL           = 10 * time.Minute
	maxTTL           = 8760 * time.Hour
	minRotateBefore  = time.Minute
	maxResponses     = 10000
	maxResponseTTL   = 24 * time.Hour
	maxSubscriptions = 1_000_000
	maxPayload       = 64 << 20
	maxData          = 1 << 40
	defaultTTL       = 720 * time.Hour
	// rotateFraction of the ttl is the default rotate-before window: long
	// enough for a workload to pick up the new Secret, whatever the ttl,
	// which a fixed default would not be for a short ttl.
	rotateFraction = 4
)

// connectionTypes are the values spec.connectionTypes accepts.
var connectionTypes = []string{
	jwt.ConnectionTypeStandard, jwt.ConnectionTypeWebsocket, jwt.ConnectionTypeLeafnode,
	jwt.ConnectionTypeLeafnodeWS, jwt.ConnectionTypeMqtt, jwt.ConnectionTypeMqttWS, jwt.ConnectionTypeInProcess,
}

// spec is a NatsUser's spec as the API defines it.
type spec struct {
	Account         string           `json:"account"`
	Publish         *permissionSpec  `json:"publish,omitempty"`
	Subscribe       *permissionSpec  `json:"subscribe,omitempty"`
	Responses       *responsesSpec   `json:"responses,omitempty"`
	Limits          *limitsSpec      `json:"limits,omitempty"`
	ConnectionTypes []string         `json:"connectionTypes,omitempty"`
	Credentials     *credentialsSpec `json:"credentials,omitempty"`
	Secret          *secretSpec      `json:"secret,omitempty"`
}

type permissionSpec struct {
	Allow []string `json:"allow,omitempty"`
	Deny  []string `json:"deny,omitempty"`
}

type responsesSpec struct {
	MaxMessages *int   `json:"maxMessages,omitempty"`
	Expires     string `json:"expires,omitempty"`
}

type limitsSpec struct {
	Subscriptions *int64 `json:"subscriptions,omitempty"`
	Payload       *int64 `json:"payload,omitempty"`
	Data          *int64 `json:"data,omitempty"`
}

type credentialsSpec struct {
	TTL          string `json:"ttl,omitempty"`
	RotateBefore string `json:"rotateBefore,omitempty"`
}

type secretSpec struct {
	Name      string `json:"name,omitempty"`
	Namespace string `json:"namespace,omitempty"`
}

// user is a request checked and normalised: lists sorted and without
// duplicates, defaults filled in, so that two requests granting the same
// thing have the same meaning (see meaning) and sign the same claims.
type user struct {
	// Namespace and Name are the request's.
	Namespace, Name string
	Account         string
	Pub, Sub        permission
	// Resp is nil when the user may not reply to requests.
	Resp *jwt.ResponsePermission
	// Subs, Payload and Data are jwt.NoLimit when unset.
	Subs, Payload, Data int64
	ConnTypes           []string
	TTL, RotateBefore   time.Duration
	SecretName          string
	SecretNamespace     string
}

type permission struct {
	Allow, Deny []string
}

// errBadRequest marks errors in the request itself (as opposed to the
// platform's configuration), for callers that tell the two apart.
var errBadRequest = errors.New("the request is invalid")

// fieldErrors collects every problem of a request, each naming its field, so
// that a developer fixes them in one go.
type fieldErrors []string

func (f *fieldErrors) add(field, format string, args ...any) {
	*f = append(*f, field+": "+fmt.Sprintf(format, args...))
}

func (f fieldErrors) err(obj *unstructured.Unstructured) error {
	if len(f) == 0 {
		return nil
	}
	msg := f[0]
	for _, e := range f[1:] {
		msg += "; " + e
	}
	return fmt.Errorf("%w: NatsUser %s/%s: %s", errBadRequest, obj.GetNamespace(), obj.GetName(), msg)
}

// parseUser reads and checks the request. Errors name every offending field
// (spec.publish.allow[2], spec.limits.payload, ...).
func parseUser(obj *unstructured.Unstructured) (user, error) {
	var s spec
	raw, err := json.Marshal(obj.Object["spec"])
	if err != nil {
		return user{}, fmt.Errorf("%w: NatsUser %s/%s: reading spec: %w", errBadRequest, obj.GetNamespace(), obj.GetName(), err)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		return user{}, fmt.Errorf("%w: NatsUser %s/%s: spec: %w", errBadRequest, obj.GetNamespace(), obj.GetName(), err)
	}
	var errs fieldErrors
	u := user{Namespace: obj.GetNamespace(), Name: obj.GetName(), Account: s.Account}
	checkAccountName(&errs, s.Account)
	u.Pub = checkPermission(&errs, "spec.publish", s.Publish)
	u.Sub = checkPermission(&errs, "spec.subscribe", s.Subscribe)
	u.Resp = checkResponses(&errs, s.Responses)
	u.Subs, u.Payload, u.Data = checkLimits(&errs, s.Limits)
	u.ConnTypes = checkConnectionTypes(&errs, s.ConnectionTypes)
	u.TTL, u.RotateBefore = checkCredentials(&errs, s.Credentials)
	u.SecretName, u.SecretNamespace = checkSecret(&errs, s.Secret, obj)
	if err := errs.err(obj); err != nil {
		return user{}, err
	}
	return u, nil
}

func checkAccountName(errs *fieldErrors, name string) {
	if name == "" {
		errs.add("spec.account", "required")
		return
	}
	if msgs := validation.IsDNS1123Label(name); len(msgs) > 0 {
		errs.add("spec.account", "%q is not an account name: %s", name, msgs[0])
	}
}

func checkPermission(errs *fieldErrors, field string, p *permissionSpec) permission {
	if p == nil {
		return permission{}
	}
	return permission{
		Allow: checkSubjects(errs, field+".allow", p.Allow),
		Deny:  checkSubjects(errs, field+".deny", p.Deny),
	}
}

func checkSubjects(errs *fieldErrors, field string, subjects []string) []string {
	if len(subjects) > maxSubjects {
		errs.add(field, "%d subjects, at most %d", len(subjects), maxSubjects)
	}
	for i, s := range subjects {
		if err := checkSubject(s); err != nil {
			errs.add(fmt.Sprintf("%s[%d]", field, i), "%v", err)
		}
	}
	return sortedSet(subjects)
}

// checkSubject says what is wrong with a subject, in the words a developer
// needs, rather than only that it does not match subjectPattern.
func checkSubject(s string) error {
	switch {
	case s == "":
		return errors.New("empty subject")
	case len(s) > maxSubjectLength:
		return fmt.Errorf("subject is %d bytes, at most %d", len(s), maxSubjectLength)
	case subjectRE.MatchString(s):
		return nil
	case strings.ContainsAny(s, " \t\r\n\f\v"):
		return fmt.Errorf("subject %q holds white space", s)
	case strings.HasPrefix(s, ".") || strings.HasSuffix(s, ".") || strings.Contains(s, ".."):
		return fmt.Errorf("subject %q has an empty token", s)
	default:
		return fmt.Errorf("subject %q: \">\" may only be the whole last token", s)
	}
}

func checkResponses(errs *fieldErrors, r *responsesSpec) *jwt.ResponsePermission {
	if r == nil {
		return nil
	}
	p := &jwt.ResponsePermission{MaxMsgs: 1}
	if r.MaxMessages != nil {
		p.MaxMsgs = *r.MaxMessages
		if p.MaxMsgs < 1 || p.MaxMsgs > maxResponses {
			errs.add("spec.responses.maxMessages", "%d is out of range 1 to %d", p.MaxMsgs, maxResponses)
		}
	}
	if r.Expires != "" {
		d, ok := checkDuration(errs, "spec.responses.expires", r.Expires)
		if ok && d > maxResponseTTL {
			errs.add("spec.responses.expires", "%s is longer than %s", r.Expires, maxResponseTTL)
		}
		p.Expires = d
	}
	return p
}

func checkLimits(errs *fieldErrors, l *limitsSpec) (subs, payload, data int64) {
	subs, payload, data = jwt.NoLimit, jwt.NoLimit, jwt.NoLimit
	if l == nil {
		return subs, payload, data
	}
	limit := func(field string, v *int64, lo, hi int64) int64 {
		if v == nil {
			return jwt.NoLimit
		}
		if *v < lo || *v > hi {
			errs.add(field, "%d is out of range %d to %d", *v, lo, hi)
		}
		return *v
	}
	subs = limit("spec.limits.subscriptions", l.Subscriptions, 0, maxSubscriptions)
	payload = limit("spec.limits.payload", l.Payload, 1, maxPayload)
	data = limit("spec.limits.data", l.Data, 1, maxData)
	return subs, payload, data
}

func checkConnectionTypes(errs *fieldErrors, types []string) []string {
	if types == nil {
		// The CRD's default; an explicit empty list is refused below.
		return []string{jwt.ConnectionTypeStandard}
	}
	if len(types) == 0 {
		errs.add("spec.connectionTypes", "empty: list at least one connection type")
	}
	for i, t := range types {
		if !slices.Contains(connectionTypes, t) {
			errs.add(fmt.Sprintf("spec.connectionTypes[%d]", i), "%q is not one of %v", t, connectionTypes)
		}
	}
	return sortedSet(types)
}

func checkCredentials(errs *fieldErrors, c *credentialsSpec) (ttl, rotateBefore time.Duration) {
	if c == nil {
		c = &credentialsSpec{}
	}
	ttl, okTTL := defaultTTL, true
	if c.TTL != "" {
		ttl, okTTL = checkDuration(errs, "spec.credentials.ttl", c.TTL)
	}
	rotateBefore, okRotate := ttl/rotateFraction, true
	if c.RotateBefore != "" {
		rotateBefore, okRotate = checkDuration(errs, "spec.credentials.rotateBefore", c.RotateBefore)
	}
	if okTTL && (ttl < minTTL || ttl > maxTTL) {
		errs.add("spec.credentials.ttl", "%s is out of range %s to %s", ttl, minTTL, maxTTL)
	}
	if okRotate && okTTL && (rotateBefore < minRotateBefore || rotateBefore >= ttl) {
		errs.add("spec.credentials.rotateBefore", "%s must be at least %s and shorter than the ttl %s", rotateBefore, minRotateBefore, ttl)
	}
	return ttl, rotateBefore
}

func checkDuration(errs *fieldErrors, field, s string) (time.Duration, bool) {
	if !durationRE.MatchString(s) {
		errs.add(field, "%q is not a duration such as 90m or 720h", s)
		return 0, false
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		errs.add(field, "%q: %v", s, err)
		return 0, false
	}
	return d, true
}

func checkSecret(errs *fieldErrors, s *secretSpec, obj *unstructured.Unstructured) (name, namespace string) {
	name, namespace = obj.GetName()+"-nats", obj.GetNamespace()
	field := "metadata.name"
	if s != nil && s.Name != "" {
		name, field = s.Name, "spec.secret.name"
	}
	if s != nil && s.Namespace != "" {
		namespace = s.Namespace
	}
	if msgs := validation.IsDNS1123Subdomain(name); len(msgs) > 0 {
		errs.add(field, "Secret name %q: %s", name, msgs[0])
	}
	if msgs := validation.IsDNS1123Label(namespace); len(msgs) > 0 {
		errs.add("spec.secret.namespace", "%q: %s", namespace, msgs[0])
	}
	return name, namespace
}

func sortedSet(s []string) []string {
	if len(s) == 0 {
		return nil
	}
	out := slices.Clone(s)
	slices.Sort(out)
	return slices.Compact(out)
}

// jwtPermission is what a permission becomes in the JWT. NATS allows every
// subject when a list is empty; the API allows none, because a developer
// who lists nothing means nothing, so an empty allow list becomes a deny
// of every subject.
func (p permission) jwtPermission() jwt.Permission {
	if len(p.Allow) == 0 {
		return jwt.Permission{Deny: jwt.StringList{">"}}
	}
	return jwt.Permission{Allow: slices.Clone(p.Allow), Deny: slices.Clone(p.Deny)}
}

// meaningFormat names how meaning is computed; changing what it covers must
// change it, so every user is re-issued once, deliberately.
const meaningFormat = "promised.dev/natsuser/meaning/v1"

// meaning fingerprints what the user's JWT grants and who vouches for it:
// the account (name and public key), the signing key and every permission
// and limit. It differing from the ledger entry's re-issues the user (see
// ledger.Policy.Meaning). The terms (ttl, rotateBefore) are not part of it:
// they decide when the next credential is issued, not what it grants. Nor
// are the servers and the Secret's name: they change the Secret, not the
// credential.
func (u user) meaning(a account) string {
	c := struct {
		Format, Account, AccountKey, Signer string
		Pub, Sub                            permission
		Resp                                *jwt.ResponsePermission
		Subs, Payload, Data                 int64
		ConnTypes                           []string
	}{meaningFormat, u.Account, a.PublicKey, a.SignerPublicKey, u.Pub, u.Sub, u.Resp, u.Subs, u.Payload, u.Data, u.ConnTypes}
	// Marshalling plain strings, ints and slices cannot fail.
	raw, _ := json.Marshal(c)
	sum := sha256.Sum256(raw)
	return "sha256:" + hex.EncodeToString(sum[:])
}
