package commit

import (
	"context"
	"database/sql"
	"path/filepath"
	"testing"
	"time"

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
	first, second := &memoGroup{remember: "learnt"}, &memoGroup{}
	// DoGrouped returns once its transaction is committed: the second
	// runs in the next one.
	for _, group := range []*memoGroup{first, second} {
		if err := g.DoGrouped(&Job{Ctx: ctx, Group: group}); err != nil {
			t.Fatal(err)
		}
	}
	if first.found != nil || second.found != nil {
		t.Fatalf("the memo survived its transaction: %v, %v", first.found, second.found)
	}
}

// TestMemo_SharedByOneTransactionsGroups: two groups whose jobs share a
// transaction see one memo, the later what the earlier stored.
func TestMemo_SharedByOneTransactionsGroups(t *testing.T) {
	ctx := context.Background()
	g := openCommitter(t)
	a, b := &memoGroup{remember: "a"}, &memoGroup{remember: "b"}
	started, release := make(chan struct{}), make(chan struct{})
	busy := make(chan error, 1)
	go func() { busy <- g.Do(ctx, func(*gorm.DB) error { close(started); <-release; return nil }) }()
	<-started
	// While the writer is held, both group jobs queue; the next
	// transaction takes them together.
	done := make(chan error, 2)
	for _, group := range []*memoGroup{a, b} {
		go func() { done <- g.DoGrouped(&Job{Ctx: ctx, Group: group}) }()
	}
	time.Sleep(50 * time.Millisecond)
	close(release)
	for _, ch := range []chan error{busy, done, done} {
		if err := <-ch; err != nil {
			t.Fatal(err)
		}
	}
	aFirst := a.found == nil && b.found == "a" // b found what a stored
	bFirst := b.found == nil && a.found == "b"
	if !aFirst && !bFirst {
		t.Fatalf("groups of one transaction found %v and %v, want one of them the other's", a.found, b.found)
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
