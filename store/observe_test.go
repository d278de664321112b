package store_test

import (
	"context"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/membership-api/controlplane/store"
	"github.com/membership-api/controlplane/store/storetest"
)

// TestOutbox_Stats: the monitoring figures follow the outbox (pending,
// failed, the oldest pending by when it was queued or requeued), and each
// statement reads its partial index from the start under its LIMIT: no
// table scan, no sort, whatever the backlog.
func TestOutbox_Stats(t *testing.T) {
	eachDialect(t, func(t *testing.T, st *store.Store, clk *clock) {
		ctx := context.Background()
		stats := func() store.OutboxStats {
			t.Helper()
			s, err := st.OutboxStats(ctx)
			if err != nil {
				t.Fatal(err)
			}
			return s
		}
		if got := stats(); got != (store.OutboxStats{}) {
			t.Fatalf("empty outbox: got %+v, want zeros", got)
		}
		mustWorkspace(t, st, "acme")
		first := clk.Now()
		queueEmail(t, st, "acme", "a@x.test")
		clk.Advance(time.Minute)
		queueEmail(t, st, "acme", "b@x.test")
		if got := stats(); got.Pending != 2 || got.Failed != 0 || !got.OldestPending.Equal(first) {
			t.Fatalf("two queued: got %+v, want 2 pending, 0 failed, oldest %v", got, first)
		}
		failDue(t, st) // both fail
		clk.Advance(time.Minute)
		queueEmail(t, st, "acme", "c@x.test")
		third := clk.Now()
		if got := stats(); got.Pending != 1 || got.Failed != 2 || !got.OldestPending.Equal(third) {
			t.Fatalf("two failed, one queued: got %+v, want 1 pending, 2 failed, oldest %v", got, third)
		}
		// A requeued message's age starts again when it was requeued.
		clk.Advance(time.Minute)
		requeue(t, st, store.OutboxFilter{}, 2, 0)
		if got := stats(); got.Pending != 3 || got.Failed != 0 || !got.OldestPending.Equal(third) {
			t.Fatalf("after requeue: got %+v, want 3 pending, 0 failed, oldest %v (c's; a and b were requeued after)", got, third)
		}

		captured := st.CaptureStatementsForTest()
		stats()
		var n int
		for _, c := range captured() {
			if !strings.Contains(c.SQL, "outbox_messages") {
				continue
			}
			n++
			plan, err := st.ExplainForTest(ctx, c.SQL, c.Vars)
			if err != nil {
				t.Fatalf("explain %s: %v", c.SQL, err)
			}
			t.Logf("statement:\n%s\nplan:\n%s", c.SQL, plan)
			if problems := boundedIndexWalk(st.Dialect(), plan); len(problems) > 0 {
				t.Errorf("statement:\n%s\nplan:\n%s\nproblems: %s", c.SQL, plan, strings.Join(problems, "; "))
			}
		}
		if n != 3 {
			t.Fatalf("captured %d outbox statements, want 3", n)
		}
	})
}

var (
	sqliteOutboxIndex = regexp.MustCompile(`^SCAN \S+ USING (?:COVERING )?INDEX (idx_outbox_claim|idx_outbox_failed)$`)
	pgOutboxIndex     = regexp.MustCompile(`(Index Scan|Index Only Scan) using (idx_outbox_claim|idx_outbox_failed) on outbox_messages`)
)

// boundedIndexWalk checks the plan of an OutboxStats statement: the outbox
// is read only in a partial index's order, which the LIMIT then stops (the
// oldest-pending statement sorts the at most OutboxStatsLimit rows it kept,
// which is what the limit bounds).
func boundedIndexWalk(dialect, plan string) []string {
	var problems []string
	used := false
	for line := range strings.SplitSeq(plan, "\n") {
		line = strings.TrimSpace(line)
		switch dialect {
		case "sqlite":
			if sqliteOutboxIndex.MatchString(line) {
				used = true
			} else if strings.HasPrefix(line, "SCAN outbox_messages") {
				problems = append(problems, "reads the outbox otherwise: "+line)
			}
		case "postgres":
			if pgOutboxIndex.MatchString(line) {
				used = true
			} else if strings.Contains(line, "on outbox_messages") {
				problems = append(problems, "reads the outbox otherwise: "+line)
			}
		}
	}
	if !used {
		problems = append(problems, "does not walk idx_outbox_claim or idx_outbox_failed")
	}
	return problems
}

// TestHooks: the store reports invite batch sizes (both databases) and,
// on SQLite, how long commits and fsyncs took.
func TestHooks(t *testing.T) {
	storetest.EachDialect(t, func(t *testing.T, dialect string) {
		var mu sync.Mutex
		var batches []int
		var commits, fsyncs int
		hooks := store.Hooks{
			InviteBatch: func(n int) { mu.Lock(); batches = append(batches, n); mu.Unlock() },
			SQLiteCommit: func(d time.Duration) {
				mu.Lock()
				commits++
				mu.Unlock()
				if d <= 0 {
					t.Errorf("commit took %v", d)
				}
			},
			SQLiteFsync: func(time.Duration) { mu.Lock(); fsyncs++; mu.Unlock() },
		}
		st := storetest.Open(t, dialect, store.Options{Hooks: hooks})
		mustWorkspace(t, st, "acme")
		var wg sync.WaitGroup
		for i := range 20 {
			wg.Go(func() { queueEmail(t, st, "acme", "u"+strings.Repeat("x", i)+"@x.test") })
		}
		wg.Wait()
		mu.Lock()
		defer mu.Unlock()
		total := 0
		for _, n := range batches {
			if n < 1 {
				t.Errorf("batch of %d", n)
			}
			total += n
		}
		if total != 20 {
			t.Errorf("batches %v settle %d invites, want 20", batches, total)
		}
		if dialect == "sqlite" && (commits == 0 || fsyncs == 0) {
			t.Errorf("SQLite: %d commits and %d fsyncs observed, want some of each", commits, fsyncs)
		}
		if dialect == "postgres" && (commits != 0 || fsyncs != 0) {
			t.Errorf("PostgreSQL: %d commits and %d fsyncs observed, want none (SQLite's)", commits, fsyncs)
		}
	})
}
