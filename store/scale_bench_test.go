package store_test

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/membership-api/controlplane/store"
	"github.com/membership-api/controlplane/store/storetest"
)

// seedMembers adds n members (emails m1@big.test … mN@big.test) to the
// workspace with id wsID in one INSERT … SELECT, as a large workspace's
// history would have left them (through the API it would take minutes).
// The recursive CTE reads the same on SQLite and PostgreSQL.
func seedMembers(tb testing.TB, st *store.Store, wsID int64, n int) {
	tb.Helper()
	err := st.ExecForTest(context.Background(), `
INSERT INTO members (workspace_id, sub, email, role, source, created_at, updated_at, created_by, updated_by)
WITH RECURSIVE seq(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM seq WHERE i < ?)
SELECT ?, 'sub-' || i, 'm' || i || '@big.test', 'member', '', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, 'seed', 'seed' FROM seq`, n, wsID)
	if err != nil {
		tb.Fatalf("seed %d members: %v", n, err)
	}
}

// BenchmarkStore_InviteScale compares an invite into a workspace of 20,000
// members with one into a workspace of one: the "not already a member" check
// must be an index lookup, so the two should cost the same.
func BenchmarkStore_InviteScale(b *testing.B) {
	for _, dialect := range storetest.Dialects {
		b.Run(dialect, func(b *testing.B) {
			st := storetest.Open(b, dialect, store.Options{})
			ctx := context.Background()
			if _, err := st.CreateWorkspace(ctx, store.NewWorkspace{Name: "small", AdminSub: "admin", AdminEmail: "admin@small.test"}); err != nil {
				b.Fatal(err)
			}
			big, err := st.CreateWorkspace(ctx, store.NewWorkspace{Name: "big", AdminSub: "admin", AdminEmail: "admin@big.test"})
			if err != nil {
				b.Fatal(err)
			}
			seedMembers(b, st, big.ID, 20000)
			for _, ws := range []string{"small", "big"} {
				b.Run(ws, func(b *testing.B) {
					var seq atomic.Int64
					b.SetParallelism(16)
					b.ResetTimer()
					b.RunParallel(func(pb *testing.PB) {
						for pb.Next() {
							email := "u" + strconv.FormatInt(seq.Add(1), 10) + "@" + ws + ".test"
							if _, err := st.Invite(ctx, store.InviteParams{Workspace: ws, Caller: "admin", Email: email, TTL: time.Hour}); err != nil {
								b.Fatal(err)
							}
						}
					})
				})
			}
		})
	}
}
