package database_test

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"promised.dev/promised/pipelines/ledger"
	"promised.dev/promised/promises/database"
	"promised.dev/promised/promises/database/pgtest"
)

// catalogRow is what the server holds for a role and its database; xmin
// changes whenever a statement rewrites the row, even to the same values.
type catalogRow struct {
	roleXmin, rolePassword, dbXmin string
}

func catalog(t *testing.T, srv *pgtest.Server, name string) (catalogRow, bool) {
	t.Helper()
	ctx := context.Background()
	conn, err := srv.Connect(ctx, "postgres")
	require.NoError(t, err)
	defer conn.Close(ctx)
	var r catalogRow
	err = conn.QueryRow(ctx, `
		SELECT a.xmin::text, coalesce(a.rolpassword, ''), coalesce((SELECT d.xmin::text FROM pg_database d WHERE d.datname = $1), '')
		FROM pg_authid a WHERE a.rolname = $1`, name).Scan(&r.roleXmin, &r.rolePassword, &r.dbXmin)
	if errors.Is(err, pgx.ErrNoRows) {
		return r, false
	}
	require.NoError(t, err)
	return r, true
}

func databaseExists(t *testing.T, srv *pgtest.Server, name string) bool {
	t.Helper()
	ctx := context.Background()
	conn, err := srv.Connect(ctx, "postgres")
	require.NoError(t, err)
	defer conn.Close(ctx)
	var n int
	require.NoError(t, conn.QueryRow(ctx, "SELECT count(*) FROM pg_database WHERE datname = $1", name).Scan(&n))
	return n == 1
}

func requirePgCode(t *testing.T, err error, code string) {
	t.Helper()
	var pgErr *pgconn.PgError
	require.True(t, errors.As(err, &pgErr), "want PostgreSQL error %s, got %v", code, err)
	require.Equal(t, code, pgErr.Code, "%v", err)
}

// TestSharedDatabaseLifecycle is the promise's story on a real server: a
// request gets a database its workload can use and nothing else; re-runs
// change nothing at all; the rotate annotation changes the credentials
// exactly once; deletion follows the deletion policy.
func TestSharedDatabaseLifecycle(t *testing.T) {
	ctx := context.Background()
	srv := database.SharedServer()
	p := newPlatform(t, serverOf(srv))
	orders := request("shop", "orders", map[string]any{
		"databaseName": "orders", "secretName": "orders-db", "connectionLimit": int64(5),
		"extensions": []any{"citext", "pgcrypto"},
	})
	billing := request("finance", "billing", map[string]any{"databaseName": "billing", "secretName": "billing-db"})

	res, err := p.configure(orders, nil)
	require.NoError(t, err)
	out := res.Files()
	requireNoPlaintext(t, []string{p.password(orders)}, res, err)
	creds := p.credentials(out)
	require.Equal(t, p.password(orders), string(creds["password"]))
	require.Equal(t, "orders", string(creds["database"]))
	require.Equal(t, "orders", string(creds["user"]))
	require.Contains(t, string(out["configure/"+database.ConnectionFile]), "kind: ConfigMap")
	require.Equal(t, "shared", res.Status["plan"])
	require.Contains(t, res.Status["message"], `database "orders" is ready`)
	bres, err := p.configure(billing, nil)
	require.NoError(t, err)

	// The workload, with what it unsealed: it owns its database...
	wl, err := connectWith(ctx, creds)
	require.NoError(t, err)
	_, err = wl.Exec(ctx, "CREATE TABLE customers (email citext PRIMARY KEY, secret bytea DEFAULT gen_random_bytes(8))")
	require.NoError(t, err, "the extensions asked for are there")
	_, err = wl.Exec(ctx, "INSERT INTO customers (email) VALUES ('A@example.com')")
	require.NoError(t, err)
	var n int
	require.NoError(t, wl.QueryRow(ctx, "SELECT count(*) FROM customers WHERE email = 'a@example.com'").Scan(&n))
	require.Equal(t, 1, n)
	// ...and nothing else.
	_, err = wl.Exec(ctx, "CREATE ROLE intruder")
	requirePgCode(t, err, "42501")
	_, err = wl.Exec(ctx, "CREATE DATABASE another")
	requirePgCode(t, err, "42501")
	_, err = srv.ConnectAs(ctx, "orders", string(creds["password"]), "billing")
	requirePgCode(t, err, "42501") // no CONNECT on another request's database
	billingCreds := p.credentials(bres.Files())
	_, err = srv.ConnectAs(ctx, "billing", string(billingCreds["password"]), "orders")
	requirePgCode(t, err, "42501")
	require.NoError(t, wl.Close(ctx))

	// 100 forced re-runs, each given the last output as the state store
	// would: same bytes, same password, and not one catalog row rewritten.
	before, ok := catalog(t, srv, "orders")
	require.True(t, ok)
	password := p.password(orders)
	for i := range 100 {
		again, err := p.configure(orders, out)
		require.NoError(t, err, "re-run %d", i)
		require.Equal(t, out, again.Files(), "re-run %d changed the output", i)
		require.Equal(t, res.Status, again.Status, "re-run %d changed the status", i)
	}
	require.Equal(t, password, p.password(orders))
	after, _ := catalog(t, srv, "orders")
	require.Equal(t, before, after, "a re-run touched the role or the database")

	// Rotation: one new output, then stable again; the new password works
	// and the old one no longer does.
	rotated := orders.DeepCopy()
	rotated.SetAnnotations(map[string]string{ledger.RotateAnnotation: "2026-03-01T10:00:00Z"})
	var outputs [][]byte
	prev := out
	for i := range 10 {
		r, err := p.configure(rotated, prev)
		require.NoError(t, err, "run %d after the annotation", i)
		requireNoPlaintext(t, []string{password, p.password(orders)}, r, err)
		file := r.Files()["configure/"+database.CredentialsFile]
		if len(outputs) == 0 || !bytes.Equal(outputs[len(outputs)-1], file) {
			outputs = append(outputs, file)
		}
		prev = r.Files()
	}
	require.Len(t, outputs, 1, "the annotation rotates exactly once")
	require.NotEqual(t, out["configure/"+database.CredentialsFile], outputs[0])
	require.Equal(t, out["configure/"+database.ConnectionFile], prev["configure/"+database.ConnectionFile], "the ConfigMap holds nothing that rotates")
	newCreds := p.credentials(prev)
	require.NotEqual(t, password, string(newCreds["password"]))
	c, err := connectWith(ctx, newCreds)
	require.NoError(t, err, "the new password works")
	var count int
	require.NoError(t, c.QueryRow(ctx, "SELECT count(*) FROM customers").Scan(&count))
	require.Equal(t, 1, count, "rotation keeps the data")
	require.NoError(t, c.Close(ctx))
	_, err = srv.ConnectAs(ctx, "orders", password, "orders")
	requirePgCode(t, err, "28P01")
	requireNotInServerLog(t, password, string(newCreds["password"]), string(billingCreds["password"]))

	// Delete with the default policy (Retain) keeps the database and role.
	dres, err := p.delete(rotated, prev)
	require.NoError(t, err)
	require.Empty(t, dres.Files())
	require.Contains(t, dres.Status["message"], "deletionPolicy Retain")
	require.True(t, databaseExists(t, srv, "orders"))
	c, err = connectWith(ctx, newCreds)
	require.NoError(t, err, "a retained database keeps working")
	require.NoError(t, c.Close(ctx))

	// Delete with Delete drops both, even with a session open.
	session, err := connectWith(ctx, newCreds)
	require.NoError(t, err)
	defer session.Close(ctx)
	doomed := rotated.DeepCopy()
	require.NoError(t, unstructured.SetNestedField(doomed.Object, "Delete", "spec", "deletionPolicy"))
	dres, err = p.delete(doomed, prev)
	require.NoError(t, err)
	require.Contains(t, dres.Status["message"], `database "orders" and role "orders" dropped`)
	require.False(t, databaseExists(t, srv, "orders"))
	_, ok = catalog(t, srv, "orders")
	require.False(t, ok, "the role is dropped")
	require.Empty(t, p.ledgerKeys(orders), "the ledger forgets the password")
	require.Error(t, session.Ping(ctx), "the open session was ended")
	require.True(t, databaseExists(t, srv, "billing"), "other requests' databases stay")

	// Deleting again (the controller retries) is fine.
	dres, err = p.delete(doomed, prev)
	require.NoError(t, err)
	require.Contains(t, dres.Status["message"], "nothing to drop")
}
