package database

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/validation"
)

// EnginePostgreSQL is the only engine offered today; Spec.Engine leaves
// room for others.
const EnginePostgreSQL = "postgresql"

// Plan is how a database is provided.
type Plan string

// The plans of the Database API.
const (
	// PlanShared is a database and an owner role on a PostgreSQL server the
	// platform runs for many requests.
	PlanShared Plan = "shared"
	// PlanDedicated is a CloudNativePG cluster of the request's own.
	PlanDedicated Plan = "dedicated"
)

// DeletionPolicy says what deleting a request does to its database.
type DeletionPolicy string

// The deletion policies of the Database API.
const (
	// DeletionRetain keeps the database and its role; only the workload's
	// Secret and ConfigMap go. It is the default: a mistyped kubectl
	// delete should not lose data.
	DeletionRetain DeletionPolicy = "Retain"
	// DeletionDelete drops the database and its role.
	DeletionDelete DeletionPolicy = "Delete"
)

// Spec is a Database request's spec, as promise.yaml's schema defines it.
type Spec struct {
	Engine       string `json:"engine"`
	Plan         Plan   `json:"plan"`
	DatabaseName string `json:"databaseName"`
	// Extensions come from the allow-list, AllowedExtensions.
	Extensions      []string       `json:"extensions,omitempty"`
	ConnectionLimit int            `json:"connectionLimit"`
	DeletionPolicy  DeletionPolicy `json:"deletionPolicy"`
	// SecretName is the workload's Secret (and ConfigMap) in the
	// request's namespace.
	SecretName string        `json:"secretName"`
	Dedicated  DedicatedSpec `json:"dedicated"`
}

// DedicatedSpec holds the dedicated plan's cluster settings.
type DedicatedSpec struct {
	Instances int    `json:"instances"`
	Storage   string `json:"storage"`
	// Version is the PostgreSQL major version.
	Version string `json:"version"`
}

// Defaults of the API, applied by the apiserver from the schema and again
// by ParseSpec, so a stage run on an object that skipped the schema (a
// hand-written input in a local run) behaves the same.
const (
	DefaultConnectionLimit  = 20
	DefaultInstances        = 1
	DefaultStorage          = "10Gi"
	DefaultPostgresVersion  = "17"
	maxConnectionLimit      = 10000
	maxInstances            = 9
	maxIdentifierLength     = 63
	maxDedicatedClusterName = 50
)

// allowedExtensions is the platform's allow-list; promise.yaml's enum must
// list the same names (a test checks it). It lives in the stage as well as
// the schema because the schema is not the only way in: a local run can
// hand the stage any object.
var allowedExtensions = []string{
	"btree_gin", "btree_gist", "citext", "cube", "fuzzystrmatch", "hstore", "intarray", "ltree",
	"pg_trgm", "pgcrypto", "postgis", "tablefunc", "unaccent", "uuid-ossp", "vector",
}

// AllowedExtensions returns the extensions a request may ask for, sorted.
func AllowedExtensions() []string { return slices.Clone(allowedExtensions) }

// postgresVersions are the PostgreSQL majors the dedicated plan offers.
var postgresVersions = []string{"15", "16", "17"}

// identifierPattern is a PostgreSQL identifier that needs no quoting and
// keeps its case: lower-case, so that `psql -d orders` finds what the
// request named "orders".
var identifierPattern = regexp.MustCompile(`^[a-z_][a-z0-9_]*$`)

// reservedNames cannot name a request's database or role: PostgreSQL's own
// databases, and "public", which GRANT and REVOKE read as every role.
var reservedNames = []string{"postgres", "public", "template0", "template1"}

// ParseSpec reads a request's spec, applies the API's defaults and
// validates it.
func ParseSpec(spec map[string]any) (Spec, error) {
	s, err := decodeSpec(spec)
	if err != nil {
		return Spec{}, err
	}
	if err := s.Validate(); err != nil {
		return Spec{}, err
	}
	return s, nil
}

// decodeSpec reads a request's spec and applies the API's defaults,
// without validating it: the delete stage must be able to let go of a
// request that would no longer pass (its extension has left the
// allow-list, say).
func decodeSpec(spec map[string]any) (Spec, error) {
	raw, err := json.Marshal(spec)
	if err != nil {
		return Spec{}, fmt.Errorf("reading the request's spec: %w", err)
	}
	var s Spec
	if err := json.Unmarshal(raw, &s); err != nil {
		return Spec{}, fmt.Errorf("reading the request's spec: %w", err)
	}
	s.applyDefaults()
	return s, nil
}

func (s *Spec) applyDefaults() {
	if s.Engine == "" {
		s.Engine = EnginePostgreSQL
	}
	if s.Plan == "" {
		s.Plan = PlanShared
	}
	if s.ConnectionLimit == 0 {
		s.ConnectionLimit = DefaultConnectionLimit
	}
	if s.DeletionPolicy == "" {
		s.DeletionPolicy = DeletionRetain
	}
	if s.Dedicated.Instances == 0 {
		s.Dedicated.Instances = DefaultInstances
	}
	if s.Dedicated.Storage == "" {
		s.Dedicated.Storage = DefaultStorage
	}
	if s.Dedicated.Version == "" {
		s.Dedicated.Version = DefaultPostgresVersion
	}
}

// Validate checks what the schema checks, and what it cannot where no
// apiserver evaluates its CEL rules (local runs): every problem is
// reported, not only the first.
func (s Spec) Validate() error {
	var errs []error
	if s.Engine != EnginePostgreSQL {
		errs = append(errs, fmt.Errorf("spec.engine %q: only %q is offered", s.Engine, EnginePostgreSQL))
	}
	if s.Plan != PlanShared && s.Plan != PlanDedicated {
		errs = append(errs, fmt.Errorf("spec.plan %q: want %s or %s", s.Plan, PlanShared, PlanDedicated))
	}
	if err := ValidateIdentifier(s.DatabaseName); err != nil {
		errs = append(errs, fmt.Errorf("spec.databaseName: %w", err))
	}
	seen := map[string]bool{}
	for _, e := range s.Extensions {
		switch {
		case !slices.Contains(allowedExtensions, e):
			errs = append(errs, fmt.Errorf("spec.extensions: %q is not on the platform's allow-list (%s)", e, strings.Join(allowedExtensions, ", ")))
		case seen[e]:
			errs = append(errs, fmt.Errorf("spec.extensions: %q is listed twice", e))
		}
		seen[e] = true
	}
	if s.ConnectionLimit < 1 || s.ConnectionLimit > maxConnectionLimit {
		errs = append(errs, fmt.Errorf("spec.connectionLimit %d: want 1 to %d", s.ConnectionLimit, maxConnectionLimit))
	}
	if s.DeletionPolicy != DeletionRetain && s.DeletionPolicy != DeletionDelete {
		errs = append(errs, fmt.Errorf("spec.deletionPolicy %q: want %s or %s", s.DeletionPolicy, DeletionRetain, DeletionDelete))
	}
	if msgs := validation.IsDNS1123Subdomain(s.SecretName); len(msgs) > 0 {
		errs = append(errs, fmt.Errorf("spec.secretName %q: %s", s.SecretName, strings.Join(msgs, "; ")))
	}
	if s.Plan == PlanDedicated {
		errs = append(errs, s.Dedicated.validate()...)
	}
	return errors.Join(errs...)
}

func (d DedicatedSpec) validate() []error {
	var errs []error
	if d.Instances < 1 || d.Instances > maxInstances {
		errs = append(errs, fmt.Errorf("spec.dedicated.instances %d: want 1 to %d", d.Instances, maxInstances))
	}
	if q, err := resource.ParseQuantity(d.Storage); err != nil || q.Sign() <= 0 {
		errs = append(errs, fmt.Errorf("spec.dedicated.storage %q: want a positive size such as 10Gi", d.Storage))
	}
	if !slices.Contains(postgresVersions, d.Version) {
		errs = append(errs, fmt.Errorf("spec.dedicated.version %q: want one of %s", d.Version, strings.Join(postgresVersions, ", ")))
	}
	return errs
}

// ValidateIdentifier checks a database or role name: a PostgreSQL
// identifier of at most 63 bytes (longer ones are silently truncated by the
// server, so two requests could end up on one database), lower-case, not
// reserved by PostgreSQL.
func ValidateIdentifier(name string) error {
	switch {
	case name == "":
		return errors.New("must not be empty")
	case len(name) > maxIdentifierLength:
		return fmt.Errorf("%q is %d characters, PostgreSQL identifiers have at most %d", name, len(name), maxIdentifierLength)
	case !identifierPattern.MatchString(name):
		return fmt.Errorf("%q: use lower-case letters, digits and underscores, starting with a letter or underscore", name)
	case slices.Contains(reservedNames, name):
		return fmt.Errorf("%q is reserved by PostgreSQL", name)
	case strings.HasPrefix(name, "pg_"):
		return fmt.Errorf("%q: names starting with pg_ are reserved by PostgreSQL", name)
	}
	return nil
}
