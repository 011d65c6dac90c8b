package database

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"promised.dev/promised/pipelines/ledger"
	"promised.dev/promised/pipelines/stage"
)

// Delete is the delete stage. With deletionPolicy Retain it leaves the
// database alone: the controller removes the workload's Secret and
// ConfigMap with the rest of the request's output. With Delete it drops a
// shared database and its role (ending their sessions first), or leaves a
// dedicated cluster to the destination's pruning. It fails, saying why,
// when the database cannot be dropped; the controller then keeps the
// request's finalizer and retries.
func Delete(ctx context.Context, c *stage.Context) error {
	// The spec is not validated as a whole: a request that would no
	// longer pass (an extension left the allow-list) must still go.
	r, err := readRequestUnchecked(c)
	if err != nil {
		return err
	}
	if r.spec.Plan != PlanShared && r.spec.Plan != PlanDedicated {
		return fmt.Errorf("Database %s: spec.plan %q: want %s or %s", r.ref(), r.spec.Plan, PlanShared, PlanDedicated)
	}
	if r.spec.DeletionPolicy != DeletionRetain && r.spec.DeletionPolicy != DeletionDelete {
		return fmt.Errorf("Database %s: spec.deletionPolicy %q: want %s or %s", r.ref(), r.spec.DeletionPolicy, DeletionRetain, DeletionDelete)
	}
	var msg string
	switch {
	case r.spec.Plan == PlanShared && ValidateIdentifier(r.spec.DatabaseName) != nil:
		// The configure stage refuses such a name before touching the
		// server, so there is nothing of this request's to keep or drop.
		msg = fmt.Sprintf("databaseName %q was never valid, so no database was made for this request", r.spec.DatabaseName)
	case r.spec.DeletionPolicy == DeletionRetain && r.spec.Plan == PlanDedicated:
		msg = fmt.Sprintf("deletionPolicy Retain: CloudNativePG cluster %s and its volumes stay on the destination (its manifests are marked not to be pruned); delete them there when the data is no longer needed", r.obj.GetName())
	case r.spec.DeletionPolicy == DeletionRetain:
		msg = fmt.Sprintf("deletionPolicy Retain: database %q and its role stay on the shared server; only the workload's Secret and ConfigMap are removed", r.spec.DatabaseName)
	case r.spec.Plan == PlanDedicated:
		msg = fmt.Sprintf("deletionPolicy Delete: CloudNativePG cluster %s and its volumes are deleted when the destination prunes the removed manifests", r.obj.GetName())
	default:
		if msg, err = dropShared(ctx, c, r); err != nil {
			return err
		}
	}
	if r.spec.DeletionPolicy == DeletionDelete {
		if err := forgetCredentials(ctx, c, r); err != nil {
			return err
		}
	}
	return c.SetStatus(map[string]any{"message": msg})
}

// dropShared drops the request's database and role from the shared server.
// What exists there but was not made for this request is left alone: a
// request that never got its database (its name was taken) must still be
// deletable, and must not take someone else's database with it.
func dropShared(ctx context.Context, c *stage.Context, r request) (string, error) {
	srv, err := loadServer(ctx, c)
	if err != nil {
		return "", fmt.Errorf("deletionPolicy Delete: %w", err)
	}
	admin, err := connectAdmin(ctx, srv, srv.Database)
	if err != nil {
		return "", fmt.Errorf("deletionPolicy Delete: cannot drop database %q: %w", r.spec.DatabaseName, err)
	}
	defer admin.Close(context.WithoutCancel(ctx))
	w := wanted{role: r.spec.DatabaseName, database: r.spec.DatabaseName, marker: r.marker()}
	st, err := gatherShared(ctx, admin, w)
	if err != nil {
		return "", fmt.Errorf("deletionPolicy Delete: on the shared server %s: %w", srv, err)
	}
	roleOurs := st.role != nil && st.role.comment == w.marker
	dbOurs := st.database != nil && st.database.owner == w.role && roleOurs
	var done, left []string
	if dbOurs {
		if err := dropDatabase(ctx, admin, w, st.role.canLogin); err != nil {
			return "", fmt.Errorf("deletionPolicy Delete: on the shared server %s: %w", srv, err)
		}
		done = append(done, fmt.Sprintf("database %q", w.database))
	} else if st.database != nil {
		left = append(left, fmt.Sprintf("database %q (owned by %q)", w.database, st.database.owner))
	}
	if roleOurs {
		if err := dropRole(ctx, admin, w); err != nil {
			return "", fmt.Errorf("deletionPolicy Delete: on the shared server %s: %w", srv, err)
		}
		done = append(done, fmt.Sprintf("role %q", w.role))
	} else if st.role != nil {
		left = append(left, fmt.Sprintf("role %q", w.role))
	}
	msg := "deletionPolicy Delete: "
	switch {
	case len(done) > 0:
		msg += strings.Join(done, " and ") + " dropped from " + srv.String()
	default:
		msg += fmt.Sprintf("database %q was not on %s; nothing to drop", w.database, srv)
	}
	if len(left) > 0 {
		msg += "; " + strings.Join(left, " and ") + " left alone: not made for this request"
	}
	return msg, nil
}

// dropDatabase ends the database's sessions and drops it. The role loses
// LOGIN first so that a workload reconnecting in a loop cannot slip in
// between.
func dropDatabase(ctx context.Context, admin *pgx.Conn, w wanted, canLogin bool) error {
	if canLogin {
		if _, err := admin.Exec(ctx, "ALTER ROLE "+ident(w.role)+" WITH NOLOGIN"); err != nil {
			return fmt.Errorf("stopping new logins of role %q: %w", w.role, withDetail(err))
		}
	}
	if _, err := admin.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()`, w.database); err != nil {
		return fmt.Errorf("ending the sessions of database %q: %w", w.database, withDetail(err))
	}
	// FORCE ends any session that connected since, in the same step.
	if _, err := admin.Exec(ctx, "DROP DATABASE IF EXISTS "+ident(w.database)+" WITH (FORCE)"); err != nil {
		return fmt.Errorf("dropping database %q: %w", w.database, withDetail(err))
	}
	return nil
}

// dropRole ends the role's remaining sessions (in other databases) and
// drops it. It fails, saying what depends on the role, when the role
// owns or was granted something outside its database.
func dropRole(ctx context.Context, admin *pgx.Conn, w wanted) error {
	if _, err := admin.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1 AND pid <> pg_backend_pid()`, w.role); err != nil {
		return fmt.Errorf("ending the sessions of role %q: %w", w.role, withDetail(err))
	}
	if _, err := admin.Exec(ctx, "DROP ROLE IF EXISTS "+ident(w.role)); err != nil {
		return fmt.Errorf("dropping role %q: %w", w.role, withDetail(err))
	}
	return nil
}

// withDetail adds PostgreSQL's DETAIL (which objects depend on a role) to
// an error, whose own text leaves it out.
func withDetail(err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Detail != "" {
		return fmt.Errorf("%w (%s)", err, pgErr.Detail)
	}
	return err
}

// forgetCredentials removes the request's ledger entries once its
// database is gone. The controller's ledger would garbage-collect them
// with the request anyway; a local run's folder ledger would not.
func forgetCredentials(ctx context.Context, c *stage.Context, r request) error {
	l, err := c.Ledger()
	if errors.Is(err, stage.ErrNoLedger) {
		// No ledger here: nothing was recorded to forget.
		return nil
	}
	if err != nil {
		return err
	}
	keys, err := l.List(ctx, ledger.OwnerFromObject(c.Env.PromiseName, r.obj))
	if err != nil {
		return fmt.Errorf("listing the request's credentials: %w", err)
	}
	for _, k := range keys {
		if err := l.Delete(ctx, k); err != nil {
			return fmt.Errorf("forgetting %s: %w", k, err)
		}
	}
	return nil
}
