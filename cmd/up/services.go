package up

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"promised.dev/promised/pipelines/stage"
	"promised.dev/promised/promises/database"
	"promised.dev/promised/promises/database/pgtest"
)

// startPostgres runs the shared PostgreSQL server the Database promise's
// shared plan provisions on, and registers it as platform configuration.
// Without the PostgreSQL binaries the Database example is left out.
func (p *Platform) startPostgres(ctx context.Context) error {
	if _, err := pgtest.BinDir(); err != nil {
		p.say("PostgreSQL binaries not found (%v): the Database example is left out", err)
		return nil
	}
	// The same port on every start: the address is part of each database's
	// delivered connection, and a new one would re-write them all.
	port := 0
	if b, err := os.ReadFile(p.path("postgres.port")); err == nil {
		port, _ = strconv.Atoi(strings.TrimSpace(string(b)))
	}
	srv, err := pgtest.StartWith(p.path("postgres"), pgtest.Options{Port: port})
	if err != nil && port != 0 {
		p.say("PostgreSQL could not reuse port %d (%v); taking a new one", port, err)
		srv, err = pgtest.Start(p.path("postgres"))
	}
	if err != nil {
		// The rest of the platform is still worth having: say why the
		// Database example is left out and carry on.
		p.say("PostgreSQL did not start (%v): the Database example is left out", err)
		return nil
	}
	if err := os.WriteFile(p.path("postgres.port"), []byte(strconv.Itoa(srv.Port)+"\n"), 0o600); err != nil {
		return fmt.Errorf("recording the PostgreSQL port: %w", err)
	}
	p.stop = append(p.stop, func() { _ = srv.Stop() })
	p.postgres = srv
	cfg := database.Server{Host: srv.Host, Port: srv.Port, Username: srv.User, Password: srv.Password, SSLMode: "disable"}
	sec := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "postgres-shared", Namespace: platformNamespace, Labels: map[string]string{stage.LabelPlatformConfig: "true"}},
		Data:       cfg.Data(),
	}
	if err := apply(ctx, p.client, sec); err != nil {
		return err
	}
	p.say("PostgreSQL for shared databases at %s:%d", srv.Host, srv.Port)
	return nil
}

// checkDatabase connects to a Database request's database with the
// credentials its workload cluster received.
func (p *Platform) checkDatabase(ctx context.Context, r row) string {
	req := &unstructured.Unstructured{}
	req.SetAPIVersion("database.promised.dev/v1")
	req.SetKind("Database")
	if err := p.client.Get(ctx, client.ObjectKey{Namespace: r.namespace, Name: r.name}, req); err != nil {
		return "cannot read the request: " + err.Error()
	}
	secretName, _, _ := unstructured.NestedString(req.Object, "spec", "secretName")
	if len(r.destinations) == 0 {
		return "not placed"
	}
	c, err := p.workloadClient(r.destinations[0])
	if err != nil {
		return err.Error()
	}
	// The workload's Secret follows Git a sync and an unseal behind the
	// commit: give it a few rounds to catch up.
	deadline := time.Now().Add(30 * time.Second)
	for {
		msg, ok := tryDatabase(ctx, c, r.namespace, secretName, r.destinations[0])
		if ok || time.Now().After(deadline) {
			return msg
		}
		time.Sleep(time.Second)
	}
}

func tryDatabase(ctx context.Context, c client.Client, namespace, secretName, dest string) (string, bool) {
	sec := &corev1.Secret{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: secretName}, sec); err != nil {
		return fmt.Sprintf("Secret %s/%s not delivered on %s: %v", namespace, secretName, dest, err), false
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(cctx, string(sec.Data[database.KeyURI]))
	if err != nil {
		return "connecting with the delivered credentials failed: " + redact(err.Error(), sec.Data), false
	}
	defer conn.Close(cctx)
	var user, db string
	if err := conn.QueryRow(cctx, "select current_user, current_database()").Scan(&user, &db); err != nil {
		return "querying failed: " + redact(err.Error(), sec.Data), false
	}
	if _, err := conn.Exec(cctx, "create table if not exists promised_up_check (id int)"); err != nil {
		return "creating a table failed: " + redact(err.Error(), sec.Data), false
	}
	return fmt.Sprintf("connected to database %s as %s with the delivered credentials and created a table", db, user), true
}

// redact keeps the password (alone or inside the URI) out of a message.
func redact(msg string, data map[string][]byte) string {
	for _, k := range []string{database.KeyPassword, database.KeyURI} {
		if v := data[k]; len(v) > 0 {
			msg = strings.ReplaceAll(msg, string(v), "<redacted>")
		}
	}
	return msg
}
