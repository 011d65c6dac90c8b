package database

import (
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"promised.dev/promised/pipelines/ledger"
	"promised.dev/promised/promises/database/pgtest"
	"promised.dev/promised/test/controlplane"
)

// Exported for the external tests.
var (
	QuoteLiteral  = quoteLiteral
	ScramVerifier = scramVerifier
)

// SharedServer is the package's shared PostgreSQL server (see TestMain).
func SharedServer() *pgtest.Server { return testServer }

// ControlPlane starts (once) and returns the local control plane.
func ControlPlane(t testing.TB) *controlplane.ControlPlane { return controlPlane(t) }

// CaseCredential is the fixed ledger entry the testdata cases run with:
// a recorded, settled password for obj, so that a case's output is the
// same on every run (a steady-state re-run, not a first one).
func CaseCredential(promise string, obj *unstructured.Unstructured) (ledger.Key, ledger.Entry, error) {
	spec, err := ParseSpec(specOf(obj))
	if err != nil {
		return ledger.Key{}, ledger.Entry{}, err
	}
	p, err := policy(func(string) string { return "" }, obj, spec.Plan, spec.DatabaseName)
	if err != nil {
		return ledger.Key{}, ledger.Entry{}, err
	}
	key := ledger.Key{Owner: ledger.OwnerFromObject(promise, obj), Credential: CredentialName}
	return key, ledger.Entry{
		ID:       "testdata-credential",
		Data:     map[string][]byte{passwordKey: []byte("testdata-password-not-a-secret")},
		IssuedAt: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), Reason: ledger.ReasonFresh,
		Meaning: p.Meaning, RotateToken: p.RotateRequest, Used: true,
	}, nil
}

func specOf(obj *unstructured.Unstructured) map[string]any {
	spec, _, _ := unstructured.NestedMap(obj.Object, "spec")
	return spec
}

// OnShutdown registers f to run after the tests, before the control plane
// stops.
func OnShutdown(f func()) { shutdown = append(shutdown, f) }
