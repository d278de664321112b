package store

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/membership-api/controlplane/store/internal/commit"
	"gorm.io/gorm"
)

// TestAnyEnabledWebhook_OncePerTransaction: an invite batch in a writer
// transaction without enabled endpoints queues nothing and remembers that
// in the transaction's memo for its later batches; once the memo is emptied
// (as the writer does after any job that is not a group's), the next batch
// sees a new endpoint and queues its messages. Without a memo (a batch run
// as a plain job) the webhook statement always runs.
func TestAnyEnabledWebhook_OncePerTransaction(t *testing.T) {
	ctx := context.Background()
	st, ws := openSQLiteWithWorkspace(t, "hooked")
	batch := freshInvites("hooked")
	messages := func(tx *gorm.DB) int64 {
		var n int64
		if err := tx.Model(&WebhookMessage{}).Count(&n).Error; err != nil {
			t.Fatal(err)
		}
		return n
	}
	err := st.committer.Do(ctx, func(tx *gorm.DB) error {
		memo := &commit.Memo{}
		if err := runSQLiteBatch(ctx, tx, memo, st.now(), batch(3)); err != nil {
			return err
		}
		if known, ok := memo.Load().(webhooksEnabled); !ok || bool(known) || messages(tx) != 0 {
			return fmt.Errorf("no endpoint: memo %v, %d messages", memo.Load(), messages(tx))
		}
		endpoint := WebhookEndpoint{WorkspaceID: ws.ID, URL: "https://hooks.test/", Secret: "whsec_test"}
		if err := tx.Omit("Workspace").Create(&endpoint).Error; err != nil {
			return err
		}
		// Remembered: this batch skips its webhook statement.
		if err := runSQLiteBatch(ctx, tx, memo, st.now(), batch(2)); err != nil {
			return err
		}
		if n := messages(tx); n != 0 {
			return fmt.Errorf("state remembered, yet %d messages", n)
		}
		*memo = commit.Memo{} // what the writer does after a job that is not a group's
		if err := runSQLiteBatch(ctx, tx, memo, st.now(), batch(4)); err != nil {
			return err
		}
		if known, _ := memo.Load().(webhooksEnabled); !bool(known) || messages(tx) != 4 {
			return fmt.Errorf("after the endpoint: memo %v, %d messages, want 4", memo.Load(), messages(tx))
		}
		// A batch without the writer's memo runs the statement itself.
		if err := runSQLiteBatch(ctx, tx, nil, st.now(), batch(1)); err != nil {
			return err
		}
		if n := messages(tx); n != 5 {
			return fmt.Errorf("without state: %d messages, want 5", n)
		}
		return errRollbackForTest // leave nothing behind
	})
	if !errors.Is(err, errRollbackForTest) {
		t.Fatal(err)
	}
}

var errRollbackForTest = errors.New("rolled back on purpose")

// openSQLiteWithWorkspace opens a migrated SQLite store in tb's temporary
// directory (closed at cleanup) with one workspace, whose admin is "admin".
func openSQLiteWithWorkspace(tb testing.TB, workspace string) (*Store, Workspace) {
	tb.Helper()
	ctx := context.Background()
	st, err := Open(ctx, filepath.Join(tb.TempDir(), "test.db"), Options{})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { st.Close() })
	if err := st.Migrate(ctx); err != nil {
		tb.Fatal(err)
	}
	ws, err := st.CreateWorkspace(ctx, NewWorkspace{Name: workspace, AdminSub: "admin", AdminEmail: "admin@" + workspace + ".test"})
	if err != nil {
		tb.Fatal(err)
	}
	return st, ws
}

// freshInvites returns a maker of invite jobs by the workspace's admin
// (openSQLiteWithWorkspace), each for an email not used before.
func freshInvites(workspace string) func(n int) []*inviteJob {
	seq := 0
	return func(n int) []*inviteJob {
		jobs := make([]*inviteJob, n)
		for i := range jobs {
			seq++
			jobs[i] = &inviteJob{p: InviteParams{Workspace: workspace, Caller: "admin", Email: fmt.Sprintf("u%d@%s.test", seq, workspace), Role: RoleMember, TTL: time.Hour}}
		}
		return jobs
	}
}

// TestAnyEnabledWebhook_Plan: the probe reads the partial index of enabled
// endpoints (one entry), not the table, whose disabled endpoints may be many.
func TestAnyEnabledWebhook_Plan(t *testing.T) {
	st, ws := openSQLiteWithWorkspace(t, "plan")
	ctx := context.Background()
	err := st.committer.Do(ctx, func(tx *gorm.DB) error {
		now := st.now()
		for i := range 50 {
			e := WebhookEndpoint{WorkspaceID: ws.ID, URL: fmt.Sprintf("https://h%d.test/", i), Secret: "whsec_test", DisabledAt: &now}
			if err := tx.Omit("Workspace").Create(&e).Error; err != nil {
				return err
			}
		}
		return tx.Exec("ANALYZE").Error
	})
	if err != nil {
		t.Fatal(err)
	}
	var plan []string
	err = st.committer.Do(ctx, func(tx *gorm.DB) error {
		rows, err := tx.ConnPool.QueryContext(ctx, "EXPLAIN QUERY PLAN "+anyEnabledWebhookSQL)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var id, parent, unused int
			var detail string
			if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
				return err
			}
			plan = append(plan, detail)
		}
		return rows.Err()
	})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(strings.Join(plan, "\n"), "INDEX idx_webhook_endpoints_enabled") {
		t.Fatalf("plan of %s:\n%s\nwant it to read idx_webhook_endpoints_enabled", anyEnabledWebhookSQL, strings.Join(plan, "\n"))
	}
	var enabled bool
	if err := st.committer.Do(ctx, func(tx *gorm.DB) error {
		var err error
		enabled, err = anyEnabledWebhook(ctx, tx, &commit.Memo{})
		return err
	}); err != nil || enabled {
		t.Fatalf("50 disabled endpoints: enabled %v, err %v", enabled, err)
	}
}
