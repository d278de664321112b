package cli

// The flags of every command that touches the database.

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"

	"github.com/membership-api/controlplane/store"
)

// defaultDataDir holds the SQLite database and the development issuer key
// (token reads the key from it too).
const defaultDataDir = "./data"

// dataConfig says where the data is and how the store is opened.
type dataConfig struct {
	dataDir       string
	db            string
	maxConns      int
	inviteWorkers int
	secrets       secretsConfig
	// secretsFrom is where open found the secrets keys (for the log).
	secretsFrom string
}

// bind binds where the data is: every command that opens the store.
// The pool flags are separate (bindPool, bindInviteBatches): a one-shot
// command opens a connection or two, so they would do nothing there.
func (d *dataConfig) bind(fs *flag.FlagSet) {
	fs.StringVar(&d.dataDir, "data-dir", defaultDataDir, "directory for the SQLite database, the development issuer key and, on SQLite, the secrets key")
	fs.StringVar(&d.db, "db", "", "database: "+store.DSNForms+" (default: <data-dir>/controlplane.db)")
	d.secrets.bind(fs)
}

// bindPool binds the pool size, for the long-running commands (serve and
// the workers).
func (d *dataConfig) bindPool(fs *flag.FlagSet) {
	fs.IntVar(&d.maxConns, "db-max-conns", store.DefaultMaxOpenConns, "PostgreSQL pool size (keep replicas × pool under max_connections) / SQLite reader pool size")
}

// bindInviteBatches binds the invite batching, for serve alone (the only
// command that writes invitations).
func (d *dataConfig) bindInviteBatches(fs *flag.FlagSet) {
	fs.IntVar(&d.inviteWorkers, "db-invite-batches", store.DefaultInviteWorkers, "PostgreSQL: invite batch statements in flight at once (each batches the invites waiting for it; SQLite batches in its single writer)")
}

func (d *dataConfig) dsn() string {
	if d.db != "" {
		return d.db
	}
	return filepath.Join(d.dataDir, "controlplane.db")
}

// urlLikeWords start a --db value meant as a URL; without "://" after
// them it is a mistyped URL, not a file name.
var urlLikeWords = []string{"postgres", "postgresql", "mysql", "mariadb", "sqlserver", "redis", "http", "https"}

// checkDB refuses a --db value that looks like a mistyped URL
// (postgres//host/db, postgres:/host/db, host:5432/db): the store would
// take it for a SQLite file path and create it, silently.
func checkDB(db string) error {
	if db == "" || strings.Contains(db, "://") {
		return nil // the default path, or a URL the store checks itself
	}
	lower := strings.ToLower(db)
	mistyped := strings.Contains(db, "//")
	if colon, slash := strings.IndexByte(db, ':'), strings.IndexByte(db, '/'); colon > 0 && (slash < 0 || colon < slash) {
		// sqlite:PATH and file:PATH are SQLite's own forms; C:/ a drive.
		prefix := lower[:colon]
		mistyped = mistyped || (prefix != "sqlite" && prefix != "file" && len(prefix) != 1)
	}
	for _, w := range urlLikeWords {
		if rest, ok := strings.CutPrefix(lower, w); ok && (rest == "" || rest[0] == '/' || rest[0] == ':' || rest[0] == '@') {
			mistyped = true
		}
	}
	if mistyped {
		return fmt.Errorf("--db %q looks like a mistyped URL (is :// missing?): expected %s", db, store.DSNForms)
	}
	return nil
}

// open opens the store, observed by hooks (metrics; zero: none), and runs
// the migrations (idempotent; on an up-to-date database they read only
// goose's version table and the cursor key).
// log receives what only the store sees (a panic in a write); nil: slog.Default().
func (d *dataConfig) open(ctx context.Context, hooks store.Hooks, log *slog.Logger) (*store.Store, error) {
	return d.openWith(ctx, hooks, log, (*store.Store).Migrate)
}

// openWith opens the store and runs prepare on it (Migrate, CheckSchema;
// nil: nothing), closing it if prepare fails.
func (d *dataConfig) openWith(ctx context.Context, hooks store.Hooks, log *slog.Logger, prepare func(*store.Store, context.Context) error) (*store.Store, error) {
	if err := checkDB(d.db); err != nil {
		return nil, err
	}
	keys, from, err := d.secrets.keyring(d.dataDir, !store.IsPostgresDSN(d.dsn()))
	if err != nil {
		return nil, err
	}
	d.secretsFrom = from
	st, err := store.Open(ctx, d.dsn(), store.Options{MaxOpenConns: d.maxConns, InviteWorkers: d.inviteWorkers, Hooks: hooks, Logger: log, Secrets: keys})
	if err != nil {
		return nil, err
	}
	if prepare == nil {
		return st, nil
	}
	if err := prepare(st, ctx); err != nil {
		return nil, errors.Join(err, st.Close())
	}
	return st, nil
}

// closeLogged closes what a long-running command opened, when it returns:
// no caller is left to hand the error to, so it is logged.
func closeLogged(log *slog.Logger, what string, closeFn func() error) {
	if err := closeFn(); err != nil {
		log.Warn("close "+what, "err", err)
	}
}

// withStore opens the store, runs fn with it and closes it.
func (d *dataConfig) withStore(ctx context.Context, fn func(*store.Store) error) (err error) {
	st, err := d.open(ctx, store.Hooks{}, nil)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, st.Close()) }()
	return fn(st)
}
