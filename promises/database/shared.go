package database

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"promised.dev/promised/pipelines/ledger"
	"promised.dev/promised/pipelines/stage"
)

// wanted is what the shared plan should find on the server for a request.
type wanted struct {
	// role owns database; both carry the request's databaseName.
	role, database string
	// marker is the role's COMMENT: it tells the request's role from a
	// role of the same name made by someone else, which is never taken
	// over.
	marker     string
	connLimit  int
	extensions []string
}

func wantedFor(r request) wanted {
	return wanted{
		role: r.spec.DatabaseName, database: r.spec.DatabaseName, marker: r.marker(),
		connLimit: r.spec.ConnectionLimit, extensions: r.spec.Extensions,
	}
}

// roleState is the request's role as the server has it.
type roleState struct {
	canLogin, superuser, createDB, createRole, replication, bypassRLS bool
	connLimit                                                         int
	comment                                                           string
	// adminIsMember: the admin may act as the role (needed, when it is
	// not a superuser, to give the role a database).
	adminIsMember bool
}

// databaseState is the request's database as the server has it.
type databaseState struct {
	owner string
	// publicConnect: PUBLIC (every role) may connect, as PostgreSQL grants
	// on a new database.
	publicConnect bool
}

// serverState is everything the shared plan decides from, gathered before
// anything is changed.
type serverState struct {
	adminSuperuser bool
	role           *roleState
	database       *databaseState
	// available are the wanted extensions the server has installed.
	available []string
}

// gatherShared reads serverState over the admin's connection. It changes
// nothing.
func gatherShared(ctx context.Context, admin *pgx.Conn, w wanted) (serverState, error) {
	var st serverState
	if err := admin.QueryRow(ctx, `SELECT rolsuper FROM pg_roles WHERE rolname = current_user`).Scan(&st.adminSuperuser); err != nil {
		return st, fmt.Errorf("reading the admin role: %w", err)
	}
	var r roleState
	err := admin.QueryRow(ctx, `
		SELECT rolcanlogin, rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls, rolconnlimit,
		       coalesce(shobj_description(oid, 'pg_authid'), ''), pg_has_role(current_user, oid, 'MEMBER')
		FROM pg_roles WHERE rolname = $1`, w.role).
		Scan(&r.canLogin, &r.superuser, &r.createDB, &r.createRole, &r.replication, &r.bypassRLS, &r.connLimit, &r.comment, &r.adminIsMember)
	switch {
	case err == nil:
		st.role = &r
	case !errors.Is(err, pgx.ErrNoRows):
		return st, fmt.Errorf("reading role %q: %w", w.role, err)
	}
	var d databaseState
	err = admin.QueryRow(ctx, `
		SELECT pg_get_userbyid(datdba), has_database_privilege('public', oid, 'CONNECT')
		FROM pg_database WHERE datname = $1`, w.database).Scan(&d.owner, &d.publicConnect)
	switch {
	case err == nil:
		st.database = &d
	case !errors.Is(err, pgx.ErrNoRows):
		return st, fmt.Errorf("reading database %q: %w", w.database, err)
	}
	if len(w.extensions) > 0 {
		rows, err := admin.Query(ctx, `SELECT name FROM pg_available_extensions WHERE name = ANY($1) ORDER BY name`, w.extensions)
		if err != nil {
			return st, fmt.Errorf("reading the server's extensions: %w", err)
		}
		if st.available, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
			return st, fmt.Errorf("reading the server's extensions: %w", err)
		}
	}
	return st, nil
}

// sharedPlan is what a run changes on the server, apart from the password
// and extensions, which need the ledger and the database itself.
type sharedPlan struct {
	createRole bool
	// grantToAdmin makes a non-superuser admin a member of the role.
	grantToAdmin bool
	// alterRole are ALTER ROLE options bringing an existing role back to
	// what the request says.
	alterRole           []string
	createDatabase      bool
	revokePublicConnect bool
}

// empty reports whether the plan changes nothing.
func (p sharedPlan) empty() bool {
	return !p.createRole && !p.grantToAdmin && len(p.alterRole) == 0 && !p.createDatabase && !p.revokePublicConnect
}

// ErrNotOurs is returned (wrapped) when the request's database or role
// exists on the server but was not made for this request.
var ErrNotOurs = errors.New("not made for this request: the platform never takes over a database or role it did not create")

// planShared decides what to change, or refuses. It is pure, and it runs
// before anything is changed, so a refusal leaves the server as it was.
func planShared(st serverState, w wanted, server string) (sharedPlan, error) {
	if missing := without(w.extensions, st.available); len(missing) > 0 {
		return sharedPlan{}, fmt.Errorf("extension(s) %s are on the platform's allow-list but not installed on the shared server %s: ask the platform team to install them", strings.Join(missing, ", "), server)
	}
	if st.database != nil && st.database.owner != w.role {
		return sharedPlan{}, fmt.Errorf("database %q already exists on %s and is owned by role %q, not by this request's role %q: it is %w; choose another databaseName, or have a platform admin hand it over",
			w.database, server, st.database.owner, w.role, ErrNotOurs)
	}
	if st.role != nil && st.role.comment != w.marker {
		// The role's comment is not quoted: it may name another team's
		// request.
		return sharedPlan{}, fmt.Errorf("role %q already exists on %s and is %w (its comment does not name this request); choose another databaseName",
			w.role, server, ErrNotOurs)
	}
	p := sharedPlan{
		createRole:     st.role == nil,
		grantToAdmin:   !st.adminSuperuser && (st.role == nil || !st.role.adminIsMember),
		createDatabase: st.database == nil,
		// A new database grants CONNECT to PUBLIC.
		revokePublicConnect: st.database == nil || st.database.publicConnect,
	}
	if r := st.role; r != nil {
		for _, a := range []struct {
			have, want bool
			on, off    string
		}{
			{r.canLogin, true, "LOGIN", "NOLOGIN"},
			{r.superuser, false, "SUPERUSER", "NOSUPERUSER"},
			{r.createDB, false, "CREATEDB", "NOCREATEDB"},
			{r.createRole, false, "CREATEROLE", "NOCREATEROLE"},
			{r.replication, false, "REPLICATION", "NOREPLICATION"},
			{r.bypassRLS, false, "BYPASSRLS", "NOBYPASSRLS"},
		} {
			if a.have != a.want {
				p.alterRole = append(p.alterRole, map[bool]string{true: a.on, false: a.off}[a.want])
			}
		}
		if r.connLimit != w.connLimit {
			p.alterRole = append(p.alterRole, "CONNECTION LIMIT "+strconv.Itoa(w.connLimit))
		}
	}
	return p, nil
}

// without returns the items of want not in have, in want's order.
func without(want, have []string) []string {
	var out []string
	for _, x := range want {
		if !slices.Contains(have, x) {
			out = append(out, x)
		}
	}
	return out
}

// roleOptions are the role's attributes, as CREATE ROLE spells them.
func roleOptions(connLimit int) string {
	return "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS INHERIT CONNECTION LIMIT " + strconv.Itoa(connLimit)
}

// ident quotes an identifier.
func ident(name string) string { return pgx.Identifier{name}.Sanitize() }

// undoList holds what a run created, to remove again if the run fails.
type undoList []undoStep

// undoStep removes one thing: with sql, run over a fresh admin
// connection (the run's own may be what failed), or with fn.
type undoStep struct {
	what string
	sql  string
	fn   func(ctx context.Context) error
}

// cleanupTimeout bounds cleaning up after a failed run, which runs even
// when the run failed because its context ended.
const cleanupTimeout = 30 * time.Second

// run undoes the steps, last first, and returns cause with what it
// removed and whatever it could not.
func (u undoList) run(ctx context.Context, srv Server, cause error) error {
	if len(u) == 0 {
		return cause
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	var admin *pgx.Conn
	defer func() {
		if admin != nil {
			_ = admin.Close(ctx)
		}
	}()
	do := func(s undoStep) error {
		if s.fn != nil {
			return s.fn(ctx)
		}
		if admin == nil {
			var err error
			if admin, err = connectAdmin(ctx, srv, srv.Database); err != nil {
				return err
			}
		}
		_, err := admin.Exec(ctx, s.sql)
		return err
	}
	errs := []error{cause}
	var undone []string
	for i := len(u) - 1; i >= 0; i-- {
		if err := do(u[i]); err != nil {
			errs = append(errs, fmt.Errorf("and could not remove %s, which this run created: %w", u[i].what, err))
			continue
		}
		undone = append(undone, u[i].what)
	}
	if len(undone) > 0 {
		errs = append(errs, fmt.Errorf("(this run removed what it had created: %s)", strings.Join(undone, ", ")))
	}
	return errors.Join(errs...)
}

// configureShared provisions the request's database and role on the shared
// server and writes the workload's Secret and ConfigMap. Everything it
// does is idempotent and done only when the server differs from the
// request: a re-run with nothing to do changes nothing on the server and
// writes the same output. A run that fails removes what it created.
func configureShared(ctx context.Context, c *stage.Context, r request) (err error) {
	srv, err := loadServer(ctx, c)
	if err != nil {
		return err
	}
	admin, err := connectAdmin(ctx, srv, srv.Database)
	if err != nil {
		return err
	}
	defer admin.Close(context.WithoutCancel(ctx))
	w := wantedFor(r)
	st, err := gatherShared(ctx, admin, w)
	if err != nil {
		return fmt.Errorf("on the shared server %s: %w", srv, err)
	}
	plan, err := planShared(st, w, srv.String())
	if err != nil {
		return err
	}
	l, issued, err := obtainPassword(ctx, c, r.obj, PlanShared, w.role)
	if err != nil {
		return err
	}
	password := string(issued.Entry.Data[passwordKey])

	var undo undoList
	defer func() {
		if err != nil {
			err = undo.run(ctx, srv, err)
		}
	}()
	if plan.createRole {
		if issued.Decision.Reason == ledger.ReasonFresh {
			// The password was minted for the role this run makes; if
			// the run fails the role goes, the password grants nothing,
			// and the ledger forgets it.
			undo = append(undo, undoStep{what: "the password's ledger entry", fn: func(ctx context.Context) error {
				return l.Delete(ctx, issued.Key)
			}})
		}
		if err := createRole(ctx, admin, w, password); err != nil {
			return fmt.Errorf("on the shared server %s: %w", srv, err)
		}
		undo = append(undo, undoStep{what: "role " + strconv.Quote(w.role), sql: "DROP ROLE IF EXISTS " + ident(w.role)})
	}
	if err := applyShared(ctx, admin, srv, w, plan, &undo); err != nil {
		return fmt.Errorf("on the shared server %s: %w", srv, err)
	}
	if !plan.createRole {
		if err := ensurePassword(ctx, admin, srv, w, issued, password); err != nil {
			return fmt.Errorf("on the shared server %s: %w", srv, err)
		}
	}
	if err := ensureExtensions(ctx, srv, w); err != nil {
		return fmt.Errorf("on the shared server %s: %w", srv, err)
	}
	// Every replaced password (Entry.Retire) was revoked when the role
	// got the current one: a role has one password.
	if err := ledger.SettleIssued(ctx, l, issued); err != nil {
		return err
	}
	issued.Entry.Retire = nil
	conn := connection{
		namespace: r.obj.GetNamespace(), secretName: r.spec.SecretName, request: r.ref(),
		host: srv.WorkloadHost, port: srv.WorkloadPort, database: w.database, user: w.role, password: password,
		sslMode: srv.WorkloadSSLMode, caCert: srv.CACert,
	}
	if err := c.WriteObjects(CredentialsFile, conn.secret()); err != nil {
		return err
	}
	if err := c.WriteObjects(ConnectionFile, conn.configMap()); err != nil {
		return err
	}
	return c.SetStatus(map[string]any{
		"plan": string(PlanShared), "database": w.database, "user": w.role,
		"server": srv.String(), "secretName": r.spec.SecretName,
		"credentials": []ledger.CredentialStatus{issued.Status()},
		"message":     fmt.Sprintf("database %q is ready on %s; the workload's credentials are in Secret %s", w.database, srv, r.spec.SecretName),
	})
}

// createRole creates the role with its password and ownership marker in
// one transaction, so no run leaves a role without its marker.
func createRole(ctx context.Context, admin *pgx.Conn, w wanted, password string) error {
	verifier, err := newVerifier(password)
	if err != nil {
		return err
	}
	pw, err := quoteLiteral(verifier)
	if err != nil {
		return err
	}
	marker, err := quoteLiteral(w.marker)
	if err != nil {
		return err
	}
	err = pgx.BeginFunc(ctx, admin, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "CREATE ROLE "+ident(w.role)+" WITH "+roleOptions(w.connLimit)+" PASSWORD "+pw); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, "COMMENT ON ROLE "+ident(w.role)+" IS "+marker)
		return err
	})
	if err != nil {
		return fmt.Errorf("creating role %q: %w", w.role, err)
	}
	return nil
}

// applyShared carries out the plan's other steps, recording in undo what
// it creates.
func applyShared(ctx context.Context, admin *pgx.Conn, srv Server, w wanted, p sharedPlan, undo *undoList) error {
	if p.grantToAdmin {
		// PostgreSQL lets only a superuser or a member of a role give it
		// a database (and create extensions in it as its owner).
		if _, err := admin.Exec(ctx, "GRANT "+ident(w.role)+" TO CURRENT_USER"); err != nil {
			return fmt.Errorf("making the admin %q a member of role %q: %w", srv.Username, w.role, err)
		}
	}
	if len(p.alterRole) > 0 {
		if _, err := admin.Exec(ctx, "ALTER ROLE "+ident(w.role)+" WITH "+strings.Join(p.alterRole, " ")); err != nil {
			return fmt.Errorf("setting %s on role %q: %w", strings.Join(p.alterRole, " "), w.role, err)
		}
	}
	if p.createDatabase {
		if _, err := admin.Exec(ctx, "CREATE DATABASE "+ident(w.database)+" OWNER "+ident(w.role)); err != nil {
			return fmt.Errorf("creating database %q: %w", w.database, err)
		}
		*undo = append(*undo, undoStep{what: "database " + strconv.Quote(w.database), sql: "DROP DATABASE IF EXISTS " + ident(w.database) + " WITH (FORCE)"})
	}
	if p.revokePublicConnect {
		// Without this any role on the server could connect to it.
		if _, err := admin.Exec(ctx, "REVOKE CONNECT ON DATABASE "+ident(w.database)+" FROM PUBLIC"); err != nil {
			return fmt.Errorf("revoking PUBLIC's CONNECT on database %q: %w", w.database, err)
		}
	}
	return nil
}

// ensurePassword gives the existing role the ledger's password when it may
// not have it: a password minted (or not yet confirmed set) by the ledger,
// or one the server refuses. A settled password the server accepts is
// left alone, so a re-run does not touch the role.
func ensurePassword(ctx context.Context, admin *pgx.Conn, srv Server, w wanted, issued ledger.Issued, password string) error {
	if !issued.Decision.Mint && issued.Entry.Used && len(issued.Entry.Retire) == 0 {
		refused, err := passwordRefused(ctx, srv, w, password)
		if err != nil || !refused {
			return err
		}
	}
	verifier, err := newVerifier(password)
	if err != nil {
		return err
	}
	pw, err := quoteLiteral(verifier)
	if err != nil {
		return err
	}
	if _, err := admin.Exec(ctx, "ALTER ROLE "+ident(w.role)+" WITH PASSWORD "+pw); err != nil {
		return fmt.Errorf("setting role %q's password: %w", w.role, err)
	}
	return nil
}

// passwordRefused logs in as the role, as its workload does, and reports
// whether the server refused the password (someone changed it by hand, or
// the server was restored from a backup). A login that fails for another
// reason (the role's connection limit is reached, pg_hba.conf does not
// let the platform in as that role) proves nothing either way and is not
// an error: the password is left as it is.
func passwordRefused(ctx context.Context, srv Server, w wanted, password string) (bool, error) {
	cfg, err := srv.connConfig(w.role, password, w.database)
	if err != nil {
		return false, err
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err == nil {
		return false, conn.Close(ctx)
	}
	if ctx.Err() != nil {
		return false, ctx.Err()
	}
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "28P01", nil
}

// ensureExtensions creates the wanted extensions the database lacks, over
// an admin connection to that database (extensions are per database).
// Extensions the request no longer lists are left in place: dropping one
// can drop the columns that use its types.
func ensureExtensions(ctx context.Context, srv Server, w wanted) error {
	if len(w.extensions) == 0 {
		return nil
	}
	conn, err := connectAdmin(ctx, srv, w.database)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	rows, err := conn.Query(ctx, `SELECT extname FROM pg_extension WHERE extname = ANY($1)`, w.extensions)
	if err != nil {
		return fmt.Errorf("reading the extensions of database %q: %w", w.database, err)
	}
	have, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("reading the extensions of database %q: %w", w.database, err)
	}
	for _, e := range without(w.extensions, have) {
		if _, err := conn.Exec(ctx, "CREATE EXTENSION IF NOT EXISTS "+ident(e)); err != nil {
			return fmt.Errorf("creating extension %q in database %q: %w", e, w.database, err)
		}
	}
	return nil
}
