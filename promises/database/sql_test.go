package database_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"promised.dev/promised/promises/database"
)

// TestQuoteLiteralMatchesPostgreSQL checks the one piece of SQL quoting
// done here against the server's own quote_literal.
func TestQuoteLiteralMatchesPostgreSQL(t *testing.T) {
	ctx := context.Background()
	conn, err := database.SharedServer().Connect(ctx, "postgres")
	require.NoError(t, err)
	defer conn.Close(ctx)
	for _, s := range []string{
		"", "plain", "it's", "''", `back\slash`, `\'`, `'; DROP ROLE x; --`, "new\nline", "tab\there", "ünïcödé", "$$", `E'x'`,
		"SCRAM-SHA-256$4096:c2FsdA==$c3RvcmVk:c2VydmVy",
	} {
		got, err := database.QuoteLiteral(s)
		require.NoError(t, err)
		var want, roundTrip string
		require.NoError(t, conn.QueryRow(ctx, "SELECT quote_literal($1::text)", s).Scan(&want))
		require.Equal(t, want, got, "quoting %q", s)
		require.NoError(t, conn.QueryRow(ctx, "SELECT "+got).Scan(&roundTrip))
		require.Equal(t, s, roundTrip)
	}
	_, err = database.QuoteLiteral("nul\x00byte")
	require.Error(t, err)
}

// TestScramVerifierLogsIn: a role given the verifier (never the password)
// logs in with the password, and not with another.
func TestScramVerifierLogsIn(t *testing.T) {
	ctx := context.Background()
	srv := database.SharedServer()
	conn, err := srv.Connect(ctx, "postgres")
	require.NoError(t, err)
	defer conn.Close(ctx)
	v, err := database.ScramVerifier("Zq-3_sample-password", []byte("0123456789abcdef"), 4096)
	require.NoError(t, err)
	lit, err := database.QuoteLiteral(v)
	require.NoError(t, err)
	_, err = conn.Exec(ctx, "CREATE ROLE scram_check LOGIN PASSWORD "+lit)
	require.NoError(t, err)
	t.Cleanup(func() { _, _ = conn.Exec(context.Background(), "DROP ROLE scram_check") })
	var stored string
	require.NoError(t, conn.QueryRow(ctx, "SELECT rolpassword FROM pg_authid WHERE rolname = 'scram_check'").Scan(&stored))
	require.Equal(t, v, stored, "PostgreSQL keeps a verifier it is given as is")

	c, err := srv.ConnectAs(ctx, "scram_check", "Zq-3_sample-password", "postgres")
	require.NoError(t, err)
	require.NoError(t, c.Close(ctx))
	_, err = srv.ConnectAs(ctx, "scram_check", "Zq-3_sample-passworD", "postgres")
	require.ErrorContains(t, err, "28P01")

	_, err = database.ScramVerifier("pässword", []byte("salt"), 4096)
	require.Error(t, err, "non-ASCII passwords would need SASLprep")
}
