package pgtest_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"

	"promised.dev/promised/promises/database/pgtest"
)

func TestServerAuthenticatesWithPasswords(t *testing.T) {
	ctx := context.Background()
	s := pgtest.New(t)
	conn, err := s.Connect(ctx, "postgres")
	require.NoError(t, err)
	defer conn.Close(ctx)
	var v string
	require.NoError(t, conn.QueryRow(ctx, "SHOW server_version").Scan(&v))
	require.NotEmpty(t, v)

	// A wrong password is refused: tests of rotated passwords rely on it.
	_, err = s.ConnectAs(ctx, s.User, "wrong", "postgres")
	var pgErr *pgconn.PgError
	require.True(t, errors.As(err, &pgErr), "%v", err)
	require.Equal(t, "28P01", pgErr.Code)
}

func TestRestartKeepsTheCluster(t *testing.T) {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "pgtest-restart-")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(dir) })

	s, err := pgtest.Start(dir)
	require.NoError(t, err)
	conn, err := s.Connect(ctx, "postgres")
	require.NoError(t, err)
	_, err = conn.Exec(ctx, "CREATE DATABASE kept")
	require.NoError(t, err)
	require.NoError(t, conn.Close(ctx))
	require.NoError(t, s.Stop())
	require.NoError(t, s.Stop(), "Stop is idempotent")

	s2, err := pgtest.Start(dir)
	require.NoError(t, err)
	t.Cleanup(func() { _ = s2.Stop() })
	require.Equal(t, s.Password, s2.Password)
	conn, err = s2.Connect(ctx, "kept")
	require.NoError(t, err)
	require.NoError(t, conn.Close(ctx))
}

func TestUnreachableFolderIsExplained(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Log("only root hands the folder to another user; nothing to check as this user")
		return
	}
	parent := t.TempDir() // 0700, root's: the postgres user cannot search it
	_, err := pgtest.Start(filepath.Join(parent, "pg"))
	require.Error(t, err)
	require.Contains(t, err.Error(), "not searchable")
}

func TestMissingBinariesSayWhatToInstall(t *testing.T) {
	t.Setenv(pgtest.EnvBinDir, t.TempDir())
	_, err := pgtest.Start(t.TempDir())
	require.ErrorIs(t, err, pgtest.ErrBinariesMissing)
	require.Contains(t, err.Error(), "apt-get install -y postgresql")
}
