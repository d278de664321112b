package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// CutOffForTest starts a slow PostgreSQL statement on the write pool and
// cancels it mid-flight, as a client that goes away does to its request's
// statements: as a plain statement, inside a transaction, or in a pgx
// pipeline (as runPostgresBatch sends). It returns the pool's open
// connections once the call is over (waiting up to a second): with a pool of one, anything but 0 means
// the connection that was cut off went back to the pool.
func (s *Store) CutOffForTest(how string) (open int, err error) {
	sqlDB, err := s.write.DB()
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	const slow = "SELECT pg_sleep(5)"
	switch how {
	case "statement":
		_, err = sqlDB.ExecContext(ctx, slow)
	case "transaction":
		var tx *sql.Tx
		if tx, err = sqlDB.BeginTx(ctx, nil); err == nil {
			_, err = tx.ExecContext(ctx, slow)
			tx.Rollback()
		}
	case "pipeline":
		var conn *sql.Conn
		if conn, err = sqlDB.Conn(context.Background()); err == nil {
			err = conn.Raw(func(driverConn any) error {
				pb := &pgx.Batch{}
				pb.Queue("SELECT 1")
				pb.Queue(slow)
				return driverConn.(interface{ Conn() *pgx.Conn }).Conn().SendBatch(ctx, pb).Close()
			})
			conn.Close()
		}
	default:
		return 0, fmt.Errorf("unknown way %q", how)
	}
	if !errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return 0, fmt.Errorf("%s was not cut off (err %v)", how, err) //nolint:errorlint // shown, not wrapped: nobody must mistake it for the cut-off
	}
	// database/sql may still be rolling a cancelled transaction back in its
	// own goroutine: give it a moment to release the connection.
	for range 50 {
		if open = sqlDB.Stats().OpenConnections; open == 0 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	return open, nil
}

// SetWriteTimeoutForTest shortens the bound of s's detached writes until
// the returned function restores it. Call it while none of s's writes is
// in flight.
func (s *Store) SetWriteTimeoutForTest(d time.Duration) (restore func()) {
	old := s.writeTimeout
	s.writeTimeout = d
	return func() { s.writeTimeout = old }
}
