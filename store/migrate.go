package store

import (
	"context"
	"crypto/rand"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"path"
	"slices"
	"strconv"
	"strings"

	"github.com/libtnb/sqlite"
	"github.com/pressly/goose/v3"
)

// The schema is versioned: SQL files per dialect, embedded in the binary
// (migrations/sqlite, migrations/postgres), applied in order by goose, which
// records each applied version in goose_db_version. Version 1 is the schema
// the last release before them (8c6232f) made with GORM's AutoMigrate,
// written so that a database that release made is recognised as version 1
// without change (migrations/*/00001_baseline.sql says how). The GORM
// models only query: no schema comes from them (TestMigrations_MatchModels
// fails when a model gains a column or index no migration makes).
//
// The rule for a new version (docs/operations/upgrading.md): expand, then
// contract. A version never breaks the release before it, which keeps
// serving beside the new one during a rolling upgrade: add tables, nullable
// or defaulted columns and indexes; drop or rename only what the previous
// release no longer reads or writes, one release later. Creating an index
// on a large PostgreSQL table is done CONCURRENTLY, in a file of its own
// marked "-- +goose NO TRANSACTION", so that it blocks no write. Every
// statement is idempotent (IF NOT EXISTS, IF EXISTS): on SQLite, where no
// advisory lock exists, two processes starting at once may both apply a
// version (the second then changes nothing), and a database made before
// goose_db_version existed replays version 1 over what it has.

//go:embed migrations/sqlite/*.sql migrations/postgres/*.sql
var migrationFiles embed.FS

// migrationLockID is the PostgreSQL advisory lock that serialises Migrate
// across replicas starting at once. It is the lock releases before the
// versioned migrations took around AutoMigrate, so a replica of the
// previous release starting during an upgrade waits for the new one's
// migrations (and the reverse) instead of racing them.
const migrationLockID = 727274001

// versionTable is goose's record of the applied versions.
const versionTable = "goose_db_version"

// ErrSchemaNewer is returned when the database's schema is of a later
// version than this binary knows: a newer release migrated it.
var ErrSchemaNewer = errors.New("database schema is newer than this binary")

// ErrSchemaPending is returned by CheckSchema when migrations are pending.
var ErrSchemaPending = errors.New("database schema has pending migrations")

// migrationsOf returns the dialect's migration files, as a root of their own.
func migrationsOf(d Dialect) fs.FS {
	sub, err := fs.Sub(migrationFiles, path.Join("migrations", string(d)))
	if err != nil {
		panic(err) // a constant path into the embedded files: cannot fail
	}
	return sub
}

// Migration is one version of the schema: its number and file name.
type Migration struct {
	Version int64
	Name    string
}

// Migrations lists the versions this binary knows, oldest first (the same
// versions on both dialects; TestMigrations_SameVersions checks it).
func Migrations() []Migration {
	entries, err := fs.ReadDir(migrationsOf(SQLite), ".")
	if err != nil {
		panic(err) // the embedded directory: cannot fail
	}
	var out []Migration
	for _, e := range entries {
		prefix, _, ok := strings.Cut(e.Name(), "_")
		v, err := strconv.ParseInt(prefix, 10, 64)
		if !ok || err != nil || !strings.HasSuffix(e.Name(), ".sql") {
			continue
		}
		out = append(out, Migration{Version: v, Name: e.Name()})
	}
	slices.SortFunc(out, func(a, b Migration) int { return int(a.Version - b.Version) })
	return out
}

// LatestSchemaVersion is the version of the schema this binary migrates to.
func LatestSchemaVersion() int64 {
	m := Migrations()
	return m[len(m)-1].Version
}

// advisoryLock makes goose hold migrationLockID on the connection it
// migrates on. Not goose's own PostgreSQL locker: that one polls
// pg_try_advisory_lock under another key, so it would not wait for a
// replica of the previous release migrating under this one.
type advisoryLock struct{}

func (advisoryLock) SessionLock(ctx context.Context, conn *sql.Conn) error {
	if _, err := conn.ExecContext(ctx, "SELECT pg_advisory_lock($1)", int64(migrationLockID)); err != nil {
		return fmt.Errorf("take migration lock: %w", err)
	}
	return nil
}

func (advisoryLock) SessionUnlock(ctx context.Context, conn *sql.Conn) error {
	_, err := conn.ExecContext(ctx, "SELECT pg_advisory_unlock($1)", int64(migrationLockID))
	return err
}

// withMigrationDB runs fn on the database handle migrations run on: on
// PostgreSQL the store's pool; on SQLite a connection of its own, opened for
// the migration (the writer's must never leave its goroutine, and the
// readers are read-only; the database file's lock keeps it apart from
// writes).
func (s *Store) withMigrationDB(fn func(*sql.DB) error) error {
	if s.dialect == Postgres {
		db, err := s.write.DB()
		if err != nil {
			return err
		}
		return fn(db)
	}
	db, err := sql.Open(sqlite.DriverName, s.migrateDSN)
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	db.SetMaxOpenConns(1)
	return errors.Join(fn(db), db.Close())
}

// Migrate applies the versions this binary knows and the database lacks,
// in order, on PostgreSQL under migrationLockID. It is idempotent: on an
// up-to-date database it reads goose_db_version and the cursor key's row,
// and touches no other table (TestMigrate_UpToDateTouchesNoData). It
// returns ErrSchemaNewer, changing nothing, when a newer release migrated
// the database. `serve` runs it at start-up (unless --migrate=false) and
// the `migrate` command runs it alone.
func (s *Store) Migrate(ctx context.Context) error { return s.migrateTo(ctx, math.MaxInt64) }

// migrateTo applies the versions up to target (tests stop at one).
func (s *Store) migrateTo(ctx context.Context, target int64) error {
	return s.withMigrationDB(func(db *sql.DB) error {
		dialect, opts := goose.DialectSQLite3, []goose.ProviderOption{goose.WithDisableGlobalRegistry(true)}
		if s.dialect == Postgres {
			dialect, opts = goose.DialectPostgres, append(opts, goose.WithSessionLocker(advisoryLock{}))
		}
		p, err := goose.NewProvider(dialect, db, migrationsOf(s.dialect), opts...)
		if err != nil {
			return fmt.Errorf("migrate: %w", err)
		}
		// goose applies nothing to a newer database (every version it
		// knows is applied), so the check after it is enough.
		if _, err := p.UpTo(ctx, target); err != nil {
			return fmt.Errorf("migrate: %w", err)
		}
		if err := s.checkNotNewer(ctx); err != nil {
			return err
		}
		return s.ensureCursorKey(ctx, db)
	})
}

// ensureCursorKey makes the key that signs list cursors once, from 32
// random bytes, by whichever replica migrates first (ON CONFLICT DO
// NOTHING: a racing replica keeps the first key). It reads the key's row
// first, so that a start writes nothing once the key exists.
func (s *Store) ensureCursorKey(ctx context.Context, db *sql.DB) error {
	ph1, ph2 := "?", "?"
	if s.dialect == Postgres {
		ph1, ph2 = "$1", "$2"
	}
	var n int
	if err := db.QueryRowContext(ctx, "SELECT COUNT(*) FROM secrets WHERE name = "+ph1, cursorKeyName).Scan(&n); err != nil {
		return fmt.Errorf("read cursor key: %w", err)
	}
	if n > 0 {
		return nil
	}
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return fmt.Errorf("make cursor key: %w", err)
	}
	_, err := db.ExecContext(ctx, "INSERT INTO secrets (name, value) VALUES ("+ph1+", "+ph2+") ON CONFLICT DO NOTHING", cursorKeyName, key)
	if err != nil {
		return fmt.Errorf("store cursor key: %w", err)
	}
	return nil
}

// MigrationState is a version's state in a database.
type MigrationState struct {
	Migration
	Applied   bool
	AppliedAt string // as the database wrote it; "" when pending
	Known     bool   // false: applied by a newer release, unknown to this binary
}

// MigrationStatus lists the versions this binary knows, applied or
// pending, then any applied version it does not know (a newer release's).
// It only reads: a database no migration has touched has every version
// pending.
func (s *Store) MigrationStatus(ctx context.Context) ([]MigrationState, error) {
	applied, err := s.appliedVersions(ctx)
	if err != nil {
		return nil, err
	}
	var out []MigrationState
	known := map[int64]bool{}
	for _, m := range Migrations() {
		at, ok := applied[m.Version]
		out = append(out, MigrationState{Migration: m, Applied: ok, AppliedAt: at, Known: true})
		known[m.Version] = true
	}
	var unknown []int64
	for v := range applied {
		if !known[v] && v > 0 {
			unknown = append(unknown, v)
		}
	}
	slices.Sort(unknown)
	for _, v := range unknown {
		out = append(out, MigrationState{Migration: Migration{Version: v}, Applied: true, AppliedAt: applied[v]})
	}
	return out, nil
}

// appliedVersions reads goose_db_version: applied version → when. Version 0
// is goose's marker of an initialised table, not a migration.
func (s *Store) appliedVersions(ctx context.Context) (map[int64]string, error) {
	exists, err := s.hasVersionTable(ctx)
	if err != nil || !exists {
		return map[int64]string{}, err
	}
	var rows []struct {
		VersionID int64
		Tstamp    string
	}
	// Rows of versions applied then rolled back by goose's older API carry
	// is_applied false; the Provider deletes them instead.
	err = s.read.WithContext(ctx).Raw(`SELECT version_id, CAST(tstamp AS TEXT) AS tstamp FROM ` + versionTable +
		` WHERE is_applied ORDER BY id`).Scan(&rows).Error
	if err != nil {
		return nil, fmt.Errorf("read schema version: %w", err)
	}
	out := map[int64]string{}
	for _, r := range rows {
		if r.VersionID > 0 {
			out[r.VersionID] = r.Tstamp
		}
	}
	return out, nil
}

func (s *Store) hasVersionTable(ctx context.Context) (bool, error) {
	q := `SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = ?`
	if s.dialect == Postgres {
		q = `SELECT COUNT(*) FROM pg_catalog.pg_tables WHERE schemaname = current_schema() AND tablename = ?`
	}
	var n int64
	if err := s.read.WithContext(ctx).Raw(q, versionTable).Scan(&n).Error; err != nil {
		return false, fmt.Errorf("read schema version: %w", err)
	}
	return n > 0, nil
}

// SchemaVersion returns the database's schema version: the highest version
// applied, 0 when none is (a new database, or one made before versioned
// migrations and not yet migrated).
func (s *Store) SchemaVersion(ctx context.Context) (int64, error) {
	applied, err := s.appliedVersions(ctx)
	if err != nil {
		return 0, err
	}
	var v int64
	for version := range applied {
		v = max(v, version)
	}
	return v, nil
}

func (s *Store) checkNotNewer(ctx context.Context) error {
	v, err := s.SchemaVersion(ctx)
	if err != nil {
		return err
	}
	if latest := LatestSchemaVersion(); v > latest {
		return fmt.Errorf("%w: the database is at version %d, this binary knows versions up to %d; run a release that knows version %d (or a later one)",
			ErrSchemaNewer, v, latest, v)
	}
	return nil
}

// CheckSchema returns nil when the database is at exactly the version this
// binary knows, ErrSchemaNewer when it is newer, and ErrSchemaPending,
// naming the versions, when migrations are pending. It only reads: it is
// how `serve --migrate=false` starts.
func (s *Store) CheckSchema(ctx context.Context) error {
	if err := s.checkNotNewer(ctx); err != nil {
		return err
	}
	states, err := s.MigrationStatus(ctx)
	if err != nil {
		return err
	}
	var pending []string
	for _, m := range states {
		if !m.Applied {
			pending = append(pending, strconv.FormatInt(m.Version, 10))
		}
	}
	if len(pending) > 0 {
		return fmt.Errorf("%w (versions %s of %d): run `controlplane migrate` with the same --db first",
			ErrSchemaPending, strings.Join(pending, ", "), LatestSchemaVersion())
	}
	return nil
}
