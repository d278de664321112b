package store

import (
	"context"
	"database/sql"
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/libtnb/sqlite"
	"gorm.io/gorm"
)

// MigrateToForTest applies the versions up to target.
func (s *Store) MigrateToForTest(ctx context.Context, target int64) error {
	return s.migrateTo(ctx, target)
}

// AutoMigrateForTest runs GORM's AutoMigrate of every model on the
// database, as releases before the versioned migrations did: on a database
// the migrations made it must change nothing (TestMigrations_MatchModels).
func (s *Store) AutoMigrateForTest(ctx context.Context) error {
	return s.withMigrationDB(func(db *sql.DB) error {
		var g *gorm.DB
		var err error
		if s.dialect == Postgres {
			g = s.write
		} else {
			g, err = gorm.Open(sqlite.New(sqlite.Config{Conn: db}), s.gormConfig(false))
			if err != nil {
				return err
			}
		}
		return g.WithContext(ctx).AutoMigrate(append(allModels(), &secret{})...)
	})
}

var spaces = regexp.MustCompile(`\s+`)

// SchemaForTest describes the database's schema, one sorted line per
// column, index and constraint (SQLite: per object, its normalised SQL),
// leaving out goose's own table: two databases with the same lines have
// the same schema.
func (s *Store) SchemaForTest(ctx context.Context) ([]string, error) {
	var lines []string
	var err error
	if s.dialect == SQLite {
		err = s.read.WithContext(ctx).Raw(`SELECT type || ' ' || name || ': ' || COALESCE(sql, '') FROM sqlite_master
			WHERE name NOT LIKE 'sqlite_%' AND tbl_name <> ?`, versionTable).Scan(&lines).Error
		for i, l := range lines {
			lines[i] = spaces.ReplaceAllString(strings.ReplaceAll(l, "IF NOT EXISTS ", ""), " ")
		}
	} else {
		var cols, idx, cons []string
		err = s.read.WithContext(ctx).Raw(`SELECT 'column ' || table_name || '.' || column_name || ' #' || ordinal_position || ' ' || data_type ||
				' null=' || is_nullable || ' default=' || COALESCE(column_default, '')
			FROM information_schema.columns WHERE table_schema = current_schema() AND table_name <> ?`, versionTable).Scan(&cols).Error
		if err == nil {
			err = s.read.WithContext(ctx).Raw(`SELECT 'index ' || indexname || ': ' || indexdef FROM pg_indexes
				WHERE schemaname = current_schema() AND tablename <> ?`, versionTable).Scan(&idx).Error
		}
		if err == nil {
			err = s.read.WithContext(ctx).Raw(`SELECT 'constraint ' || c.conrelid::regclass::text || ' ' || c.conname || ': ' || pg_get_constraintdef(c.oid)
				FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace
				WHERE n.nspname = current_schema() AND c.conrelid::regclass::text <> ?`, versionTable).Scan(&cons).Error
		}
		lines = slices.Concat(cols, idx, cons)
	}
	if err != nil {
		return nil, fmt.Errorf("read schema: %w", err)
	}
	slices.Sort(lines)
	return lines, nil
}
