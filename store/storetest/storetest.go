// Package storetest gives tests a fresh, real database: a SQLite file in a
// temporary directory, or a new PostgreSQL database created for the test
// (and dropped after it) on the server named by TEST_POSTGRES_DSN.
package storetest

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"net/url"
	"os"
	"path/filepath"
	"testing"

	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx", to create test databases

	"github.com/membership-api/controlplane/store"
)

// PostgresEnv names the environment variable holding the PostgreSQL DSN the
// tests create their databases on (the Makefile sets it to the local server).
const PostgresEnv = "TEST_POSTGRES_DSN"

// PoolSize is a test store's connection pool unless the test sets
// store.Options.MaxOpenConns: the packages' tests run side by side and in
// parallel, and at the default 32 per store their PostgreSQL pools together
// went past a stock server's 100 connections. Eight still let concurrent
// writes race in the database.
const PoolSize = 8

// Dialects are the databases every store and end-to-end test runs against.
var Dialects = []string{"sqlite", "postgres"}

// DSN returns the DSN of a fresh, empty database of the given dialect. For
// PostgreSQL it skips the test, saying why, when TEST_POSTGRES_DSN is unset.
func DSN(tb testing.TB, dialect string) string {
	tb.Helper()
	switch dialect {
	case "sqlite":
		return filepath.Join(tb.TempDir(), "controlplane.db")
	case "postgres":
		return freshPostgres(tb)
	}
	tb.Fatalf("unknown dialect %q", dialect)
	return ""
}

// Open opens and migrates a fresh store of the given dialect, closed at cleanup.
func Open(tb testing.TB, dialect string, opts store.Options) *store.Store {
	tb.Helper()
	return OpenDSN(tb, DSN(tb, dialect), opts)
}

// OpenDSN opens and migrates the store at dsn, closed at cleanup.
func OpenDSN(tb testing.TB, dsn string, opts store.Options) *store.Store {
	tb.Helper()
	if opts.MaxOpenConns == 0 {
		opts.MaxOpenConns = PoolSize
	}
	st, err := store.Open(context.Background(), dsn, opts)
	if err != nil {
		tb.Fatalf("open store: %v", err)
	}
	tb.Cleanup(func() {
		// Logged, not failed: some tests close the store themselves.
		if err := st.Close(); err != nil {
			tb.Logf("close store: %v", err)
		}
	})
	track(tb, st, dsn, opts.Now)
	if err := st.Migrate(context.Background()); err != nil {
		tb.Fatalf("migrate: %v", err)
	}
	return st
}

func freshPostgres(tb testing.TB) string {
	tb.Helper()
	base := os.Getenv(PostgresEnv)
	if base == "" {
		tb.Skipf("PostgreSQL tests skipped: %s is not set (make test sets it to postgres://postgres@127.0.0.1:5432/test)", PostgresEnv)
	}
	admin, err := sql.Open("pgx", base)
	if err != nil {
		tb.Fatalf("%s: %v", PostgresEnv, err)
	}
	defer admin.Close() //nolint:errcheck // a pool used for two statements; its close fails only if already closed
	if err := admin.PingContext(context.Background()); err != nil {
		tb.Fatalf("PostgreSQL at %s unreachable: %v (start it, or unset %s to skip these tests)", store.RedactDSN(base), err, PostgresEnv)
	}
	suffix := make([]byte, 6)
	rand.Read(suffix)
	name := "cp_test_" + hex.EncodeToString(suffix)
	if _, err := admin.ExecContext(context.Background(), "CREATE DATABASE "+name); err != nil {
		tb.Fatalf("create test database: %v", err)
	}
	tb.Cleanup(func() {
		admin, err := sql.Open("pgx", base)
		if err != nil {
			return
		}
		defer admin.Close() //nolint:errcheck // a pool used for one statement; its close fails only if already closed
		if _, err := admin.ExecContext(context.Background(), "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			tb.Logf("drop test database %s (left behind): %v", name, err)
		}
	})
	u, err := url.Parse(base)
	if err != nil {
		tb.Fatalf("%s is not a URL: %v", PostgresEnv, err)
	}
	u.Path = "/" + name
	return u.String()
}
