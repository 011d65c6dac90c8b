package database_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"promised.dev/promised/pipelines/contract"
	"promised.dev/promised/promises/database"
)

// TestSpecChangesAndDriftAreApplied: a changed request is applied in place
// without touching the credentials, and what someone changed by hand on
// the server is put back, with the workload's Secret unchanged.
func TestSpecChangesAndDriftAreApplied(t *testing.T) {
	ctx := context.Background()
	srv := database.SharedServer()
	p := newPlatform(t, serverOf(srv))
	obj := request("team", "drift", map[string]any{"databaseName": "drift", "secretName": "drift-db", "connectionLimit": int64(5)})
	res, err := p.configure(obj, nil)
	require.NoError(t, err)
	out := res.Files()
	creds := p.credentials(out)
	admin, err := srv.Connect(ctx, "postgres")
	require.NoError(t, err)
	defer admin.Close(ctx)
	var connLimit int
	require.NoError(t, admin.QueryRow(ctx, "SELECT rolconnlimit FROM pg_roles WHERE rolname = 'drift'").Scan(&connLimit))
	require.Equal(t, 5, connLimit)

	// A new connection limit and a new extension.
	changed := obj.DeepCopy()
	require.NoError(t, unstructured.SetNestedField(changed.Object, int64(7), "spec", "connectionLimit"))
	require.NoError(t, unstructured.SetNestedSlice(changed.Object, []any{"hstore"}, "spec", "extensions"))
	again, err := p.configure(changed, out)
	require.NoError(t, err)
	require.Equal(t, out, again.Files(), "the workload's Secret does not change with the role's settings")
	require.NoError(t, admin.QueryRow(ctx, "SELECT rolconnlimit FROM pg_roles WHERE rolname = 'drift'").Scan(&connLimit))
	require.Equal(t, 7, connLimit)
	wl, err := connectWith(ctx, creds)
	require.NoError(t, err)
	_, err = wl.Exec(ctx, "CREATE TABLE kv (h hstore)")
	require.NoError(t, err, "the added extension is there")
	require.NoError(t, wl.Close(ctx))

	// Drift: the password changed, the role made superuser, PUBLIC given
	// CONNECT again; a re-run puts it all back.
	for _, stmt := range []string{
		"ALTER ROLE drift PASSWORD 'changed-by-hand'", "ALTER ROLE drift SUPERUSER",
		"GRANT CONNECT ON DATABASE drift TO PUBLIC",
	} {
		_, err := admin.Exec(ctx, stmt)
		require.NoError(t, err, stmt)
	}
	_, err = connectWith(ctx, creds)
	requirePgCode(t, err, "28P01")
	again, err = p.configure(changed, out)
	require.NoError(t, err)
	require.Equal(t, out, again.Files())
	wl, err = connectWith(ctx, creds)
	require.NoError(t, err, "the ledger's password is set again")
	require.NoError(t, wl.Close(ctx))
	var super, publicConnect bool
	require.NoError(t, admin.QueryRow(ctx, `SELECT rolsuper, has_database_privilege('public', 'drift', 'CONNECT') FROM pg_roles WHERE rolname = 'drift'`).Scan(&super, &publicConnect))
	require.False(t, super)
	require.False(t, publicConnect)

	// The role dropped by hand (with its database): made again, with the
	// same password, so the workload's Secret still works.
	_, err = admin.Exec(ctx, "DROP DATABASE drift WITH (FORCE)")
	require.NoError(t, err)
	_, err = admin.Exec(ctx, "DROP ROLE drift")
	require.NoError(t, err)
	again, err = p.configure(changed, out)
	require.NoError(t, err)
	require.Equal(t, out, again.Files())
	wl, err = connectWith(ctx, creds)
	require.NoError(t, err)
	require.NoError(t, wl.Close(ctx))
}

// TestDeleteLetsGoOfRequestsThatNoLongerValidate: the delete stage checks
// only what it needs, so a request whose spec the promise would now refuse
// (or never accepted) can still be deleted.
func TestDeleteLetsGoOfRequestsThatNoLongerValidate(t *testing.T) {
	srv := database.SharedServer()
	p := newPlatform(t, serverOf(srv))
	obj := request("team", "old", map[string]any{"databaseName": "old_db", "secretName": "old-db", "deletionPolicy": "Delete"})
	res, err := p.configure(obj, nil)
	require.NoError(t, err)
	stale := obj.DeepCopy()
	require.NoError(t, unstructured.SetNestedSlice(stale.Object, []any{"dropped_from_allow_list"}, "spec", "extensions"))
	d, err := p.run(contract.ActionDelete, stale, res.Files(), true)
	require.NoError(t, err)
	require.Contains(t, d.Status["message"], `database "old_db" and role "old_db" dropped`)
	require.False(t, databaseExists(t, srv, "old_db"))

	never := request("team", "never", map[string]any{"databaseName": "postgres", "secretName": "s", "deletionPolicy": "Delete"})
	d, err = p.run(contract.ActionDelete, never, nil, true)
	require.NoError(t, err)
	require.Contains(t, d.Status["message"], "was never valid")
	require.True(t, databaseExists(t, srv, "postgres"))
}
