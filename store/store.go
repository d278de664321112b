package store

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/libtnb/sqlite"
	"github.com/membership-api/controlplane/internal/keyring"
	"github.com/membership-api/controlplane/store/internal/commit"
	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"
)

// Sentinel errors returned by Store methods; match them with errors.Is.
var (
	// ErrNotFound: the workspace, member, invitation or key does not exist.
	ErrNotFound = errors.New("not found")
	// ErrConflict: the change conflicts with the current state.
	ErrConflict = errors.New("conflict")
	// ErrInvalid: the input cannot be stored as given.
	ErrInvalid = errors.New("invalid")
	// ErrForbidden: the caller's role does not allow the change.
	ErrForbidden = errors.New("forbidden")
)

// Error wraps a sentinel with a message meant for the API client.
type Error struct {
	Kind    error
	Message string
	// Code is the machine-readable kind the API answers (its error body's
	// `error`, e.g. "workspace_not_found"); empty: the sentinel's default.
	Code string
}

func (e *Error) Error() string { return e.Message }
func (e *Error) Unwrap() error { return e.Kind }

func errorf(kind error, format string, args ...any) error {
	return &Error{Kind: kind, Message: fmt.Sprintf(format, args...)}
}

// The machine-readable kinds of the store's refusals (Error.Code), which the
// API answers as its error body's `error` (docs/api/errors.md, "Error kinds").
const (
	CodeWorkspaceNotFound  = "workspace_not_found"
	CodeUserNotFound       = "user_not_found"
	CodeInvitationNotFound = "invitation_not_found"
	CodeNotAdmin           = "not_admin"
	CodeAlreadyMember      = "already_member"
	CodeLastAdmin          = "last_admin"
	CodeEmailTaken         = "email_taken"
	CodeInvalidEmail       = "invalid_email"
	CodeInvalidRole        = "invalid_role"
)

// codedf is errorf with the API's machine-readable kind of the error.
func codedf(kind error, code, format string, args ...any) error {
	return &Error{Kind: kind, Code: code, Message: fmt.Sprintf(format, args...)}
}

// Store is the database handle. Writes go through inTx, reads through
// read. On SQLite every write transaction runs on the group committer's one
// connection (SQLite has one writer anyway, and a pool of writers only adds
// SQLITE_BUSY back-off), and read is a small pool that WAL lets run beside
// it. On PostgreSQL write and read are the same pool.
type Store struct {
	write     *gorm.DB // PostgreSQL only (SQLite writes through committer)
	read      *gorm.DB
	committer *commit.Committer // SQLite only: every write transaction goes through it
	invites   inviteBatcher     // the common case of Invite, batched (invite_batch.go)
	dialect   Dialect
	now       func() time.Time
	log       *slog.Logger
	// writeTimeout bounds a detached write (defaultWriteTimeout; tests
	// shorten it).
	writeTimeout time.Duration
	// migrateDSN opens the connection Migrate runs on (SQLite; closed after).
	migrateDSN string
	// lock is held shared while a SQLite store is open (see dbLock).
	lock *dbLock
	// secrets seals signing keys and webhook secrets (secrets.go); nil:
	// they are stored in the clear.
	secrets *keyring.Keyring
}

// Dialect is the kind of database behind a store.
type Dialect string

// The dialects Open supports.
const (
	SQLite   Dialect = "sqlite"
	Postgres Dialect = "postgres"
)

// Defaults of Options' zero fields; the CLI flags take theirs from here, so
// each is written once.
const (
	DefaultMaxOpenConns  = 32
	DefaultInviteWorkers = 2
)

// Options tune Open.
type Options struct {
	// MaxOpenConns bounds the PostgreSQL pool and the SQLite reader pool.
	MaxOpenConns int
	// InviteWorkers is how many invite batches run at once on PostgreSQL,
	// each on its own connection; 0 means 2. Fewer, larger batches cost
	// the database less per invite (on 2 cores: 1 or 2 workers 15–17k
	// invites/s, 4 workers 12–13k, 8 workers 10k); two keep one slow batch
	// (waiting on a workspace lock) from stalling every invite. (SQLite's
	// single writer batches the invites that queue while it works.)
	InviteWorkers int
	// Now replaces the clock (tests); nil means time.Now.
	Now func() time.Time
	// Hooks observe the store's work (metrics); zero: nothing is observed.
	Hooks Hooks
	// Logger gets what only the store sees (a panic in a write
	// transaction, a bug); nil means slog.Default().
	Logger *slog.Logger
	// Secrets encrypts the signing keys and webhook secrets at rest
	// (secrets.go); nil stores them in the clear.
	Secrets *keyring.Keyring
}

// Dialect names the database behind the store: "sqlite" or "postgres".
func (s *Store) Dialect() string { return string(s.dialect) }

// IsPostgresDSN tells whether dsn selects PostgreSQL.
func IsPostgresDSN(dsn string) bool {
	return strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://")
}

// DSNForms names the accepted forms of a DSN, for error messages and help.
const DSNForms = "postgres://… or postgresql://… for PostgreSQL; a file path, sqlite:PATH or file:PATH for SQLite"

// urlScheme matches the scheme of a URL-style DSN. Only "scheme://" is read
// as a URL: a colon alone is legal in file names (./a:b.db), and a drive
// letter (C:\data\x.db) is one letter, which no database scheme is.
var urlScheme = regexp.MustCompile(`^([A-Za-z][A-Za-z0-9+.-]+)://`)

// keyValueDSN matches PostgreSQL's key=value connection strings
// ("host=db dbname=x"), which would otherwise become SQLite file names.
var keyValueDSN = regexp.MustCompile(`^\s*[A-Za-z_]+\s*=`)

// sqlitePath returns the SQLite file a DSN names, or an error naming the
// accepted forms for a DSN meant for another database: "mysql://foo" must
// not quietly become a SQLite file called "mysql:/foo".
func sqlitePath(dsn string) (string, error) {
	path := dsn
	switch {
	case strings.HasPrefix(dsn, "sqlite://"):
		path = strings.TrimPrefix(dsn, "sqlite://")
	case strings.HasPrefix(dsn, "sqlite:"):
		path = strings.TrimPrefix(dsn, "sqlite:")
	case strings.HasPrefix(dsn, "file:"):
		path = strings.TrimPrefix(dsn, "file:")
	case urlScheme.MatchString(dsn):
		return "", fmt.Errorf("unsupported database %q: the DSN must be %s", urlScheme.FindStringSubmatch(dsn)[1]+"://…", DSNForms)
	case keyValueDSN.MatchString(dsn):
		return "", fmt.Errorf("a key=value DSN is not supported: the DSN must be %s", DSNForms)
	}
	if i := strings.IndexByte(path, '?'); i >= 0 {
		path = path[:i]
	}
	if path == "" || path == ":memory:" {
		return "", fmt.Errorf("SQLite needs a file path (got %q): set --db to a file or leave it empty to use the data directory", dsn)
	}
	return path, nil
}

// Open connects to dsn: a postgres:// or postgresql:// URL selects PostgreSQL;
// a file path, optionally prefixed sqlite:, sqlite:// or file:, selects
// SQLite; any other scheme:// is an error (see sqlitePath). The SQLite file
// and its directory are created when missing.
// Open does not create tables: call Migrate.
func Open(ctx context.Context, dsn string, opts Options) (*Store, error) {
	if opts.MaxOpenConns <= 0 {
		opts.MaxOpenConns = DefaultMaxOpenConns
	}
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	s := &Store{now: func() time.Time { return now().UTC().Truncate(time.Microsecond) }, log: opts.Logger, writeTimeout: defaultWriteTimeout,
		secrets: opts.Secrets}
	if s.log == nil {
		s.log = slog.Default()
	}
	cfg := s.gormConfig
	if IsPostgresDSN(dsn) {
		// No GORM statement cache: database/sql re-prepares for every
		// transaction (an extra round trip), while pgx already caches
		// prepared statements per connection by SQL text.
		if _, err := url.Parse(dsn); err != nil {
			// net/url's message quotes part of the URL, which can be part
			// of the password (one with a / in it): say what to do instead.
			return nil, fmt.Errorf("open PostgreSQL %s: not a valid URL (percent-encode @ : / ? # %% in the user name and password)", RedactDSN(dsn))
		}
		pgCfg, err := pgx.ParseConfig(dsn)
		if err != nil {
			return nil, fmt.Errorf("open PostgreSQL %s: %w", RedactDSN(dsn), err)
		}
		if pgCfg.ConnectTimeout == 0 {
			pgCfg.ConnectTimeout = defaultConnectTimeout
		}
		sqlDB := sql.OpenDB(validatingConnector{stdlib.GetConnector(*pgCfg)})
		db, err := gorm.Open(postgres.New(postgres.Config{Conn: sqlDB}), cfg(false))
		if err != nil {
			return nil, fmt.Errorf("open PostgreSQL %s: %w", RedactDSN(dsn), errors.Join(err, sqlDB.Close()))
		}
		sqlDB.SetMaxOpenConns(opts.MaxOpenConns)
		sqlDB.SetMaxIdleConns(opts.MaxOpenConns)
		sqlDB.SetConnMaxIdleTime(5 * time.Minute)
		s.write, s.read, s.dialect = db, db, Postgres
	} else {
		path, err := sqlitePath(dsn)
		if err != nil {
			return nil, err
		}
		//nolint:gosec // G301: as before, the umask decides; the database file itself is created by SQLite with 0644
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return nil, fmt.Errorf("create directory for SQLite database %s: %w", path, err)
		}
		if s.lock, err = lockDatabase(path, false); err != nil {
			return nil, lockError(path, err)
		}
		// The time parameters pin one text format for times on every
		// connection; synchronous(FULL) makes each commit durable (fsync)
		// on every connection but the group committer's, which switches to
		// NORMAL and fsyncs the WAL itself before answering (internal/commit).
		params := "_texttotime=1&_inttotime=1&_time_format=sqlite&_pragma=journal_mode(WAL)" +
			"&_pragma=busy_timeout(10000)&_pragma=foreign_keys(1)&_pragma=synchronous(FULL)&_pragma=temp_store(memory)"
		s.migrateDSN = path + "?_txlock=immediate&" + params
		// Readers keep a 512 KiB page cache each instead of SQLite's 2 MiB:
		// 32 readers would otherwise hold up to 64 MiB of cache after a burst
		// of reads (make bench: an unpaged 10,000-entry list peaked at 116 MB
		// RSS); the OS page cache still holds the file.
		r, err := gorm.Open(sqlite.Open(path+"?_pragma=query_only(1)&_pragma=cache_size(-512)&"+params), cfg(true))
		if err != nil {
			return nil, fmt.Errorf("open SQLite %s: %w", path, errors.Join(err, s.lock.release()))
		}
		rDB, _ := r.DB()
		rDB.SetMaxOpenConns(opts.MaxOpenConns)
		rDB.SetMaxIdleConns(opts.MaxOpenConns)
		rDB.SetConnMaxIdleTime(0)
		pool, err := sql.Open(sqlite.DriverName, path+"?"+params)
		if err == nil {
			s.committer, err = commit.New(ctx, pool, func(conn gorm.ConnPool) (*gorm.DB, error) {
				c := cfg(true)
				c.DisableAutomaticPing = true // a *sql.Conn has no Ping that GORM's statement cache can reach
				return gorm.Open(sqlite.New(sqlite.Config{Conn: conn}), c)
			}, commit.Options{OnCommit: opts.Hooks.SQLiteCommit, OnFsync: opts.Hooks.SQLiteFsync, Log: s.log})
			if err != nil {
				err = errors.Join(err, pool.Close())
			}
		}
		if err != nil {
			return nil, fmt.Errorf("open SQLite %s: %w", path, errors.Join(err, rDB.Close(), s.lock.release()))
		}
		s.read, s.dialect = r, SQLite
		s.invites = &sqliteInvites{committer: s.committer, now: s.now, hooks: opts.Hooks, log: s.log, run: runSQLiteBatch}
	}
	if err := finishStartedReads(s.read); err != nil {
		return nil, errors.Join(err, s.Close())
	}
	if s.dialect == Postgres {
		workers := opts.InviteWorkers
		if workers <= 0 {
			workers = DefaultInviteWorkers
		}
		s.invites = newPostgresInvites(workers, maxInviteBatch, s.now, opts.Hooks, s.log, s.runPostgresBatch) //nolint:contextcheck // ctx is for opening; the workers run until Close, each batch under its own timeout
	}
	if err := s.Ping(ctx); err != nil {
		return nil, fmt.Errorf("connect to %s database: %w", s.dialect, errors.Join(err, s.Close()))
	}
	return s, nil
}

// defaultConnectTimeout bounds a PostgreSQL connection attempt when the DSN
// sets no connect_timeout (pgx's default is none): a database host that
// stops answering (a network partition, a host down without a reset) then
// costs a request 5 s and a 503 (store.Unavailable's timeout), not the
// kernel's two minutes of SYN retries with the request hanging.
const defaultConnectTimeout = 5 * time.Second

// validatingConnector makes pgx connections that tell database/sql when
// they must not be reused (driver.Validator), which pgx's stdlib adapter
// does not. Without it, a connection whose statement was cancelled (a client
// that went away: pgx then closes the connection) or left mid-transaction
// went back to the pool, and database/sql found out only when handing it to
// the next request; with a busy pool its three tries could all draw such
// connections, and an unrelated request failed with "driver: bad
// connection". Validated on the way back, a broken connection is
// closed at once and a fresh one opened for whoever waits.
type validatingConnector struct{ driver.Connector }

func (c validatingConnector) Connect(ctx context.Context) (driver.Conn, error) {
	conn, err := c.Connector.Connect(ctx)
	if err != nil {
		return nil, err
	}
	return validatingConn{conn.(*pgxConn)}, nil
}

// pgxConn names pgx's driver connection so that embedding it keeps its
// Conn() method (embedding *stdlib.Conn would make Conn the field).
type pgxConn = stdlib.Conn

type validatingConn struct{ *pgxConn }

// IsValid is asked by database/sql before a connection goes back to the
// pool: it must be open, idle (no statement or pipeline still running) and
// outside any transaction.
func (c validatingConn) IsValid() bool {
	pg := c.Conn().PgConn()
	return !pg.IsClosed() && !pg.IsBusy() && pg.TxStatus() == 'I'
}

// finishStartedReads makes a read, once its statement is about to be sent,
// run to its end even if its caller's context is cancelled meanwhile (a
// client that went away); a cancelled context still stops a read before it
// starts (here, and in database/sql while waiting for a connection).
// Cutting a PostgreSQL statement off mid-flight costs more than finishing
// it: pgx closes the connection (and sends a cancel request on another), so
// every client that hangs up forced a new connection, and a stream of them
// kept the pool reconnecting while other requests waited (measured in
// TestAbort_CancelledCallsDoNotHurtOthers, pool of two: a steady caller got
// 8–20 calls through in 3 s, about 75 once broken connections left the pool
// (validatingConnector), about 260 with this). Our reads are bounded and take
// milliseconds. Writes are detached whole (see detach).
func finishStartedReads(db *gorm.DB) error {
	finish := func(tx *gorm.DB) {
		ctx := tx.Statement.Context
		if err := ctx.Err(); err != nil {
			_ = tx.AddError(err) // recorded on tx, which is what GORM reads; the return is the same error
			return
		}
		if _, ok := ctx.Deadline(); ok {
			// A detached write (Store.writeTimeout) or a caller's own bound: no
			// client cancellation reaches it, and its deadline must hold,
			// e.g. for SELECT … FOR UPDATE waiting on a lock (on PostgreSQL
			// reads and writes share this handle).
			return
		}
		tx.Statement.Context = context.WithoutCancel(ctx)
	}
	return errors.Join(
		db.Callback().Query().Before("gorm:query").Register("controlplane:finish_started_reads", finish),
		db.Callback().Row().Before("gorm:row").Register("controlplane:finish_started_reads", finish),
	)
}

// gormConfig is the configuration of every GORM handle: errors translated
// to gorm.ErrDuplicatedKey and the like, the store's clock, no log, no
// implicit transactions; prepare keeps statements prepared per connection.
func (s *Store) gormConfig(prepare bool) *gorm.Config {
	return &gorm.Config{
		TranslateError:         true,
		NowFunc:                s.now,
		Logger:                 logger.Discard,
		SkipDefaultTransaction: true,
		PrepareStmt:            prepare,
	}
}

// ErrWritesStopped is matched by Ping's error, and every write's, once an
// fsync of the SQLite WAL failed: nothing written after it can be promised
// durable, so the process must be restarted (as PostgreSQL does).
var ErrWritesStopped = commit.ErrWritesStopped

// Ping checks that the database answers. On SQLite it asks a reader and
// checks that the writer still runs and still writes (ErrWritesStopped); pinging the writer's connection itself
// could interrupt the transaction in progress (a cancelled ping is an
// sqlite3_interrupt).
func (s *Store) Ping(ctx context.Context) error {
	if s.committer != nil {
		if err := s.committer.Running(); err != nil {
			return err
		}
	}
	sqlDB, err := s.read.DB()
	if err != nil {
		return err
	}
	return sqlDB.PingContext(ctx)
}

// inTx runs fn in a write transaction: on SQLite through the group
// committer, on PostgreSQL as an ordinary transaction (PostgreSQL groups
// concurrent commits itself). The transaction runs detached from ctx's
// cancellation (see detach).
func (s *Store) inTx(ctx context.Context, fn func(tx *gorm.DB) error) error {
	ctx, cancel := s.detach(ctx)
	defer cancel()
	if s.committer != nil {
		return s.committer.Do(ctx, fn)
	}
	return s.write.WithContext(ctx).Transaction(fn)
}

// defaultWriteTimeout bounds a write once it is detached from its caller
// (Store.writeTimeout): one stuck behind a lock or a dead connection fails
// (and rolls back whole) instead of holding its connection for ever.
const defaultWriteTimeout = 15 * time.Second

// detach decides what a write does when its caller goes away (a client
// that disconnects or half-closes cancels its request's context): a write
// whose caller has gone before it reaches the store does not start, and one
// that has reached it runs to its commit or its rollback, under its write timeout. So a write is whole or absent, never
// cut at a point its caller cannot see, and one client leaving cannot
// interrupt a transaction other callers share (SQLite's group commit: an
// interrupt there rolls back everyone's work). Completing is also what a
// client that half-closed expects, and what a client that retries finds:
// invites return the pending invitation, accepting twice is a no-op, and
// every other change is answered by the state it left (404 or the same
// role). The HTTP server reports such requests as 499 (server/errors.go).
func (s *Store) detach(ctx context.Context) (context.Context, context.CancelFunc) {
	if err := ctx.Err(); err != nil {
		// Not started: stay cancelled (a context that is already done).
		return ctx, func() {}
	}
	return context.WithTimeout(context.WithoutCancel(ctx), s.writeTimeout)
}

// Close releases every connection.
func (s *Store) Close() error {
	var errs []error
	if s.invites != nil {
		s.invites.close()
	}
	if s.committer != nil {
		errs = append(errs, s.committer.Close())
	}
	if sqlDB, err := s.read.DB(); err == nil {
		errs = append(errs, sqlDB.Close()) // on PostgreSQL also s.write
	}
	errs = append(errs, s.lock.release()) // after every connection is closed
	return errors.Join(errs...)
}

// RedactDSN hides the password of a URL-style DSN so it never reaches a log.
func RedactDSN(dsn string) string {
	at := strings.LastIndexByte(dsn, '@')
	scheme := strings.Index(dsn, "://")
	if at < 0 || scheme < 0 {
		return dsn
	}
	userinfo := dsn[scheme+3 : at]
	if i := strings.IndexByte(userinfo, ':'); i >= 0 {
		return dsn[:scheme+3] + userinfo[:i] + ":***" + dsn[at:]
	}
	return dsn
}
