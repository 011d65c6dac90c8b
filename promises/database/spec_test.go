package database_test

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"promised.dev/promised/pipelines/apischema"
	"promised.dev/promised/pipelines/local"
	"promised.dev/promised/promises/database"
)

func TestParseSpecDefaults(t *testing.T) {
	s, err := database.ParseSpec(map[string]any{"databaseName": "orders", "secretName": "orders-db"})
	require.NoError(t, err)
	require.Equal(t, database.Spec{
		Engine: database.EnginePostgreSQL, Plan: database.PlanShared, DatabaseName: "orders",
		ConnectionLimit: database.DefaultConnectionLimit, DeletionPolicy: database.DeletionRetain, SecretName: "orders-db",
		Dedicated: database.DedicatedSpec{Instances: 1, Storage: "10Gi", Version: "17"},
	}, s)
}

func TestParseSpecReportsEveryProblem(t *testing.T) {
	_, err := database.ParseSpec(map[string]any{
		"engine": "mysql", "plan": "dedicated", "databaseName": "pg_x", "secretName": "",
		"extensions": []any{"citext", "citext", "adminpack"}, "connectionLimit": int64(-1), "deletionPolicy": "Orphan",
		"dedicated": map[string]any{"instances": int64(10), "storage": "lots", "version": "9.6"},
	})
	for _, want := range []string{
		`spec.engine "mysql"`, "spec.databaseName", `"citext" is listed twice`, `"adminpack" is not on the platform's allow-list`,
		"spec.connectionLimit -1", `spec.deletionPolicy "Orphan"`, "spec.secretName", "spec.dedicated.instances 10",
		`spec.dedicated.storage "lots"`, `spec.dedicated.version "9.6"`,
	} {
		require.ErrorContains(t, err, want)
	}
}

// TestSchemaAndStageAgree: the allow-list and the API's defaults live in
// promise.yaml (for the apiserver) and in the stage (for runs that skip
// the schema); they must not drift apart.
func TestSchemaAndStageAgree(t *testing.T) {
	p, err := local.LoadPromise(".")
	require.NoError(t, err)
	crd, err := apischema.CRD(p)
	require.NoError(t, err)
	spec := crd.Spec.Versions[0].Schema.OpenAPIV3Schema.Properties["spec"]
	var enum []string
	for _, v := range spec.Properties["extensions"].Items.Schema.Enum {
		enum = append(enum, string(v.Raw[1:len(v.Raw)-1]))
	}
	require.Equal(t, database.AllowedExtensions(), enum)

	// What the schema defaults is what the stage defaults.
	defaulted, err := apischema.Check(crd, request("default", "d", map[string]any{"databaseName": "d", "secretName": "s"}))
	require.NoError(t, err)
	raw := defaulted.Object["spec"].(map[string]any)
	fromSchema, err := database.ParseSpec(raw)
	require.NoError(t, err)
	fromStage, err := database.ParseSpec(map[string]any{"databaseName": "d", "secretName": "s"})
	require.NoError(t, err)
	require.Equal(t, fromStage, fromSchema)
	require.Len(t, raw, 7, "every field with a default was defaulted: %v", raw)
}

func TestValidateIdentifier(t *testing.T) {
	for name, ok := range map[string]bool{
		"orders": true, "_tmp": true, "a1_b2": true, "x": true,
		"": false, "Orders": false, "1x": false, "a-b": false, "a b": false, `a"b`: false, "a$": false,
		"postgres": false, "template1": false, "public": false, "pg_x": false,
		"a23456789012345678901234567890123456789012345678901234567890123":  true,
		"a234567890123456789012345678901234567890123456789012345678901234": false,
	} {
		err := database.ValidateIdentifier(name)
		require.Equal(t, ok, err == nil, "%q: %v", name, err)
	}
}

func TestParseServer(t *testing.T) {
	s, err := database.ParseServer(map[string][]byte{"host": []byte("pg.internal"), "username": []byte("admin"), "password": []byte("s3cret-admin")})
	require.NoError(t, err)
	require.Equal(t, database.Server{
		Host: "pg.internal", Port: 5432, Username: "admin", Password: "s3cret-admin", Database: "postgres", SSLMode: "verify-full",
		WorkloadHost: "pg.internal", WorkloadPort: 5432, WorkloadSSLMode: "verify-full",
	}, s)
	back, err := database.ParseServer(s.Data())
	require.NoError(t, err)
	require.Equal(t, s, back, "Data and ParseServer round-trip")
	for _, format := range []string{"%v", "%+v", "%#v", "%s"} {
		require.NotContains(t, fmt.Sprintf(format, s), "s3cret-admin", "formatting with %s shows the password", format)
	}

	_, err = database.ParseServer(map[string][]byte{
		"host": []byte("h"), "password": []byte("s3cret-admin"), "port": []byte("s3cret-port"), "sslmode": []byte("maybe"), "ca.crt": []byte("nope"),
	})
	require.ErrorContains(t, err, `key "username" is missing or empty`)
	require.ErrorContains(t, err, `key "port": "s3cret-port" is not a port`)
	require.ErrorContains(t, err, `key "sslmode": "maybe"`)
	require.ErrorContains(t, err, `key "ca.crt" holds no PEM certificate`)
	require.NotContains(t, err.Error(), "s3cret-admin")
}
