package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/libtnb/sqlite"
	"gorm.io/gorm"
)

// migrationLockID is the PostgreSQL advisory lock that serialises Migrate
// across replicas starting at once (AutoMigrate itself is not safe to race).
const migrationLockID = 727274001

// Migrate creates or upgrades the schema. It is idempotent; `serve` runs it
// at start-up and the `migrate` command runs it alone.
func (s *Store) Migrate(ctx context.Context) error {
	if s.dialect == SQLite {
		// On a connection of its own, opened for the migration: the
		// writer's must never leave its goroutine, and the readers are
		// read-only. The database file's lock keeps it apart from writes.
		db, err := gorm.Open(sqlite.Open(s.migrateDSN), s.gormConfig(false))
		if err != nil {
			return fmt.Errorf("migrate: %w", err)
		}
		sqlDB, _ := db.DB()
		sqlDB.SetMaxOpenConns(1)
		err = autoMigrate(db.WithContext(ctx))
		return errors.Join(err, sqlDB.Close())
	}
	// A session-level advisory lock must be taken and released on the
	// same connection: hold one for the whole migration.
	return s.write.WithContext(ctx).Connection(func(conn *gorm.DB) error {
		if err := conn.Exec("SELECT pg_advisory_lock(?)", migrationLockID).Error; err != nil {
			return fmt.Errorf("take migration lock: %w", err)
		}
		defer conn.Exec("SELECT pg_advisory_unlock(?)", migrationLockID)
		return autoMigrate(conn)
	})
}

// replacedIndexes were made by earlier versions and are now covered by
// others (AutoMigrate creates indexes but never drops one): the API-key
// index on workspace_id alone by idx_api_keys_workspace_sub, which starts
// with it; the outbox's (status, next_attempt_at) by idx_outbox_claim; the
// invitations' email index by idx_invitations_pending_email_list, which
// starts with email and serves every lookup by email (all of them are of
// pending invitations): one index less to write per invite (the
// SQLite invite path had gained the two list indexes).
// The webhooks' idx_webhook_claim (all pending messages in due order) by
// idx_webhook_endpoint_queue (each endpoint's), which the fair claim walks.
var replacedIndexes = []string{"idx_api_keys_workspace_id", "idx_outbox_due", "idx_invitations_email", "idx_webhook_claim"}

func autoMigrate(db *gorm.DB) error {
	if err := db.AutoMigrate(allModels()...); err != nil {
		return fmt.Errorf("migrate schema: %w", err)
	}
	for _, name := range replacedIndexes {
		// The same statement on SQLite and PostgreSQL (index names are
		// schema-wide on both).
		if err := db.Exec("DROP INDEX IF EXISTS " + name).Error; err != nil {
			return fmt.Errorf("drop replaced index %s: %w", name, err)
		}
	}
	// The lists' keyset indexes and the cursor signing key (lists.go).
	if err := migrateLists(db); err != nil {
		return err
	}
	return recountMembers(db)
}

// recountMembers sets every workspace's MemberCount from its members: the
// column is new to databases made by earlier versions, and a replica of an
// earlier version still running during an upgrade changes members without
// counting. On PostgreSQL the members table is locked against changes for
// the statement (SHARE mode: reads go on), so no change in flight is lost
// between the count and the write; SQLite's single writer does the same.
func recountMembers(db *gorm.DB) error {
	return db.Transaction(func(tx *gorm.DB) error {
		if Dialect(tx.Dialector.Name()) == Postgres {
			if err := tx.Exec("LOCK TABLE members IN SHARE MODE").Error; err != nil {
				return fmt.Errorf("recount members: %w", err)
			}
		}
		// People only: a service account's member row is not counted.
		people := `(SELECT COUNT(*) FROM members WHERE members.workspace_id = workspaces.id AND members.source <> '` + SourceServiceAccount + `')`
		err := tx.Exec(`UPDATE workspaces SET member_count = ` + people + ` WHERE member_count <> ` + people).Error
		if err != nil {
			return fmt.Errorf("recount members: %w", err)
		}
		return nil
	})
}
