package store_test

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"testing"

	"github.com/membership-api/controlplane/store"
	"github.com/membership-api/controlplane/store/storetest"
)

// The lists' statements read their order from an index (no sort, no scan
// of a table), so a page costs the same in a workspace of any size.
func TestLists_Plans(t *testing.T) {
	eachDialect(t, func(t *testing.T, st *store.Store, clk *clock) {
		ctx := context.Background()
		if _, err := st.CursorKey(ctx); err != nil { // what the first paged request does
			t.Fatal(err)
		}
		ws := mustWorkspace(t, st, "acme")
		for i := range 300 {
			mustInvite(t, st, ws, fmt.Sprintf("i%d@example.com", i))
			if _, err := storetest.AddMember(ctx, st, "acme", "admin-acme", storetest.NewMember{Sub: fmt.Sprintf("m%d", i), Role: store.RoleMember}); err != nil {
				t.Fatal(err)
			}
		}
		if st.Dialect() == "postgres" {
			if err := st.ExecForTest(ctx, "ANALYZE"); err != nil {
				t.Fatal(err)
			}
		}
		captured := st.CaptureStatementsForTest()
		member := &store.ListPosition{Kind: store.KindMember, CreatedAt: clk.Now(), ID: 1}
		invitation := &store.ListPosition{Kind: store.KindInvitation, CreatedAt: clk.Now(), ID: 1}
		nothing := func(store.UserEntry, store.ListPosition) error { return nil }
		for _, after := range []*store.ListPosition{nil, member, invitation} {
			if _, err := st.EachUser(ctx, ws.Name, after, 10, nothing); err != nil {
				t.Fatal(err)
			}
			if _, err := st.EachPendingInvitationFor(ctx, "i1@example.com", after, 10, func(store.InvitationView, store.ListPosition) error { return nil }); err != nil {
				t.Fatal(err)
			}
		}
		stmts := captured()
		if len(stmts) < 6 {
			t.Fatalf("captured %d statements, want at least 6", len(stmts))
		}
		// Between the LIMIT and the list's index scan PostgreSQL may put only
		// the lookup of the workspace by its name (an InitPlan on the
		// unique name index, run once): the lists take the workspace's name.
		pgLimitedIndex := regexp.MustCompile(`Limit .*\n` +
			`(\s*InitPlan \d+ \(returns \$\d+\)\n\s*->  Index Scan using idx_workspaces_name on workspaces .*\n\s*Index Cond: \(name = \$\d+\)\n)?` +
			`\s*->  Index (Only )?Scan using idx_\w+_list on`)
		sqliteScan := regexp.MustCompile(`(?m)^SCAN (members|invitations|workspaces)\b`)
		for _, s := range stmts {
			if !strings.Contains(s.SQL, "ORDER BY") {
				continue
			}
			plan, err := st.ExplainForTest(ctx, s.SQL, s.Vars)
			if err != nil {
				t.Fatalf("explain %s: %v", s.SQL, err)
			}
			var bad []string
			if st.Dialect() == "postgres" {
				if strings.Contains(plan, "Seq Scan") {
					bad = append(bad, "sequential scan")
				}
				// The page's rows come out of the index in order, cut by
				// the LIMIT: a sort, if any, is of the page only.
				if !pgLimitedIndex.MatchString(plan) {
					bad = append(bad, "no LIMIT right above a list index scan")
				}
			} else {
				if sqliteScan.MatchString(plan) {
					bad = append(bad, "table scan")
				}
				if strings.Contains(plan, "TEMP B-TREE") {
					bad = append(bad, "sort")
				}
				if !strings.Contains(plan, "_list") {
					bad = append(bad, "no list index")
				}
			}
			if len(bad) > 0 {
				t.Errorf("%v in the plan of\n%s\n%s", bad, s.SQL, plan)
			}
		}
	})
}
