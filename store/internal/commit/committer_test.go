package commit

import (
	"context"
	"database/sql"
	"path/filepath"
	"testing"

	"github.com/libtnb/sqlite"
	"gorm.io/gorm"
)

// openCommitter starts a committer on a fresh SQLite file in tb's
// temporary directory (closed at cleanup).
func openCommitter(tb testing.TB) *Committer {
	tb.Helper()
	pool, err := sql.Open(sqlite.DriverName, filepath.Join(tb.TempDir(), "test.db")+"?_pragma=journal_mode(WAL)&_txlock=immediate")
	if err != nil {
		tb.Fatal(err)
	}
	g, err := New(context.Background(), pool, func(conn gorm.ConnPool) (*gorm.DB, error) {
		return gorm.Open(sqlite.New(sqlite.Config{Conn: conn}), &gorm.Config{DisableAutomaticPing: true, SkipDefaultTransaction: true})
	}, Options{})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { g.Close() })
	return g
}

// memoGroup stores remember in its transaction's memo and reports what the
// memo held before.
type memoGroup struct {
	remember any
	found    any
}

func (m *memoGroup) RunGroup(_ *gorm.DB, memo *Memo, _ []*Job) error {
	m.found = memo.Load()
	memo.Store(m.remember)
	return nil
}

// TestMemo_EmptiedAfterPlainJob: what a transaction learnt is gone once a
// job that is not a group's has run (it may have written anything).
func TestMemo_EmptiedAfterPlainJob(t *testing.T) {
	ctx := context.Background()
	g := openCommitter(t)
	// Jobs run on the writer goroutine, the only one touching g.memo.
	if err := g.Do(ctx, func(*gorm.DB) error { g.memo.Store("learnt"); return nil }); err != nil {
		t.Fatal(err)
	}
	var kept any
	if err := g.Do(ctx, func(*gorm.DB) error { kept = g.memo.Load(); return nil }); err != nil {
		t.Fatal(err)
	}
	if kept != nil {
		t.Fatalf("the writer's memo survived a plain job: %v", kept)
	}
}

// TestMemo_FreshPerTransaction: what a group step stored is gone in the
// next transaction.
func TestMemo_FreshPerTransaction(t *testing.T) {
	ctx := context.Background()
	g := openCommitter(t)
	first := &memoGroup{remember: "learnt"}
	if err := g.DoGrouped(&Job{Ctx: ctx, Group: first}); err != nil {
		t.Fatal(err)
	}
	if first.found != nil {
		t.Fatalf("a new transaction's memo held %v", first.found)
	}
	var inTx any
	second := &memoGroup{}
	if err := g.Do(ctx, func(*gorm.DB) error {
		// Still the writer goroutine, between two transactions' jobs: a
		// group step of this transaction would see what one stored here.
		inTx = g.memo.Load()
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := g.DoGrouped(&Job{Ctx: ctx, Group: second}); err != nil {
		t.Fatal(err)
	}
	if inTx != nil || second.found != nil {
		t.Fatalf("the memo survived its transaction: %v, %v", inTx, second.found)
	}
}

// TestMemo_NilIsEmpty: a group step run outside the writer's groups (no
// memo) loads nothing and stores nowhere.
func TestMemo_NilIsEmpty(t *testing.T) {
	var m *Memo
	m.Store(1)
	if got := m.Load(); got != nil {
		t.Fatalf("nil memo loaded %v", got)
	}
}
