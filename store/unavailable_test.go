package store_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/libtnb/sqlite"

	"github.com/membership-api/controlplane/store"
)

// wantCause checks that err is classified as an outage of cause ("": not
// one), and that it then matches store.ErrUnavailable.
func wantCause(t *testing.T, what string, err error, cause string) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: no error", what)
	}
	u := store.Unavailable(err)
	switch {
	case cause == "" && u != nil:
		t.Errorf("%s: %v classified as an outage (%s), want not one", what, err, u.Cause)
	case cause != "" && u == nil:
		t.Errorf("%s: %v not classified, want cause %s", what, err, cause)
	case cause != "" && u.Cause != cause:
		t.Errorf("%s: cause %s, want %s (%v)", what, u.Cause, cause, err)
	case cause != "" && (!errors.Is(u, store.ErrUnavailable) || !errors.Is(u, err)):
		t.Errorf("%s: the classified error does not match ErrUnavailable and its cause", what)
	}
}

// TestUnavailable_Postgres classifies what a real PostgreSQL and pgx
// answer: nothing listening, a server that never answers, the server ending
// a connection (57P01, what pg_ctl stop -m fast sends), and a connection
// that is gone; a unique
// violation, a statement timeout and a cancelled context are not outages.
func TestUnavailable_Postgres(t *testing.T) {
	t.Parallel()
	dsn := os.Getenv("TEST_POSTGRES_DSN")
	if dsn == "" {
		t.Skip("TEST_POSTGRES_DSN not set")
	}
	ctx := context.Background()

	// Nothing listens on a port just freed.
	l, err := (&net.ListenConfig{}).Listen(ctx, "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	_, err = store.Open(ctx, fmt.Sprintf("postgres://postgres:s3cret@127.0.0.1:%d/test?sslmode=disable", port), store.Options{})
	wantCause(t, "refused", err, store.CauseRefused)
	if u := store.Unavailable(err); u != nil && strings.Contains(u.Summary(), "s3cret") {
		t.Errorf("summary %q holds the password", u.Summary())
	}

	// A server that accepts and never answers (a hung host): the connect
	// timeout ends the attempt.
	silent, err := (&net.ListenConfig{}).Listen(ctx, "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	go func() {
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	_, err = store.Open(ctx, fmt.Sprintf("postgres://postgres@%s/test?sslmode=disable&connect_timeout=1", silent.Addr()), store.Options{})
	wantCause(t, "silent", err, store.CauseTimeout)

	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, "CREATE TEMP TABLE t (k int PRIMARY KEY); INSERT INTO t VALUES (1)")
	if err != nil {
		t.Fatal(err)
	}
	_, err = conn.Exec(ctx, "INSERT INTO t VALUES (1)")
	wantCause(t, "unique violation", err, "")
	_, err = conn.Exec(ctx, "SET statement_timeout = '10ms'; SELECT pg_sleep(1)")
	wantCause(t, "statement timeout", err, "")
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	_, err = conn.Exec(cancelled, "SELECT 1")
	wantCause(t, "cancelled", err, "")

	// A second connection: the first was closed by the cancellation.
	conn2, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn2.Close(ctx)
	_, err = conn2.Exec(ctx, "SELECT pg_terminate_backend(pg_backend_pid())")
	wantCause(t, "terminated by the server", err, store.CauseTerminated)
	_, err = conn2.Exec(ctx, "SELECT 1")
	wantCause(t, "used after the server closed it", err, store.CauseConnectionLost)

	wantCause(t, "a bare EOF (a truncated request body, say)", fmt.Errorf("decode: %w", io.ErrUnexpectedEOF), "")
	wantCause(t, "a bare network error", &net.OpError{Op: "read", Err: errors.New("connection reset")}, "")
}

// TestUnavailable_SQLite classifies what a real SQLite answers: the
// database locked by another connection past the busy timeout, and a file
// that cannot be opened; a constraint violation is not an outage.
func TestUnavailable_SQLite(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "busy.db")
	open := func() *sql.DB {
		db, err := sql.Open(sqlite.DriverName, path+"?_pragma=journal_mode(WAL)&_pragma=busy_timeout(50)&_txlock=immediate")
		if err != nil {
			t.Fatal(err)
		}
		db.SetMaxOpenConns(1)
		t.Cleanup(func() { db.Close() })
		return db
	}
	holder, other := open(), open()
	if _, err := holder.ExecContext(ctx, "CREATE TABLE t (k INTEGER PRIMARY KEY)"); err != nil {
		t.Fatal(err)
	}
	tx, err := holder.BeginTx(ctx, nil) // BEGIN IMMEDIATE: takes the write lock
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback() //nolint:errcheck // the test's end
	_, err = other.BeginTx(ctx, nil)
	wantCause(t, "locked by another connection", err, store.CauseBusy)
	if _, err := tx.ExecContext(ctx, "INSERT INTO t VALUES (1)"); err != nil {
		t.Fatal(err)
	}
	_, err = tx.ExecContext(ctx, "INSERT INTO t VALUES (1)")
	wantCause(t, "constraint", err, "")

	missing, err := sql.Open(sqlite.DriverName, filepath.Join(t.TempDir(), "no", "such", "dir", "x.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer missing.Close()
	wantCause(t, "cannot open", missing.PingContext(ctx), store.CauseCannotOpen)
}

// ExplainFailure takes the store's own network errors for an outage, even
// unwrapped by pgx (seen when PostgreSQL was killed under a dispatcher's
// claim), and anything else for a fault.
func TestExplainFailure(t *testing.T) {
	reset := &net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", syscall.ECONNRESET)}
	for _, c := range []struct {
		err    error
		outage bool
	}{
		{reset, true},
		{fmt.Errorf("claim: %w", reset), true},
		{&pgconn.PgError{Code: "57P01", Message: "terminating connection due to administrator command"}, true},
		{errors.New("no such table: outbox_messages"), false},
		{&pgconn.PgError{Code: "23505", Message: "duplicate key"}, false},
	} {
		summary, outage := store.ExplainFailure(c.err)
		if outage != c.outage || summary == "" {
			t.Errorf("ExplainFailure(%v) = %q, %v; want outage %v", c.err, summary, outage, c.outage)
		}
	}
}
