package up

import (
	"context"
	"fmt"
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
	srv, err := pgtest.Start(p.path("postgres"))
	if err != nil {
		return fmt.Errorf("starting PostgreSQL: %w", err)
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
	sec := &corev1.Secret{}
	deadline := time.Now().Add(20 * time.Second)
	for {
		err = c.Get(ctx, client.ObjectKey{Namespace: r.namespace, Name: secretName}, sec)
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	if err != nil {
		return fmt.Sprintf("Secret %s/%s not delivered on %s: %v", r.namespace, secretName, r.destinations[0], err)
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(cctx, string(sec.Data[database.KeyURI]))
	if err != nil {
		return "connecting with the delivered credentials failed: " + redact(err.Error(), sec.Data)
	}
	defer conn.Close(cctx)
	var user, db string
	if err := conn.QueryRow(cctx, "select current_user, current_database()").Scan(&user, &db); err != nil {
		return "querying failed: " + redact(err.Error(), sec.Data)
	}
	if _, err := conn.Exec(cctx, "create table if not exists promised_up_check (id int)"); err != nil {
		return "creating a table failed: " + redact(err.Error(), sec.Data)
	}
	return fmt.Sprintf("connected to database %s as %s with the delivered credentials and created a table", db, user)
}

// redact keeps a Secret's values out of a message.
func redact(msg string, data map[string][]byte) string {
	for _, v := range data {
		if len(v) >= 4 {
			msg = strings.ReplaceAll(msg, string(v), "<redacted>")
		}
	}
	return msg
}
