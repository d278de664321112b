package storetest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libtnb/sqlite"
	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/membership-api/controlplane/store"
)

// The helpers below set up and inspect a store's database where its API has
// no call for it (adding a member without an invitation, counting every
// table). They work on a second connection of their own, opened on first
// use for a store made by Open or OpenDSN, with the store's clock, so that
// the store's API stays what the program uses.

// side is the second connection to a store's database.
type side struct {
	dsn  string
	now  func() time.Time
	once sync.Once
	db   *gorm.DB
	err  error
}

var sides sync.Map // *store.Store → *side

// track remembers how to reach st's database, until tb ends.
func track(tb testing.TB, st *store.Store, dsn string, now func() time.Time) {
	if now == nil {
		now = time.Now
	}
	sd := &side{dsn: dsn, now: func() time.Time { return now().UTC().Truncate(time.Microsecond) }}
	sides.Store(st, sd)
	tb.Cleanup(func() {
		sides.Delete(st)
		sd.once.Do(func() {}) // no connection opened after this
		if sd.db != nil {
			if db, err := sd.db.DB(); err == nil {
				if err := db.Close(); err != nil {
					tb.Logf("close the second connection: %v", err)
				}
			}
		}
	})
}

// sideDB returns the second connection to st's database.
func sideDB(st *store.Store) (*gorm.DB, error) {
	v, ok := sides.Load(st)
	if !ok {
		return nil, errors.New("storetest: the store was not opened by storetest.Open or OpenDSN")
	}
	sd := v.(*side)
	sd.once.Do(func() {
		cfg := &gorm.Config{TranslateError: true, NowFunc: sd.now, Logger: logger.Discard, SkipDefaultTransaction: true}
		var dialector gorm.Dialector
		if store.IsPostgresDSN(sd.dsn) {
			dialector = postgres.Open(sd.dsn)
		} else {
			// The store's own time format, so that rows written here read
			// back alike; busy_timeout waits for the store's writer.
			dialector = sqlite.Open(sqliteFile(sd.dsn) + "?_txlock=immediate&_texttotime=1&_inttotime=1&_time_format=sqlite" +
				"&_pragma=busy_timeout(10000)&_pragma=foreign_keys(1)")
		}
		sd.db, sd.err = gorm.Open(dialector, cfg)
		if sd.err == nil {
			db, _ := sd.db.DB()
			db.SetMaxOpenConns(2)
		}
	})
	return sd.db, sd.err
}

// sqliteFile is the file a SQLite DSN names (see store.Open).
func sqliteFile(dsn string) string {
	for _, prefix := range []string{"sqlite://", "sqlite:", "file:"} {
		if strings.HasPrefix(dsn, prefix) {
			dsn = strings.TrimPrefix(dsn, prefix)
			break
		}
	}
	if i := strings.IndexByte(dsn, '?'); i >= 0 {
		dsn = dsn[:i]
	}
	return dsn
}

// NewMember is the member AddMember adds: its sub, its email (empty for a
// service account's member row) and its role.
type NewMember struct {
	Sub, Email, Role string
}

// AddMember adds nm to the workspace called workspaceName, as accepting
// an invitation would but without one (fixtures). Returns
// store.ErrNotFound for an unknown workspace, store.ErrConflict if the sub
// is already a member, store.ErrInvalid for a bad role or an email
// store.CheckEmail refuses (with emails[0] when given).
func AddMember(ctx context.Context, st *store.Store, workspaceName, by string, nm NewMember, emails ...store.EmailOptions) (store.Member, error) {
	sub, email, role := nm.Sub, nm.Email, nm.Role
	if role != store.RoleAdmin && role != store.RoleMember {
		return store.Member{}, &store.Error{Kind: store.ErrInvalid, Message: fmt.Sprintf("role must be %q or %q", store.RoleAdmin, store.RoleMember)}
	}
	email = store.NormalizeEmail(email)
	if email != "" {
		var opts store.EmailOptions
		if len(emails) > 0 {
			opts = emails[0]
		}
		if err := store.CheckEmail(email, opts); err != nil {
			return store.Member{}, &store.Error{Kind: store.ErrInvalid, Message: fmt.Sprintf("email %q: %s", email, err)}
		}
	}
	db, err := sideDB(st)
	if err != nil {
		return store.Member{}, err
	}
	var ws store.Workspace
	if err := db.WithContext(ctx).Where("name = ?", workspaceName).Take(&ws).Error; err != nil {
		if errors.Is(err, gorm.ErrRecordNotFound) {
			return store.Member{}, &store.Error{Kind: store.ErrNotFound, Message: fmt.Sprintf("workspace %q does not exist", workspaceName)}
		}
		return store.Member{}, err
	}
	m := store.Member{WorkspaceID: ws.ID, Sub: sub, Email: email, Role: role,
		Audit: store.Audit{CreatedBy: by, UpdatedBy: by}}
	err = db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if err := tx.Create(&m).Error; err != nil {
			return err
		}
		// Workspace.MemberCount is kept with every change to the members.
		return tx.Exec("UPDATE workspaces SET member_count = member_count + 1 WHERE id = ?", ws.ID).Error
	})
	if errors.Is(err, gorm.ErrDuplicatedKey) {
		return store.Member{}, &store.Error{Kind: store.ErrConflict, Message: fmt.Sprintf("%q is already a member of %q", sub, workspaceName)}
	}
	if err != nil {
		return store.Member{}, err
	}
	return m, nil
}

// CountRows returns the number of rows of every table, so that tests can
// check that a rejected request wrote nothing.
func CountRows(ctx context.Context, st *store.Store) (map[string]int64, error) {
	db, err := sideDB(st)
	if err != nil {
		return nil, err
	}
	tables, err := db.Migrator().GetTables()
	if err != nil {
		return nil, err
	}
	counts := make(map[string]int64, len(tables))
	for _, table := range tables {
		var n int64
		if err := db.WithContext(ctx).Table(table).Count(&n).Error; err != nil {
			return nil, err
		}
		counts[table] = n
	}
	return counts, nil
}

// PendingInvitation returns the pending invitation for email in the
// workspace called workspaceName. Returns store.ErrNotFound if there is none.
func PendingInvitation(ctx context.Context, st *store.Store, workspaceName, email string) (store.Invitation, error) {
	db, err := sideDB(st)
	if err != nil {
		return store.Invitation{}, err
	}
	var inv store.Invitation
	err = db.WithContext(ctx).
		Where("workspace_id = (SELECT id FROM workspaces WHERE name = ?) AND email = ? AND status = ?",
			workspaceName, store.NormalizeEmail(email), store.InvitationPending).
		Take(&inv).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return store.Invitation{}, &store.Error{Kind: store.ErrNotFound, Message: "invitation not found"}
	}
	return inv, err
}

// EachDialect runs fn as a subtest for every dialect, each with a fresh
// database (PostgreSQL's skipped when TEST_POSTGRES_DSN is unset).
func EachDialect(t *testing.T, fn func(t *testing.T, dialect string)) {
	t.Helper()
	for _, dialect := range Dialects {
		t.Run(dialect, func(t *testing.T) { fn(t, dialect) })
	}
}
