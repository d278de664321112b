package store_test

import (
	"context"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/membership-api/controlplane/store"
)

// TestAudit_FilteredPagesPlans: a page of the audit log filtered by actor
// or action reads its order from an index that holds the filter (no sort,
// no walk of the workspace's other events), so it costs what an
// unfiltered page costs whatever the log's size; retention reads its batch
// from the primary key's start, a bounded range.
func TestAudit_FilteredPagesPlans(t *testing.T) {
	eachDialect(t, func(t *testing.T, st *store.Store, _ *clock) {
		ctx := context.Background()
		ws := mustWorkspace(t, st, "acme")
		// 5,000 events in this workspace from 50 actors and 5 actions, and
		// 5,000 in others, analysed: enough for PostgreSQL's statistics to
		// see that one actor or action is a small part of a workspace.
		err := st.ExecForTest(ctx, `
INSERT INTO audit_events (workspace_id, workspace, at, actor_kind, actor_sub, action, target_type, target_id)
WITH RECURSIVE seq(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM seq WHERE i < 10000)
SELECT CASE WHEN i % 2 = 0 THEN ? ELSE 1000 + i % 100 END, 'acme', CURRENT_TIMESTAMP, 'user', 'sub-' || (i % 50),
       CASE i % 5 WHEN 0 THEN 'invitation.created' WHEN 1 THEN 'member.removed' WHEN 2 THEN 'api_key.created'
                  WHEN 3 THEN 'workspace.updated' ELSE 'member.left' END, 'member', 't' || i FROM seq`, ws.ID)
		if err == nil && st.Dialect() == "postgres" {
			err = st.ExecForTest(ctx, "ANALYZE")
		}
		if err != nil {
			t.Fatal(err)
		}
		captured := st.CaptureStatementsForTest()
		for _, f := range []store.AuditFilter{
			{WorkspaceID: ws.ID, Limit: 20},
			{WorkspaceID: ws.ID, BeforeID: 9000, Limit: 20},
			{WorkspaceID: ws.ID, ActorSub: "sub-4", Limit: 20},
			{WorkspaceID: ws.ID, ActorSub: "sub-4", BeforeID: 9000, Limit: 20},
			{WorkspaceID: ws.ID, Action: "member.removed", Limit: 20},
			{WorkspaceID: ws.ID, Action: "member.removed", BeforeID: 9000, Since: time.Unix(0, 0), Limit: 20},
		} {
			if _, err := st.ListAudit(ctx, f); err != nil {
				t.Fatal(err)
			}
		}
		want := []string{"idx_audit_workspace", "idx_audit_workspace", "idx_audit_actor_workspace", "idx_audit_actor_workspace", "idx_audit_action_workspace", "idx_audit_action_workspace"}
		stmts := captured()
		if len(stmts) != len(want) {
			t.Fatalf("captured %d statements, want %d", len(stmts), len(want))
		}
		for i, s := range stmts {
			plan, err := st.ExplainForTest(ctx, s.SQL, s.Vars)
			if err != nil {
				t.Fatal(err)
			}
			if problem := auditPlanProblem(st.Dialect(), plan, want[i]); problem != "" {
				t.Errorf("statement:\n%s\nplan:\n%s\nproblem: %s", s.SQL, plan, problem)
			}
		}

		// Retention's batch: the first ids of the primary key, then their
		// time (what PruneAudit's statement reads).
		prune := `SELECT id FROM (SELECT id, at FROM audit_events ORDER BY id LIMIT ?) o WHERE at < ?`
		if st.Dialect() == "postgres" {
			prune = strings.Replace(strings.Replace(prune, "?", "$1", 1), "?", "$2", 1)
		}
		plan, err := st.ExplainForTest(ctx, prune, []any{5000, time.Now()})
		if err != nil {
			t.Fatal(err)
		}
		bounded := map[string]*regexp.Regexp{
			// SQLite walks the table's b-tree (its rowid order) until the LIMIT.
			"sqlite":   regexp.MustCompile(`(?m)^SCAN audit_events$`),
			"postgres": regexp.MustCompile(`Limit .*\n\s*->  Index Scan using audit_events_pkey on audit_events`),
		}[st.Dialect()]
		if !bounded.MatchString(plan) || strings.Contains(plan, "TEMP B-TREE") || strings.Contains(plan, "Sort") {
			t.Errorf("retention batch: plan\n%s\nwant a LIMIT over the primary key's order", plan)
		}
	})
}

// auditPlanProblem says what is wrong with a filtered page's plan ("": it
// walks index, with the filter in its condition, in order).
func auditPlanProblem(dialect, plan, index string) string {
	if strings.Contains(plan, "TEMP B-TREE") || strings.Contains(plan, "Sort") {
		return "sorts"
	}
	column := map[string]string{"idx_audit_actor_workspace": "actor_sub", "idx_audit_action_workspace": "action"}[index]
	var walks *regexp.Regexp
	switch {
	case dialect == "sqlite" && column == "":
		walks = regexp.MustCompile(`(?m)^SEARCH audit_events USING INDEX ` + index + ` \(workspace_id=\?`)
	case dialect == "sqlite":
		walks = regexp.MustCompile(`(?m)^SEARCH audit_events USING INDEX ` + index + ` \(` + column + `=\? AND workspace_id=\?`)
	case column == "":
		// PostgreSQL's generic plan may instead walk the primary key
		// backwards, filtering by workspace (as before version 2): what
		// matters here is that it neither sorts nor takes a filter's index.
		if strings.Contains(plan, "idx_audit_actor_workspace") || strings.Contains(plan, "idx_audit_action_workspace") {
			return "an unfiltered page takes a filter's index"
		}
		return ""
	default:
		walks = regexp.MustCompile(`Limit .*\n\s*->  Index Scan Backward using ` + index + ` on audit_events.*\n\s*Index Cond: \(\(` + column + ` = \$\d+\) AND \(workspace_id = \$\d+\)`)
	}
	if !walks.MatchString(plan) {
		return "does not walk " + index + " with the workspace (and the filter) in its condition"
	}
	return ""
}
