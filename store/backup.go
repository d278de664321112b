package store

// Backup and restore of the SQLite database: a consistent copy taken while
// a server runs and writes, checked before it is kept; and its way back,
// checked before it replaces anything, refused while a process holds the
// database. PostgreSQL has pg_dump and pg_restore for both.

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/libtnb/sqlite"
)

// TableRows is one table's row count.
type TableRows struct {
	Table string
	Rows  int64
}

// BackupReport says what Backup or Restore wrote and what the check found.
type BackupReport struct {
	Path   string      // the file written
	Bytes  int64       // its size
	Tables []TableRows // every table's rows, by name
}

// ErrPostgresBackup is returned by Backup and Restore for a PostgreSQL DSN.
var ErrPostgresBackup = errors.New("backup and restore copy SQLite databases; on PostgreSQL use pg_dump and pg_restore (docs/operations/backup-and-restore.md says which tables matter)")

// Backup copies the SQLite database dsn names into the new file to: one
// consistent snapshot, even while servers write to it (VACUUM INTO reads
// in one read transaction, which WAL keeps apart from the writer: the
// server is neither stopped nor slowed beyond the read). The copy is
// written beside to under a temporary name, switched out of WAL (so it is
// one self-contained file), checked (PRAGMA integrity_check, the tables of
// a controlplane database, each table's rows counted), fsynced and only
// then linked to to, which must not exist: an existing file is never
// overwritten, and a failed backup leaves nothing at to.
func Backup(ctx context.Context, dsn, to string) (BackupReport, error) {
	if IsPostgresDSN(dsn) {
		return BackupReport{}, ErrPostgresBackup
	}
	path, err := sqlitePath(dsn)
	if err != nil {
		return BackupReport{}, err
	}
	if err := mustExist(path, "database"); err != nil {
		return BackupReport{}, err
	}
	if _, err := os.Lstat(to); err == nil {
		return BackupReport{}, fmt.Errorf("%s exists: backup never overwrites a file; name a new one", to)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return BackupReport{}, fmt.Errorf("backup to %s: %w", to, err)
	}
	if err := mustExist(filepath.Dir(to), "directory"); err != nil {
		return BackupReport{}, err
	}
	tmp, err := tempBeside(to, ".partial")
	if err != nil {
		return BackupReport{}, err
	}
	defer removeSQLiteFiles(tmp) // a no-op once linked and removed below
	if err := vacuumInto(ctx, path, tmp); err != nil {
		return BackupReport{}, err
	}
	tables, err := checkDatabaseFile(ctx, tmp, false)
	if err != nil {
		return BackupReport{}, fmt.Errorf("the copy failed its check (nothing kept): %w", err)
	}
	if err := syncFile(tmp); err != nil {
		return BackupReport{}, err
	}
	// link(2) refuses an existing name atomically, where rename would
	// replace a file created since the check above.
	if err := os.Link(tmp, to); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return BackupReport{}, fmt.Errorf("%s exists: backup never overwrites a file; name a new one", to)
		}
		return BackupReport{}, fmt.Errorf("backup to %s: %w", to, err)
	}
	if err := errors.Join(os.Remove(tmp), syncDir(filepath.Dir(to))); err != nil {
		return BackupReport{}, fmt.Errorf("backup to %s: %w", to, err)
	}
	info, err := os.Stat(to)
	if err != nil {
		return BackupReport{}, err
	}
	return BackupReport{Path: to, Bytes: info.Size(), Tables: tables}, nil
}

// Restore replaces the SQLite database dsn names with the backup from,
// once from is checked (integrity, a controlplane database). It refuses
// while any process has the database open (a server, a worker, a command:
// each holds its lock file shared, see dbLock), and holds the lock
// exclusive meanwhile, so none opens it half-way. The backup is copied
// beside the database, checked, fsynced and renamed over it: the database
// is the old one or the new one, never a mix. The old database's -wal and
// -shm go first: left beside the new file, SQLite would replay the old
// WAL's pages into it.
func Restore(ctx context.Context, from, dsn string) (BackupReport, error) {
	if IsPostgresDSN(dsn) {
		return BackupReport{}, ErrPostgresBackup
	}
	path, err := sqlitePath(dsn)
	if err != nil {
		return BackupReport{}, err
	}
	if err := mustExist(from, "backup"); err != nil {
		return BackupReport{}, err
	}
	if resolved, err := filepath.EvalSymlinks(path); err == nil {
		path = resolved // the file a link names is replaced, not the link
	}
	// Checked before anything is written, the data directory included.
	if _, err := checkDatabaseFile(ctx, from, true); err != nil {
		return BackupReport{}, fmt.Errorf("%s cannot be restored (nothing changed): %w", from, err)
	}
	//nolint:gosec // G301: as store.Open, the umask decides
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return BackupReport{}, fmt.Errorf("create directory for SQLite database %s: %w", path, err)
	}
	lock, err := lockDatabase(path, true)
	if err != nil {
		return BackupReport{}, lockError(path, err)
	}
	defer lock.release() //nolint:errcheck // closing the lock file; the restore's outcome is decided before
	tmp, err := tempBeside(path, ".restore")
	if err != nil {
		return BackupReport{}, err
	}
	defer removeSQLiteFiles(tmp) // a no-op once renamed
	if err := copyFile(from, tmp); err != nil {
		return BackupReport{}, err
	}
	tables, err := checkDatabaseFile(ctx, tmp, false)
	if err != nil {
		return BackupReport{}, fmt.Errorf("%s cannot be restored (nothing changed): %w", from, err)
	}
	if err := syncFile(tmp); err != nil {
		return BackupReport{}, err
	}
	for _, stale := range []string{path + "-wal", path + "-shm", path + "-journal"} {
		if err := os.Remove(stale); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return BackupReport{}, fmt.Errorf("remove %s: %w", stale, err)
		}
	}
	if err := os.Rename(tmp, path); err != nil {
		return BackupReport{}, fmt.Errorf("restore into %s: %w", path, err)
	}
	if err := syncDir(filepath.Dir(path)); err != nil {
		return BackupReport{}, err
	}
	info, err := os.Stat(path)
	if err != nil {
		return BackupReport{}, err
	}
	return BackupReport{Path: path, Bytes: info.Size(), Tables: tables}, nil
}

// lockError says why the database's lock could not be taken.
func lockError(path string, err error) error {
	if errors.Is(err, errLocked) {
		return fmt.Errorf("the database %s is in use: a controlplane process (serve, a worker, another command or a restore) holds %s.lock; stop it first (nothing was changed)", path, path)
	}
	return fmt.Errorf("lock the database %s: %w", path, err)
}

func mustExist(path, what string) error {
	if _, err := os.Stat(path); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("no %s at %s", what, path)
		}
		return err
	}
	return nil
}

// tempBeside is a fresh name in name's directory: a rename from it to
// name stays on one file system, so it is atomic.
func tempBeside(name, suffix string) (string, error) {
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return name + suffix + "-" + hex.EncodeToString(b), nil
}

// removeSQLiteFiles removes a temporary database and what SQLite may have
// left beside it; missing files are fine.
func removeSQLiteFiles(path string) {
	for _, p := range []string{path, path + "-wal", path + "-shm", path + "-journal"} {
		_ = os.Remove(p) // cleanup of a temporary file: nothing to do if it fails
	}
}

// vacuumInto writes a consistent copy of the database at path to the new
// file to, on a connection of its own (the server's pool is untouched).
func vacuumInto(ctx context.Context, path, to string) error {
	db, err := sql.Open(sqlite.DriverName, path+"?_pragma=busy_timeout(10000)&_pragma=query_only(0)")
	if err != nil {
		return fmt.Errorf("open %s: %w", path, err)
	}
	defer db.Close() //nolint:errcheck // a connection that only read
	if _, err := db.ExecContext(ctx, "VACUUM INTO ?", to); err != nil {
		return fmt.Errorf("copy %s: %w", path, err)
	}
	return nil
}

// checkDatabaseFile checks the SQLite file at path: PRAGMA
// integrity_check says ok, and it has every table of a controlplane
// database. It returns every table's rows. Unless readOnly (a file of
// the operator's, read as it is), it also switches the file to a rollback
// journal, so that the file is the whole database (no -wal beside it)
// until a server opens it in WAL mode again.
func checkDatabaseFile(ctx context.Context, path string, readOnly bool) ([]TableRows, error) {
	params := "?_pragma=busy_timeout(10000)"
	if readOnly {
		params = "?mode=ro&_pragma=query_only(1)"
	}
	db, err := sql.Open(sqlite.DriverName, "file:"+path+params)
	if err != nil {
		return nil, err
	}
	defer db.Close() //nolint:errcheck // closing after the check; what it found is decided
	db.SetMaxOpenConns(1)
	if !readOnly {
		if _, err := db.ExecContext(ctx, "PRAGMA journal_mode=DELETE"); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
	}
	var problems []string
	rows, err := db.QueryContext(ctx, "PRAGMA integrity_check")
	if err != nil {
		return nil, fmt.Errorf("%s is not a SQLite database: %w", path, err)
	}
	for rows.Next() {
		var line string
		if err := rows.Scan(&line); err != nil {
			return nil, errors.Join(err, rows.Close())
		}
		problems = append(problems, line)
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		return nil, fmt.Errorf("%s is not a SQLite database: %w", path, err)
	}
	if len(problems) != 1 || problems[0] != "ok" {
		return nil, fmt.Errorf("%s failed PRAGMA integrity_check: %s", path, strings.Join(problems, "; "))
	}
	var tables []string
	rows, err = db.QueryContext(ctx, "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")
	if err != nil {
		return nil, err
	}
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			return nil, errors.Join(err, rows.Close())
		}
		tables = append(tables, name)
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		return nil, err
	}
	var missing []string
	for _, t := range copyTables() {
		if !slices.Contains(tables, t.name) {
			missing = append(missing, t.name)
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("%s is not a controlplane database (no table %s)", path, strings.Join(missing, ", "))
	}
	counts := make([]TableRows, 0, len(tables))
	for _, t := range tables {
		var n int64
		// t comes from sqlite_master; quoted as an identifier.
		//nolint:gosec // G202: a table name of the file, quoted, not input
		if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM "`+strings.ReplaceAll(t, `"`, `""`)+`"`).Scan(&n); err != nil {
			return nil, fmt.Errorf("count %s: %w", t, err)
		}
		counts = append(counts, TableRows{Table: t, Rows: n})
	}
	return counts, nil
}

// copyFile copies from to the new file to and fsyncs it.
func copyFile(from, to string) (err error) {
	in, err := os.Open(from) //nolint:gosec // G304: the operator names the backup
	if err != nil {
		return err
	}
	defer in.Close() //nolint:errcheck // read only
	//nolint:gosec // G302/G304: a database file, as SQLite creates it
	out, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		return errors.Join(fmt.Errorf("copy %s to %s: %w", from, to, err), out.Close())
	}
	return errors.Join(out.Sync(), out.Close())
}

func syncFile(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0) //nolint:gosec // G304: our own temporary file
	if err != nil {
		return err
	}
	return errors.Join(f.Sync(), f.Close())
}

// syncDir makes a rename or link in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir) //nolint:gosec // G304: the directory of a file we wrote
	if err != nil {
		return err
	}
	return errors.Join(d.Sync(), d.Close())
}
