package store

import (
	"io/fs"
	"slices"
	"testing"
)

// TestMigrations_SameVersions: both dialects have the same versions, under
// the same names, numbered from 1 without a gap, so one version number
// means one schema whatever the database.
func TestMigrations_SameVersions(t *testing.T) {
	names := map[Dialect][]string{}
	for _, d := range []Dialect{SQLite, Postgres} {
		entries, err := fs.ReadDir(migrationsOf(d), ".")
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			names[d] = append(names[d], e.Name())
		}
	}
	if !slices.Equal(names[SQLite], names[Postgres]) {
		t.Errorf("sqlite: %v\npostgres: %v", names[SQLite], names[Postgres])
	}
	for i, m := range Migrations() {
		if m.Version != int64(i+1) {
			t.Errorf("migration %s: version %d, want %d", m.Name, m.Version, i+1)
		}
	}
}
