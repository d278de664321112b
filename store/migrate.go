package store

import (
	"context"
	"fmt"

	"gorm.io/gorm"
)

// migrationLockID is the PostgreSQL advisory lock that serialises Migrate
// across replicas starting at once (AutoMigrate itself is not safe to race).
const migrationLockID = 727274001

// Migrate creates or upgrades the schema. It is idempotent; `serve` runs it
// at start-up and the `migrate` command runs it alone.
func (s *Store) Migrate(ctx context.Context) error {
	db := s.write.WithContext(ctx)
	if s.dialect == "postgres" {
		// A session-level advisory lock must be taken and released on the
		// same connection: hold one for the whole migration.
		return db.Connection(func(conn *gorm.DB) error {
			if err := conn.Exec("SELECT pg_advisory_lock(?)", migrationLockID).Error; err != nil {
				return fmt.Errorf("take migration lock: %w", err)
			}
			defer conn.Exec("SELECT pg_advisory_unlock(?)", migrationLockID)
			return autoMigrate(conn)
		})
	}
	return autoMigrate(db)
}

func autoMigrate(db *gorm.DB) error {
	if err := db.AutoMigrate(allModels()...); err != nil {
		return fmt.Errorf("migrate schema: %w", err)
	}
	return nil
}
