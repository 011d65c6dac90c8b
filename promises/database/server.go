package database

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"promised.dev/promised/pipelines/stage"
)

// EnvServerSecret names the pipeline variable (set in promise.yaml) that
// says which platform Secret, as namespace/name, holds the shared server's
// admin connection. The Secret must carry the label
// promised.dev/platform-config=true, or stages may not read it.
const EnvServerSecret = "DATABASE_SERVERS_SECRET"

// Keys of the shared server's platform Secret. Only host, username and
// password are required.
const (
	// ServerKeyHost is the server's host name or address, as the platform
	// (the controller) reaches it.
	ServerKeyHost = "host"
	// ServerKeyPort is its port; 5432 when absent.
	ServerKeyPort = "port"
	// ServerKeyUsername and ServerKeyPassword are the admin role's
	// credentials. The role must be a superuser, or hold CREATEROLE and
	// CREATEDB (it is then made a member of every role it creates, which
	// PostgreSQL requires to give that role a database).
	ServerKeyUsername = "username"
	ServerKeyPassword = "password"
	// ServerKeyDatabase is the database the admin connects to for
	// server-wide work; "postgres" when absent.
	ServerKeyDatabase = "database"
	// ServerKeySSLMode is libpq's sslmode for the admin connection:
	// disable, allow, prefer, require, verify-ca or verify-full (the
	// default).
	ServerKeySSLMode = "sslmode"
	// ServerKeyCACert is the PEM certificate authority that verify-ca and
	// verify-full check the server against; the system's roots when absent.
	// It is copied to the workload's ConfigMap.
	ServerKeyCACert = "ca.crt"
	// ServerKeyWorkloadHost, ServerKeyWorkloadPort and
	// ServerKeyWorkloadSSLMode are what workloads use, when it differs from
	// what the platform uses (a cluster-internal Service name, say);
	// host, port and sslmode when absent.
	ServerKeyWorkloadHost    = "workloadHost"
	ServerKeyWorkloadPort    = "workloadPort"
	ServerKeyWorkloadSSLMode = "workloadSSLMode"
)

// Server is the shared server's admin connection, read from its platform
// Secret. Its String and GoString never show the password.
type Server struct {
	Host     string
	Port     int
	Username string
	Password string
	// Database is the maintenance database the admin connects to.
	Database string
	SSLMode  string
	CACert   []byte
	// WorkloadHost, WorkloadPort and WorkloadSSLMode are what the
	// workload's Secret names.
	WorkloadHost    string
	WorkloadPort    int
	WorkloadSSLMode string
}

// String names the server for messages: host and port, never credentials.
func (s Server) String() string { return net.JoinHostPort(s.Host, strconv.Itoa(s.Port)) }

// GoString keeps %#v from printing the password.
func (s Server) GoString() string { return "database.Server{" + s.String() + "}" }

var sslModes = []string{"disable", "allow", "prefer", "require", "verify-ca", "verify-full"}

// ParseServer reads a shared server's platform Secret data. Errors name
// keys, never values.
func ParseServer(data map[string][]byte) (Server, error) {
	get := func(k string) string { return strings.TrimSpace(string(data[k])) }
	s := Server{
		Host: get(ServerKeyHost), Username: get(ServerKeyUsername), Password: string(data[ServerKeyPassword]),
		Database: get(ServerKeyDatabase), SSLMode: get(ServerKeySSLMode), CACert: data[ServerKeyCACert],
		WorkloadHost: get(ServerKeyWorkloadHost), WorkloadSSLMode: get(ServerKeyWorkloadSSLMode),
	}
	var errs []error
	for _, k := range []string{ServerKeyHost, ServerKeyUsername, ServerKeyPassword} {
		if len(data[k]) == 0 {
			errs = append(errs, fmt.Errorf("key %q is missing or empty", k))
		}
	}
	port := func(key string, def int) int {
		v := get(key)
		if v == "" {
			return def
		}
		p, err := strconv.Atoi(v)
		if err != nil || p < 1 || p > 65535 {
			errs = append(errs, fmt.Errorf("key %q: %q is not a port", key, v))
		}
		return p
	}
	s.Port = port(ServerKeyPort, 5432)
	s.WorkloadPort = port(ServerKeyWorkloadPort, s.Port)
	if s.Database == "" {
		s.Database = "postgres"
	}
	if s.SSLMode == "" {
		s.SSLMode = "verify-full"
	}
	if s.WorkloadHost == "" {
		s.WorkloadHost = s.Host
	}
	if s.WorkloadSSLMode == "" {
		s.WorkloadSSLMode = s.SSLMode
	}
	for _, kv := range [][2]string{{ServerKeySSLMode, s.SSLMode}, {ServerKeyWorkloadSSLMode, s.WorkloadSSLMode}} {
		if !slices.Contains(sslModes, kv[1]) {
			errs = append(errs, fmt.Errorf("key %q: %q, want one of %s", kv[0], kv[1], strings.Join(sslModes, ", ")))
		}
	}
	if len(s.CACert) > 0 && !x509.NewCertPool().AppendCertsFromPEM(s.CACert) {
		errs = append(errs, fmt.Errorf("key %q holds no PEM certificate", ServerKeyCACert))
	}
	if len(errs) > 0 {
		return Server{}, errors.Join(errs...)
	}
	return s, nil
}

// Data returns the Secret data ParseServer reads back as s: what the
// platform (or `promised up`, or a test) puts in the shared server's
// platform Secret.
func (s Server) Data() map[string][]byte {
	d := map[string][]byte{
		ServerKeyHost: []byte(s.Host), ServerKeyUsername: []byte(s.Username), ServerKeyPassword: []byte(s.Password),
	}
	set := func(k, v string) {
		if v != "" {
			d[k] = []byte(v)
		}
	}
	if s.Port != 0 {
		set(ServerKeyPort, strconv.Itoa(s.Port))
	}
	set(ServerKeyDatabase, s.Database)
	set(ServerKeySSLMode, s.SSLMode)
	if len(s.CACert) > 0 {
		d[ServerKeyCACert] = s.CACert
	}
	set(ServerKeyWorkloadHost, s.WorkloadHost)
	if s.WorkloadPort != 0 {
		set(ServerKeyWorkloadPort, strconv.Itoa(s.WorkloadPort))
	}
	set(ServerKeyWorkloadSSLMode, s.WorkloadSSLMode)
	return d
}

// serverRef parses EnvServerSecret's value.
func serverRef(getenv func(string) string) (namespace, name string, err error) {
	v := strings.TrimSpace(getenv(EnvServerSecret))
	if v == "" {
		return "", "", fmt.Errorf("the pipeline sets no %s: the promise must name the platform Secret of its shared PostgreSQL server (namespace/name)", EnvServerSecret)
	}
	namespace, name, ok := strings.Cut(v, "/")
	if !ok || namespace == "" || name == "" || strings.Contains(name, "/") {
		return "", "", fmt.Errorf("%s is %q: want namespace/name", EnvServerSecret, v)
	}
	return namespace, name, nil
}

// loadServer reads the shared server's admin connection from its platform
// Secret.
func loadServer(ctx context.Context, c *stage.Context) (Server, error) {
	namespace, name, err := serverRef(c.Getenv)
	if err != nil {
		return Server{}, err
	}
	secrets, err := c.Secrets()
	if err != nil {
		return Server{}, fmt.Errorf("reading the shared server's Secret %s/%s: %w", namespace, name, err)
	}
	data, err := secrets.Get(ctx, namespace, name)
	if err != nil {
		return Server{}, fmt.Errorf("reading the shared server's Secret: %w", err)
	}
	s, err := ParseServer(data)
	if err != nil {
		return Server{}, fmt.Errorf("the shared server's Secret %s/%s: %w", namespace, name, err)
	}
	return s, nil
}

// connectTimeout bounds one connection attempt, so an unreachable server
// fails a run in seconds rather than at the pipeline's timeout.
const connectTimeout = 10 * time.Second

// connConfig is the connection to database on s as user with password.
// The password is set after parsing: pgx's parser quotes the connection
// string in its errors and only redacts passwords on a best-effort basis.
func (s Server) connConfig(user, password, database string) (*pgx.ConnConfig, error) {
	cs := fmt.Sprintf("host=%s port=%d user=%s dbname=%s sslmode=%s application_name=promised-database",
		quoteConnValue(s.Host), s.Port, quoteConnValue(user), quoteConnValue(database), s.SSLMode)
	cfg, err := pgx.ParseConfig(cs)
	if err != nil {
		return nil, fmt.Errorf("connection settings for %s: %w", s, err)
	}
	cfg.Password = password
	cfg.ConnectTimeout = connectTimeout
	if len(s.CACert) > 0 {
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(s.CACert)
		// pgx's verify-ca check reads RootCAs from this same tls.Config
		// when the handshake runs, so setting it here is enough for both
		// verify modes.
		if cfg.TLSConfig != nil {
			cfg.TLSConfig.RootCAs = pool
		}
		for _, fb := range cfg.Fallbacks {
			if fb.TLSConfig != nil {
				fb.TLSConfig.RootCAs = pool
			}
		}
	}
	return cfg, nil
}

// quoteConnValue quotes a keyword/value connection string value as libpq
// reads it.
func quoteConnValue(v string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(v) + "'"
}

// connectAdmin connects to database on s as its admin.
func connectAdmin(ctx context.Context, s Server, database string) (*pgx.Conn, error) {
	cfg, err := s.connConfig(s.Username, s.Password, database)
	if err != nil {
		return nil, err
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connecting to the shared PostgreSQL server %s as %q: %w", s, s.Username, err)
	}
	return conn, nil
}
