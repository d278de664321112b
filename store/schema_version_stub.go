package store

import "context"

// SchemaVersion returns the version of the database's schema.
// Stub until versioned migrations land; the lead deletes this file on merge.
func (s *Store) SchemaVersion(ctx context.Context) (int64, error) {
	return 1, nil
}
