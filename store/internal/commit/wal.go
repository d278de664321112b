package commit

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
)

// openWAL switches conn to synchronous=NORMAL (the syncer fsyncs instead)
// and opens the WAL file SQLite actually writes: its own resolved path of
// the database (symlinks followed) plus "-wal", checked to be the same file.
// Reading once creates the WAL file if this is the first connection; it then
// lives as long as conn (SQLite deletes it only when the last connection
// closes; resets and checkpoints rewind or truncate it in place).
func openWAL(ctx context.Context, conn *sql.Conn) (*os.File, error) {
	if _, err := conn.ExecContext(ctx, "PRAGMA synchronous=NORMAL"); err != nil {
		return nil, err
	}
	var seq int
	var name, file string
	if err := conn.QueryRowContext(ctx, "SELECT seq, name, file FROM pragma_database_list WHERE name = 'main'").Scan(&seq, &name, &file); err != nil {
		return nil, fmt.Errorf("find the database file: %w", err)
	}
	var tables int
	if err := conn.QueryRowContext(ctx, "SELECT count(*) FROM sqlite_master").Scan(&tables); err != nil {
		return nil, err
	}
	path := file + "-wal"
	wal, err := os.OpenFile(path, os.O_RDWR, 0) //nolint:gosec // G304: SQLite's own path of the database it opened, plus "-wal"
	if err != nil {
		return nil, fmt.Errorf("open WAL file for fsync: %w", err)
	}
	opened, err1 := wal.Stat()
	live, err2 := os.Stat(path)
	if err := errors.Join(err1, err2); err != nil {
		return nil, fmt.Errorf("open WAL file for fsync: %w", errors.Join(err, wal.Close()))
	}
	if !os.SameFile(opened, live) {
		return nil, errors.Join(fmt.Errorf("open WAL file for fsync: %s changed while opening", path), wal.Close())
	}
	return wal, nil
}
