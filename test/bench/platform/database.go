package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"promised.dev/promised/api/v1alpha1"
	"promised.dev/promised/promises/database"
	"promised.dev/promised/promises/database/pgtest"
)

const databaseDir = "promises/database"

// databaseWorkload requests databases: the dedicated plan (a CloudNativePG
// cluster rendered per request, nothing external), and, when PostgreSQL's
// binaries are on this machine, a subset on the shared plan against a real
// throwaway server (a database and a role created per request).
func databaseWorkload(o options) *workload {
	if _, err := os.Stat(filepath.Join(o.root, databaseDir, "promise.yaml")); err != nil {
		return nil
	}
	w := &workload{name: "database", dirs: []string{databaseDir}}
	var dedicated, shared []*unstructured.Unstructured
	var pg *pgtest.Server
	sharedCount := 0
	w.setup = func(ctx context.Context, p *platform) error {
		ex, err := examples(o.root, databaseDir)
		if err != nil {
			return err
		}
		for _, u := range ex {
			switch plan, _, _ := unstructured.NestedString(u.Object, "spec", "plan"); plan {
			case "dedicated":
				dedicated = append(dedicated, u)
			case "shared", "":
				shared = append(shared, u)
			}
		}
		if len(dedicated) == 0 {
			dedicated = []*unstructured.Unstructured{{Object: map[string]any{
				"apiVersion": "data.promised.dev/v1alpha1", "kind": "Database",
				"spec": map[string]any{"plan": "dedicated", "databaseName": "app", "secretName": "app-db",
					"dedicated": map[string]any{"instances": int64(2), "storage": "20Gi"}},
			}}}
		}
		if len(shared) == 0 {
			shared = []*unstructured.Unstructured{{Object: map[string]any{
				"apiVersion": dedicated[0].GetAPIVersion(), "kind": dedicated[0].GetKind(),
				"spec": map[string]any{"plan": "shared", "databaseName": "app", "secretName": "app-db"},
			}}}
		}
		if _, err := os.Stat(filepath.Join(o.root, databaseDir, "pgtest")); err != nil || o.sharedDatabases == 0 {
			w.note = "dedicated plan only"
			return nil
		}
		if _, err := pgtest.BinDir(); err != nil {
			w.note = "dedicated plan only: " + err.Error()
			return nil
		}
		pg, err = pgtest.Start(filepath.Join(p.Work, "postgres"))
		if err != nil {
			return fmt.Errorf("starting PostgreSQL for the shared plan: %w", err)
		}
		srv := database.Server{Host: pg.Host, Port: pg.Port, Username: pg.User, Password: pg.Password, Database: "postgres", SSLMode: "disable"}
		data := map[string]string{}
		for k, v := range srv.Data() {
			data[k] = string(v)
		}
		return p.platformSecret(ctx, "postgres-shared", data)
	}
	w.close = func() {
		if pg != nil {
			_ = pg.Stop()
		}
	}
	w.allocate = func(n int) {
		if pg != nil {
			sharedCount = min(o.sharedDatabases, n/2)
			w.note = fmt.Sprintf("%d on the shared plan (a real PostgreSQL), the rest dedicated", sharedCount)
		}
	}
	w.request = func(i int, ns string) (*unstructured.Unstructured, error) {
		name := fmt.Sprintf("db-%05d", i)
		var u *unstructured.Unstructured
		if i < sharedCount {
			u = fromExample(shared, i, name, ns)
		} else {
			u = fromExample(dedicated, i, name, ns)
		}
		// One database and role per request on the shared server.
		if err := unstructured.SetNestedField(u.Object, fmt.Sprintf("app_%05d", i), "spec", "databaseName"); err != nil {
			return nil, err
		}
		return u, unstructured.SetNestedField(u.Object, name, "spec", "secretName")
	}
	// The platform moves dedicated clusters to its own mirror of the
	// PostgreSQL image: every dedicated cluster's manifest changes.
	w.change = func(ctx context.Context, p *platform) (string, error) {
		err := updatePromise(ctx, p, "database", func(pr *v1alpha1.Promise) error {
			return setContainerEnv(pr, "database", database.EnvDedicatedImage, "registry.example.com/mirror/cloudnative-pg/postgresql")
		})
		return "database: " + database.EnvDedicatedImage + " to a mirror (every dedicated cluster; shared databases unchanged)", err
	}
	w.affected = func(u *unstructured.Unstructured) bool {
		plan, _, _ := unstructured.NestedString(u.Object, "spec", "plan")
		return plan == "dedicated"
	}
	return w
}
