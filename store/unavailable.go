package store

import (
	"context"
	"database/sql/driver"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"syscall"

	"github.com/jackc/pgx/v5/pgconn"
	"modernc.org/sqlite"
)

// ErrUnavailable means the database cannot be reached right now (refused,
// starting up, shutting down, the connection lost). Nothing about the
// request is wrong and the same request may succeed once the database is
// back; the API answers 503 with Retry-After. Match it with errors.Is after
// Unavailable has classified an error.
var ErrUnavailable = errors.New("database unavailable")

// The causes of an UnavailableError: a bounded set, for the log and the
// metrics' cause label (never the driver's text, which names hosts and users).
const (
	CauseRefused            = "refused"              // nothing listens (connection refused, no such socket)
	CauseCannotConnectNow   = "cannot_connect_now"   // PostgreSQL 57P03: the server is starting up, shutting down or recovering
	CauseTerminated         = "terminated"           // PostgreSQL 57P01/57P02: the server ended the connection (shutdown, crash, pg_terminate_backend)
	CauseConnectionLost     = "connection_lost"      // the connection broke mid-use (EOF, reset, broken pipe, 08xxx)
	CauseTimeout            = "timeout"              // connecting timed out
	CauseTooManyConnections = "too_many_connections" // PostgreSQL 53300
	CauseConnectFailed      = "connect_failed"       // any other failure to connect (DNS, TLS, authentication)
	CauseBusy               = "busy"                 // SQLite: another process held the database past busy_timeout
	CauseCannotOpen         = "cannot_open"          // SQLite: the file or its directory cannot be opened
	CauseIOError            = "io_error"             // SQLite: the disk failed a read or write
	CauseDiskFull           = "disk_full"            // SQLite: the disk is full
)

// UnavailableCauses lists every cause, for metrics that start at zero.
var UnavailableCauses = []string{CauseRefused, CauseCannotConnectNow, CauseTerminated, CauseConnectionLost, CauseTimeout,
	CauseTooManyConnections, CauseConnectFailed, CauseBusy, CauseCannotOpen, CauseIOError, CauseDiskFull}

// UnavailableError is an error that says the database cannot be reached:
// it matches ErrUnavailable and still unwraps to the driver's error.
type UnavailableError struct {
	// Cause is one of the Cause… constants.
	Cause string
	Err   error
}

func (e *UnavailableError) Error() string {
	return "database unavailable (" + e.Cause + "): " + e.Err.Error()
}

func (e *UnavailableError) Unwrap() []error { return []error{ErrUnavailable, e.Err} }

// Summary says what failed in a few words, for the log: the server's own
// message for a PostgreSQL error, else the innermost error's text
// ("connection refused", "unexpected EOF"). It never holds a connection
// string: pgx's connect errors name the user, database and address, the
// summary none of them.
func (e *UnavailableError) Summary() string {
	var pgErr *pgconn.PgError
	if errors.As(e.Err, &pgErr) {
		return pgErr.Error()
	}
	var liteErr *sqlite.Error
	if errors.As(e.Err, &liteErr) {
		return liteErr.Error()
	}
	inner := e.Err
	for {
		next := errors.Unwrap(inner)
		if next == nil {
			return inner.Error()
		}
		inner = next
	}
}

// ExplainFailure says in a few words what err met, for a log line, and
// whether it is an outage of the database (Unavailable): an outage's
// summary names its cause and never a connection string.
//
// It is for errors of the store's own calls (a dispatcher's claim), so,
// unlike Unavailable, it also takes a bare network error for the
// database's connection breaking: pgx sometimes returns one unwrapped
// when PostgreSQL goes away mid-statement ("read tcp …: connection reset
// by peer"), where a request's error, which may come from a client's
// connection, must not be mistaken for an outage.
func ExplainFailure(err error) (summary string, outage bool) {
	if u := Unavailable(err); u != nil {
		return u.Cause + ": " + u.Summary(), true
	}
	if cause := netCause(err); cause != "" {
		return cause + ": " + err.Error(), true
	}
	return err.Error(), false
}

// Unavailable returns err as an *UnavailableError when it says the database
// cannot be reached, else nil. It is the one place that decides what an
// outage is, for every caller (the API's error handler, /readyz):
//
//   - PostgreSQL: a failed connection attempt (pgconn.ConnectError: refused,
//     timed out, the server starting up or refusing connections); SQLSTATE
//     class 08 (connection exception), 57P01 admin_shutdown, 57P02
//     crash_shutdown, 57P03 cannot_connect_now, 53300
//     too_many_connections; a connection that broke under pgx (EOF, reset,
//     broken pipe, "conn closed") or that database/sql found bad.
//   - SQLite: SQLITE_BUSY (another process held the lock past the
//     busy_timeout of 10 s), SQLITE_CANTOPEN, SQLITE_IOERR and SQLITE_FULL.
//     Not SQLITE_CORRUPT or SQLITE_NOTADB (retrying cannot help), nor the
//     group committer's failed WAL fsync, which stops writes until a
//     restart.
//
// A bare io.EOF or network error is not enough: only one that the driver
// reports (wrapped in pgx's errors) counts, so a truncated request body, say,
// is never mistaken for an outage. Statement errors (constraints, syntax),
// lock timeouts and cancelled contexts are not outages either.
func Unavailable(err error) *UnavailableError {
	if err == nil {
		return nil
	}
	var u *UnavailableError
	if errors.As(err, &u) {
		return u
	}
	if cause := unavailableCause(err); cause != "" {
		return &UnavailableError{Cause: cause, Err: err}
	}
	return nil
}

func unavailableCause(err error) string {
	var pgErr *pgconn.PgError
	var connectErr *pgconn.ConnectError
	switch {
	case errors.Is(err, context.Canceled):
		// The caller went away (the server answers 499): no outage.
		return ""
	case errors.As(err, &connectErr):
		// Inside it, the reason the attempt failed: the server's own error
		// (57P03 while starting up or shutting down) or the network's.
		if errors.As(err, &pgErr) {
			if cause := pgCause(pgErr.Code); cause != "" {
				return cause
			}
		}
		if errors.Is(err, context.DeadlineExceeded) || pgconn.Timeout(err) {
			return CauseTimeout
		}
		if cause := netCause(err); cause != "" {
			return cause
		}
		return CauseConnectFailed
	case errors.As(err, &pgErr):
		return pgCause(pgErr.Code)
	case errors.Is(err, driver.ErrBadConn), errors.Is(err, pgconn.ErrConnClosed):
		return CauseConnectionLost
	case errors.Is(err, context.DeadlineExceeded), pgconn.Timeout(err):
		// A statement that ran out of time (a lock wait, the write
		// timeout) on a live connection: a slow request, not an outage.
		return ""
	case pgconnWrapped(err):
		if cause := netCause(err); cause != "" {
			return cause
		}
	}
	var liteErr *sqlite.Error
	if errors.As(err, &liteErr) {
		// The primary result code is the low byte of an extended one.
		switch liteErr.Code() & 0xff {
		case 5: // SQLITE_BUSY
			return CauseBusy
		case 10: // SQLITE_IOERR
			return CauseIOError
		case 13: // SQLITE_FULL
			return CauseDiskFull
		case 14: // SQLITE_CANTOPEN
			return CauseCannotOpen
		}
	}
	return ""
}

// pgCause is the cause a PostgreSQL SQLSTATE names, or "".
func pgCause(code string) string {
	switch {
	case code == "57P01", code == "57P02":
		return CauseTerminated
	case code == "57P03":
		return CauseCannotConnectNow
	case code == "53300":
		return CauseTooManyConnections
	case strings.HasPrefix(code, "08"):
		return CauseConnectionLost
	}
	return ""
}

// netCause is the cause a network error inside err names, or "" (a
// timeout is the caller's to judge: see unavailableCause).
func netCause(err error) string {
	var netErr net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, os.ErrNotExist): // os.ErrNotExist: a Unix socket's file missing
		return CauseRefused
	case errors.As(err, &netErr) && netErr.Timeout():
		return CauseTimeout
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, syscall.EPIPE), errors.Is(err, net.ErrClosed), errors.Is(err, syscall.ECONNABORTED):
		return CauseConnectionLost
	case errors.As(err, &netErr):
		return CauseConnectionLost
	}
	return ""
}

// pgconnWrapped tells whether pgconn reported err: its internal errors all
// say whether a retry is safe (pgconn.SafeToRetry's interface).
func pgconnWrapped(err error) bool {
	var pgconnErr interface{ SafeToRetry() bool }
	return errors.As(err, &pgconnErr)
}
