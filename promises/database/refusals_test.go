package database_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"testing"

	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"promised.dev/promised/pipelines"
	"promised.dev/promised/pipelines/contract"
	"promised.dev/promised/promises/database"
	"promised.dev/promised/promises/database/pgtest"
)

// requireNothingMade checks that a refused or failed run left nothing: no
// output, no ledger entry, no role, no database.
func requireNothingMade(t *testing.T, p *platform, srv *pgtest.Server, res *pipelines.Result, obj *unstructured.Unstructured, name string) {
	t.Helper()
	require.Nil(t, res, "a failed run has no output")
	require.Empty(t, p.ledgerKeys(obj), "a failed run leaves no ledger entry")
	_, roleExists := catalog(t, srv, name)
	require.False(t, roleExists, "a failed run leaves no role %q", name)
	require.False(t, databaseExists(t, srv, name), "a failed run leaves no database %q", name)
}

func TestSchemaRefusesBadRequests(t *testing.T) {
	p := newPlatform(t, serverOf(database.SharedServer()))
	for _, tc := range []struct {
		name string
		spec map[string]any
		want string
	}{
		{"upper case", map[string]any{"databaseName": "Orders", "secretName": "s"}, "spec.databaseName"},
		{"starts with a digit", map[string]any{"databaseName": "1orders", "secretName": "s"}, "spec.databaseName"},
		{"quote in the name", map[string]any{"databaseName": `a"b`, "secretName": "s"}, "spec.databaseName"},
		{"too long for PostgreSQL", map[string]any{"databaseName": "a234567890123456789012345678901234567890123456789012345678901234", "secretName": "s"}, "spec.databaseName"},
		{"extension not on the allow-list", map[string]any{"databaseName": "x", "secretName": "s", "extensions": []any{"plpython3u"}}, "spec.extensions[0]"},
		{"unknown plan", map[string]any{"databaseName": "x", "secretName": "s", "plan": "huge"}, "spec.plan"},
		{"bad secret name", map[string]any{"databaseName": "x", "secretName": "Not_A_Name"}, "spec.secretName"},
		{"no connections", map[string]any{"databaseName": "x", "secretName": "s", "connectionLimit": int64(0)}, "spec.connectionLimit"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := p.checked(request("default", "r", tc.spec))
			require.ErrorContains(t, err, tc.want)
		})
	}
}

// TestStageRefusesWhatTheSchemaLets covers requests that reach the stage
// without the apiserver's CEL rules (a local run evaluates the schema but
// not CEL) or without the schema at all.
func TestStageRefusesWhatTheSchemaLets(t *testing.T) {
	srv := database.SharedServer()
	p := newPlatform(t, serverOf(srv))
	for i, tc := range []struct {
		name, db string
		spec     map[string]any
		raw      bool
		want     string
	}{
		{"reserved name", "postgres", map[string]any{"databaseName": "postgres", "secretName": "s"}, false, `"postgres" is reserved by PostgreSQL`},
		{"pg_ prefix", "pg_orders", map[string]any{"databaseName": "pg_orders", "secretName": "s"}, false, "reserved by PostgreSQL"},
		{"extension not on the allow-list", "refused_ext", map[string]any{"databaseName": "refused_ext", "secretName": "s", "extensions": []any{"plpython3u"}}, true, `"plpython3u" is not on the platform's allow-list`},
		{"injection attempt", "x", map[string]any{"databaseName": `x"; DROP ROLE postgres; --`, "secretName": "s"}, true, "spec.databaseName"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			obj := request("default", fmt.Sprintf("refused-%d", i), tc.spec)
			res, err := p.run(contract.ActionConfigure, obj, nil, tc.raw)
			require.ErrorContains(t, err, tc.want)
			if tc.db != "postgres" {
				requireNothingMade(t, p, srv, res, obj, tc.db)
			}
		})
	}
}

func TestUnreachableServer(t *testing.T) {
	srv := database.SharedServer()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := l.Addr().(*net.TCPAddr).Port
	require.NoError(t, l.Close()) // nothing listens there now
	down := serverOf(srv)
	down.Port = port
	p := newPlatform(t, down)
	obj := request("default", "unreachable", map[string]any{"databaseName": "unreachable", "secretName": "s"})
	res, err := p.configure(obj, nil)
	require.ErrorContains(t, err, "connecting to the shared PostgreSQL server "+down.String())
	require.ErrorContains(t, err, "connection refused")
	require.NotContains(t, err.Error(), srv.Password)
	requireNothingMade(t, p, srv, res, obj, "unreachable")

	// Deleting with Delete cannot confirm the drop, so it fails (and the
	// controller keeps the finalizer); with Retain it needs no server.
	doomed := request("default", "unreachable", map[string]any{"databaseName": "unreachable", "secretName": "s", "deletionPolicy": "Delete"})
	_, err = p.delete(doomed, nil)
	require.ErrorContains(t, err, `deletionPolicy Delete: cannot drop database "unreachable": connecting to the shared PostgreSQL server`)
	_, err = p.delete(obj, nil)
	require.NoError(t, err)
}

func TestWrongAdminCredentials(t *testing.T) {
	srv := database.SharedServer()
	wrong := serverOf(srv)
	wrong.Password = "not-the-admin-password-41"
	p := newPlatform(t, wrong)
	obj := request("default", "wrongadmin", map[string]any{"databaseName": "wrongadmin", "secretName": "s"})
	res, err := p.configure(obj, nil)
	require.ErrorContains(t, err, `connecting to the shared PostgreSQL server `+wrong.String()+` as "postgres"`)
	require.ErrorContains(t, err, "password authentication failed")
	require.NotContains(t, err.Error(), wrong.Password)
	requireNothingMade(t, p, srv, res, obj, "wrongadmin")
}

func TestMissingServerSecret(t *testing.T) {
	p := newPlatform(t, serverOf(database.SharedServer()))
	delete(p.secrets, serverSecretNamespace+"/"+serverSecretName)
	_, err := p.configure(request("default", "nosecret", map[string]any{"databaseName": "nosecret", "secretName": "s"}), nil)
	require.ErrorContains(t, err, "reading the shared server's Secret: Secret promised-system/postgres-shared not found")

	p.secrets[serverSecretNamespace+"/"+serverSecretName] = map[string][]byte{"host": []byte("db"), "password": []byte("hunter2-admin")}
	_, err = p.configure(request("default", "nosecret", map[string]any{"databaseName": "nosecret", "secretName": "s"}), nil)
	require.ErrorContains(t, err, `key "username" is missing or empty`)
	require.NotContains(t, err.Error(), "hunter2-admin")
}

// TestNeverTakesOver: a database or role of the requested name that this
// request did not make is refused, and left exactly as it was.
func TestNeverTakesOver(t *testing.T) {
	ctx := context.Background()
	srv := database.SharedServer()
	admin, err := srv.Connect(ctx, "postgres")
	require.NoError(t, err)
	defer admin.Close(ctx)
	for _, stmt := range []string{
		"CREATE ROLE someone", "CREATE DATABASE taken OWNER someone",
		"CREATE ROLE squat LOGIN", "CREATE ROLE lookalike LOGIN", "COMMENT ON ROLE lookalike IS 'managed by promised.dev for Database other/lookalike'",
	} {
		_, err := admin.Exec(ctx, stmt)
		require.NoError(t, err, stmt)
	}
	p := newPlatform(t, serverOf(srv))

	obj := request("default", "taken", map[string]any{"databaseName": "taken", "secretName": "s"})
	res, err := p.configure(obj, nil)
	require.ErrorContains(t, err, `database "taken" already exists on `+srv.Host)
	require.ErrorContains(t, err, `is owned by role "someone", not by this request's role "taken"`)
	require.True(t, errors.Is(err, database.ErrNotOurs))
	require.Nil(t, res)
	require.Empty(t, p.ledgerKeys(obj))
	_, roleMade := catalog(t, srv, "taken")
	require.False(t, roleMade)

	for _, name := range []string{"squat", "lookalike"} {
		before, _ := catalog(t, srv, name)
		obj := request("default", name, map[string]any{"databaseName": name, "secretName": "s"})
		res, err := p.configure(obj, nil)
		require.ErrorContains(t, err, `role "`+name+`" already exists`)
		require.True(t, errors.Is(err, database.ErrNotOurs))
		require.Nil(t, res)
		after, _ := catalog(t, srv, name)
		require.Equal(t, before, after, "the refused role is untouched")
		require.False(t, databaseExists(t, srv, name))
	}

	// Deleting the refused request with Delete leaves the other's
	// database alone, and succeeds so the request can go.
	doomed := request("default", "taken", map[string]any{"databaseName": "taken", "secretName": "s", "deletionPolicy": "Delete"})
	dres, err := p.delete(doomed, nil)
	require.NoError(t, err)
	require.Contains(t, dres.Status["message"], `database "taken" (owned by "someone") left alone: not made for this request`)
	require.True(t, databaseExists(t, srv, "taken"))
}

// TestFailedRunRemovesWhatItMade: a run that fails after creating the role
// and the database drops both, and the ledger forgets the password. The
// failure is real: an event trigger in template1 (which every new database
// copies) refuses CREATE EXTENSION, on a server of this test's own.
func TestFailedRunRemovesWhatItMade(t *testing.T) {
	ctx := context.Background()
	srv := pgtest.New(t)
	admin, err := srv.Connect(ctx, "template1")
	require.NoError(t, err)
	_, err = admin.Exec(ctx, `
		CREATE FUNCTION refuse_extensions() RETURNS event_trigger LANGUAGE plpgsql AS
		  $$ BEGIN RAISE EXCEPTION 'extensions are frozen on this server'; END $$;
		CREATE EVENT TRIGGER refuse_extensions ON ddl_command_start
		  WHEN TAG IN ('CREATE EXTENSION') EXECUTE FUNCTION refuse_extensions();`)
	require.NoError(t, err)
	require.NoError(t, admin.Close(ctx))

	p := newPlatform(t, serverOf(srv))
	obj := request("default", "halfway", map[string]any{"databaseName": "halfway", "secretName": "s", "extensions": []any{"citext"}})
	res, err := p.configure(obj, nil)
	require.ErrorContains(t, err, `creating extension "citext" in database "halfway"`)
	require.ErrorContains(t, err, "extensions are frozen on this server")
	require.ErrorContains(t, err, `this run removed what it had created: database "halfway", role "halfway", the password's ledger entry`)
	requireNothingMade(t, p, srv, res, obj, "halfway")
}

// TestNonSuperuserAdmin: a managed PostgreSQL service gives the platform a
// role with CREATEROLE and CREATEDB, not a superuser; the promise works
// with that too.
func TestNonSuperuserAdmin(t *testing.T) {
	ctx := context.Background()
	srv := database.SharedServer()
	admin, err := srv.Connect(ctx, "postgres")
	require.NoError(t, err)
	defer admin.Close(ctx)
	_, err = admin.Exec(ctx, "CREATE ROLE platform_admin LOGIN CREATEROLE CREATEDB PASSWORD 'platform-admin-pw-1'")
	require.NoError(t, err)
	limited := serverOf(srv)
	limited.Username, limited.Password = "platform_admin", "platform-admin-pw-1"
	p := newPlatform(t, limited)

	obj := request("team", "notes", map[string]any{"databaseName": "notes", "secretName": "notes-db", "extensions": []any{"citext"}, "deletionPolicy": "Delete"})
	res, err := p.configure(obj, nil)
	require.NoError(t, err)
	wl, err := connectWith(ctx, p.credentials(res.Files()))
	require.NoError(t, err)
	_, err = wl.Exec(ctx, "CREATE TABLE n (t citext)")
	require.NoError(t, err)
	require.NoError(t, wl.Close(ctx))
	again, err := p.configure(obj, res.Files())
	require.NoError(t, err)
	require.Equal(t, res.Files(), again.Files())

	_, err = p.delete(obj, res.Files())
	require.NoError(t, err)
	require.False(t, databaseExists(t, srv, "notes"))
	_, roleLeft := catalog(t, srv, "notes")
	require.False(t, roleLeft)
}

// TestRoleOwningObjectsElsewhere: a role that owns something outside its
// database cannot be dropped; the delete fails and says what is in the way.
func TestRoleOwningObjectsElsewhere(t *testing.T) {
	ctx := context.Background()
	srv := database.SharedServer()
	p := newPlatform(t, serverOf(srv))
	obj := request("team", "sticky", map[string]any{"databaseName": "sticky", "secretName": "s", "deletionPolicy": "Delete"})
	res, err := p.configure(obj, nil)
	require.NoError(t, err)
	admin, err := srv.Connect(ctx, "postgres")
	require.NoError(t, err)
	defer admin.Close(ctx)
	_, err = admin.Exec(ctx, "CREATE SCHEMA sticky_elsewhere AUTHORIZATION sticky")
	require.NoError(t, err)

	_, err = p.delete(obj, res.Files())
	require.ErrorContains(t, err, `dropping role "sticky"`)
	require.ErrorContains(t, err, "owner of schema sticky_elsewhere")
	require.NotEmpty(t, p.ledgerKeys(obj), "a failed delete keeps the password")

	_, err = admin.Exec(ctx, "DROP SCHEMA sticky_elsewhere")
	require.NoError(t, err)
	_, err = p.delete(obj, res.Files())
	require.NoError(t, err, "the retried delete finishes the job")
	_, roleLeft := catalog(t, srv, "sticky")
	require.False(t, roleLeft)
}
