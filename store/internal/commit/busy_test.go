package commit

import (
	"context"
	"database/sql"
	"path/filepath"
	"testing"

	"github.com/libtnb/sqlite"
	"gorm.io/gorm"
)

// TestCommitter_RecoversFromBusy: while another process holds SQLite's
// write lock past the busy timeout, writes fail (SQLITE_BUSY, which the
// store answers 503); once the lock is released the writer takes the next
// write as if nothing happened, with no restart.
func TestCommitter_RecoversFromBusy(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "busy.db")
	params := "?_pragma=journal_mode(WAL)&_pragma=busy_timeout(20)&_txlock=immediate"
	pool, err := sql.Open(sqlite.DriverName, path+params)
	if err != nil {
		t.Fatal(err)
	}
	g, err := New(ctx, pool, func(conn gorm.ConnPool) (*gorm.DB, error) {
		return gorm.Open(sqlite.New(sqlite.Config{Conn: conn}), &gorm.Config{DisableAutomaticPing: true, SkipDefaultTransaction: true})
	}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	write := func(v int) error {
		return g.Do(ctx, func(tx *gorm.DB) error { return tx.Exec("INSERT INTO t VALUES (?)", v).Error })
	}
	if err := g.Do(ctx, func(tx *gorm.DB) error { return tx.Exec("CREATE TABLE t (k INTEGER PRIMARY KEY)").Error }); err != nil {
		t.Fatal(err)
	}

	other, err := sql.Open(sqlite.DriverName, path+params)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	lock, err := other.BeginTx(ctx, nil) // BEGIN IMMEDIATE: the write lock
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if err := write(i); err == nil {
			t.Fatalf("write %d succeeded while another connection held the write lock", i)
		}
	}
	if err := lock.Rollback(); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if err := write(10 + i); err != nil {
			t.Fatalf("write %d after the lock was released: %v", i, err)
		}
	}
	var n int
	if err := other.QueryRowContext(ctx, "SELECT count(*) FROM t").Scan(&n); err != nil || n != 3 {
		t.Fatalf("%d rows (%v), want the 3 written after the lock", n, err)
	}
}
