// Package database is the Database promise: a developer requests a
// PostgreSQL database, the platform provisions it and hands the workload
// sealed connection credentials that stay the same across reconciles.
//
// Two plans. "shared" creates a database and an owner role on a
// PostgreSQL server the platform runs, over an admin connection read from
// a platform configuration Secret (see Server and README.md). "dedicated"
// renders a CloudNativePG cluster of the request's own, which the
// destination's operator provisions.
//
// The password comes from the platform's credential ledger: minted once,
// reused on every re-run, rotated only by the ledger's policy (the
// promised.dev/rotate annotation, or an age set in promise.yaml). The
// stage writes it in plaintext Secrets that the seal stage, the
// pipeline's last container, turns into SealedSecrets, re-emitting the
// previous sealed bytes while the password is unchanged.
package database

import (
	"context"
	"fmt"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"promised.dev/promised/pipelines/contract"
	"promised.dev/promised/pipelines/stage"
)

// Names of the promise's built-in stages; a stage's image is
// stage.Image(name).
const (
	// ConfigureStageName provisions (shared) or renders (dedicated) a
	// request's database; the seal stage follows it.
	ConfigureStageName = "database-configure"
	// DeleteStageName runs the request's deletion policy.
	DeleteStageName = "database-delete"
)

// Stages returns the promise's stages by name, for the built-in stage
// registry.
func Stages() map[string]stage.Func {
	return map[string]stage.Func{
		ConfigureStageName: Configure,
		DeleteStageName:    Delete,
	}
}

// Configure is the configure stage: it provisions the request's database
// on the shared server or renders its dedicated cluster, and writes the
// workload's Secret (plaintext, for the seal stage) and ConfigMap.
func Configure(ctx context.Context, c *stage.Context) error {
	r, err := readRequest(c)
	if err != nil {
		return err
	}
	if r.spec.Plan == PlanDedicated {
		return configureDedicated(ctx, c, r)
	}
	return configureShared(ctx, c, r)
}

// request is the stage's input: the Database object and its parsed spec.
type request struct {
	obj  *unstructured.Unstructured
	spec Spec
}

// readRequest reads the request and its validated spec.
func readRequest(c *stage.Context) (request, error) {
	r, err := readRequestUnchecked(c)
	if err != nil {
		return request{}, err
	}
	if err := r.spec.Validate(); err != nil {
		return request{}, fmt.Errorf("Database %s: %w", r.ref(), err)
	}
	return r, nil
}

// readRequestUnchecked reads the request and its spec with defaults
// applied but not validated.
func readRequestUnchecked(c *stage.Context) (request, error) {
	if c.Env.Type == contract.TypePromise {
		return request{}, fmt.Errorf("the database stages run for Database requests, not for the promise's own workflows")
	}
	obj, err := c.Object()
	if err != nil {
		return request{}, err
	}
	if obj.GetNamespace() == "" {
		return request{}, fmt.Errorf("Database %s has no namespace: the workload's Secret goes in the request's namespace", obj.GetName())
	}
	raw, err := c.Spec()
	if err != nil {
		return request{}, err
	}
	spec, err := decodeSpec(raw)
	if err != nil {
		return request{}, fmt.Errorf("Database %s/%s: %w", obj.GetNamespace(), obj.GetName(), err)
	}
	return request{obj: obj, spec: spec}, nil
}

// ref is "namespace/name".
func (r request) ref() string { return r.obj.GetNamespace() + "/" + r.obj.GetName() }

// marker is the COMMENT the request's role carries on a shared server. It
// names the request but not its UID, so a request deleted with Retain and
// made again under the same name finds its database again.
func (r request) marker() string {
	return "managed by promised.dev for " + r.obj.GetKind() + " " + r.ref()
}
