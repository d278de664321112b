package cli

// The flags of every command that touches the database.

import (
	"context"
	"errors"
	"flag"
	"log/slog"
	"path/filepath"

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
}

// bind binds where the data is: every command that opens the store.
// The pool flags are separate (bindPool, bindInviteBatches): a one-shot
// command opens a connection or two, so they would do nothing there.
func (d *dataConfig) bind(fs *flag.FlagSet) {
	fs.StringVar(&d.dataDir, "data-dir", defaultDataDir, "directory for the SQLite database and the development issuer key")
	fs.StringVar(&d.db, "db", "", "database: "+store.DSNForms+" (default: <data-dir>/controlplane.db)")
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

// open opens the store, observed by hooks (metrics; zero: none), and runs
// the migrations (idempotent and cheap).
// log receives what only the store sees (a panic in a write); nil: slog.Default().
func (d *dataConfig) open(ctx context.Context, hooks store.Hooks, log *slog.Logger) (*store.Store, error) {
	st, err := store.Open(ctx, d.dsn(), store.Options{MaxOpenConns: d.maxConns, InviteWorkers: d.inviteWorkers, Hooks: hooks, Logger: log})
	if err != nil {
		return nil, err
	}
	if err := st.Migrate(ctx); err != nil {
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
