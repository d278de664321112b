package store_test

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/membership-api/controlplane/store"
	"github.com/membership-api/controlplane/store/storetest"
)

// The plan tests catch, without timing anything, a per-request statement
// whose cost grows with the workspace: one that reads a whole table, or a
// whole workspace's members or invitations when it wants one of them
// (an email check that could not use the partial index on member
// email read all 20,000 members of a workspace per invite).

// tables are the tables that grow with use; a statement may read them only
// through an index lookup.
var tables = []string{"workspaces", "members", "invitations", "api_keys", "outbox_messages", "email_domain_rules", "idempotency_keys",
	"webhook_messages"}

// boundedByWorkspace are the indexes whose workspace_id range is small
// whatever the workspace's size (idx_members_admins holds its admins only;
// a workspace has at most 2 × store.MaxDomainRules email-domain rules, and
// the invite statement's "any rule?" check reads one of them; at most
// store.MaxWebhooks webhook endpoints).
var boundedByWorkspace = []string{"idx_members_admins", "sqlite_autoindex_email_domain_rules_1", "email_domain_rules_pkey", "idx_webhook_endpoints_workspace"}

var (
	// SQLite names tables by their alias in plans; what is not a table here
	// is the invites' VALUES list (j), a constant row, or the webhook
	// claim's subqueries: the endpoints it walked (eps, a recursive CTE),
	// the pending test events counted, and lists of ids given as one
	// parameter (json_each, the only virtual table: idsIn, the claim's
	// endpoints).
	sqliteScan     = regexp.MustCompile(`^SCAN (\S+)`)
	sqliteNotTable = regexp.MustCompile(`^SCAN (j|eps|pending_tests|\(subquery-\d+\)|\d+-ROW VALUES CLAUSE|CONSTANT ROW|\S+ VIRTUAL TABLE INDEX \d+:)$`)
	sqliteSearch   = regexp.MustCompile(`^SEARCH \S+ USING (?:COVERING )?INDEX (\S+) \((.*)\)$`)
	pgNode         = regexp.MustCompile(`(Seq Scan|Index Scan|Index Only Scan|Bitmap Index Scan) (?:using (\S+) )?on (\S+)`)
	pgIndexCond    = regexp.MustCompile(`^\s*Index Cond: (.*)$`)
)

// planProblems returns what is wrong with plan for a per-request statement
// (nothing when every table is read through a selective index lookup).
// limited is whether the statement has a LIMIT: then it must not sort, since
// a sort reads every matching row before the limit applies (an index must
// give the order); other statements may sort what they found (the invite
// batch orders its own rows, the claim reads back the ids it claimed).
func planProblems(dialect, plan string, limited bool) []string {
	var problems []string
	lines := strings.Split(plan, "\n")
	for i, line := range lines {
		switch dialect {
		case "sqlite":
			if m := sqliteScan.FindStringSubmatch(line); m != nil && !sqliteNotTable.MatchString(line) {
				problems = append(problems, "reads a whole table: "+line)
			}
			if m := sqliteSearch.FindStringSubmatch(line); m != nil && m[2] == "workspace_id=?" && !contains(boundedByWorkspace, m[1]) {
				problems = append(problems, "reads a whole workspace: "+line)
			}
			if limited && strings.Contains(line, "TEMP B-TREE") {
				problems = append(problems, "sorts: "+line)
			}
		case "postgres":
			if limited && strings.Contains(line, "Sort") {
				problems = append(problems, "sorts: "+line)
			}
			m := pgNode.FindStringSubmatch(line)
			if m == nil || !contains(tables, m[3]) {
				continue
			}
			if m[1] == "Seq Scan" {
				problems = append(problems, "reads a whole table: "+line)
				continue
			}
			cond := ""
			if i+1 < len(lines) {
				if c := pgIndexCond.FindStringSubmatch(lines[i+1]); c != nil {
					cond = c[1]
				}
			}
			// The invite batch may hash the workspaces table to join its
			// rows by name: PostgreSQL prices unnest at 10 rows and prefers
			// reading a few thousand workspaces once to 10 lookups. That
			// grows with the number of workspaces, not with any workspace,
			// and it turns to lookups as the table grows.
			hashedWorkspaces := m[3] == "workspaces" && i > 0 && strings.Contains(lines[i-1], "->  Hash  ")
			switch {
			case cond == "" && !hashedWorkspaces:
				problems = append(problems, "walks a whole index: "+line)
			case !strings.Contains(cond, " AND ") && strings.Contains(cond, "workspace_id = ") && !contains(boundedByWorkspace, m[2]):
				problems = append(problems, "reads a whole workspace: "+line+" "+cond)
			}
		}
	}
	return problems
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// TestPlans_PerRequestStatements runs every per-request operation of the
// store, captures each statement it sends through GORM, adds the batch
// statements sent past GORM, and checks each one's plan. The workspace has a
// service account (empty email) and seeded members, as real ones do.
func TestPlans_PerRequestStatements(t *testing.T) {
	eachDialect(t, func(t *testing.T, st *store.Store, clk *clock) {
		ctx := context.Background()
		ws := mustWorkspace(t, st, "acme")
		// PostgreSQL plans from statistics, and for tables of a row or two
		// it rightly prefers reading them whole (or walking a whole index,
		// with sequential scans off); where workspaces average two members,
		// reading a workspace's members is as cheap as an email lookup for
		// it, so it may pick either. The database therefore gets a realistic
		// shape, analysed: 400 other workspaces of 10 members (one admin)
		// and 2,000 members in this one. Sequential scans are off
		// (ExplainForTest) for the tables still small (keys, outbox).
		seedMembers(t, st, ws.ID, 2000)
		err := st.ExecForTest(ctx, `
INSERT INTO workspaces (name, display_name, created_at, updated_at, created_by, updated_by)
WITH RECURSIVE seq(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM seq WHERE i < 2000)
SELECT 'ws-' || i, '', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, 'seed', 'seed' FROM seq`)
		if err == nil {
			err = st.ExecForTest(ctx, `
INSERT INTO members (workspace_id, sub, email, role, source, created_at, updated_at, created_by, updated_by)
WITH RECURSIVE seq(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM seq WHERE i < 5)
SELECT w.id, 'sub-' || seq.i, 'm' || seq.i || '@' || w.name || '.test', CASE WHEN seq.i = 1 THEN 'admin' ELSE 'member' END,
       '', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, 'seed', 'seed'
FROM workspaces w CROSS JOIN seq WHERE w.name LIKE 'ws-%'`)
		}
		if err == nil && st.Dialect() == "postgres" {
			err = st.ExecForTest(ctx, "ANALYZE")
		}
		if err != nil {
			t.Fatalf("seed: %v", err)
		}
		// The webhook messages' realistic shape: mostly delivered ones (of
		// another workspace's endpoint).
		seedHook := "https://hooks.ws-1.test/"
		seedEP, err := st.CreateWebhook(ctx, "ws-1", "sub-1", store.WebhookInput{URL: &seedHook})
		if err == nil {
			err = st.ExecForTest(ctx, fmt.Sprintf(`
INSERT INTO webhook_messages (webhook_id, endpoint_id, event_type, payload, status, attempts, next_attempt_at, claim_token, last_error, created_at, updated_at)
WITH RECURSIVE seq(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM seq WHERE i < 5000)
SELECT 'msg_seed' || i, %d, 'invitation.created', '', 'delivered', 1, CURRENT_TIMESTAMP, '', '', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP FROM seq`, seedEP.ID))
		}
		if err == nil && st.Dialect() == "postgres" {
			err = st.ExecForTest(ctx, "ANALYZE webhook_messages")
		}
		if err != nil {
			t.Fatalf("seed webhook messages: %v", err)
		}
		captured := st.CaptureStatementsForTest()
		must := func(what string, err error) {
			t.Helper()
			if err != nil {
				t.Fatalf("%s: %v", what, err)
			}
		}
		invite := func(email string, ttl time.Duration) error {
			_, err := st.Invite(ctx, store.InviteParams{Workspace: "acme", Caller: "admin-acme", Email: email, TTL: ttl})
			return err
		}
		_, err = storetest.AddMember(ctx, st, "acme", "admin-acme", storetest.NewMember{Sub: "robot", Role: store.RoleMember})
		must("add service account", err)
		_, err = storetest.AddMember(ctx, st, "acme", "admin-acme", storetest.NewMember{Sub: "bob", Email: "bob@acme.test", Role: store.RoleMember})
		must("add bob", err)
		must("invite carol", invite("carol@acme.test", time.Hour))
		if err := invite("bob@acme.test", time.Hour); err == nil {
			t.Fatal("inviting a member's email: got no error")
		}
		must("invite dave", invite("dave@acme.test", time.Minute))
		clk.Advance(2 * time.Minute)
		must("re-invite dave after expiry (slow path)", invite("dave@acme.test", time.Hour))
		_, err = storetest.PendingInvitation(ctx, st, ws.Name, "carol@acme.test")
		must("pending invitation", err)
		_, err = st.Membership(ctx, "acme", "bob")
		must("membership", err)
		key, _, err := st.CreateAPIKey(ctx, "acme", "bob")
		must("create key", err)
		_, err = st.LookupAPIKey(ctx, key)
		must("look up key", err)
		_, err = st.UpdateRole(ctx, "acme", "admin-acme", "bob@acme.test", store.RoleAdmin)
		must("promote bob by email", err)
		_, err = st.UpdateRole(ctx, "acme", "admin-acme", "bob", store.RoleMember)
		must("demote bob by sub", err)
		_, err = st.UpdateRole(ctx, "acme", "admin-acme", "carol@acme.test", store.RoleAdmin)
		must("change an invitation's role", err)
		must("revoke carol's invitation", st.RemoveUser(ctx, "acme", "admin-acme", "carol@acme.test"))
		must("remove bob by email", st.RemoveUser(ctx, "acme", "admin-acme", "bob@acme.test"))
		must("invite erin", invite("erin@acme.test", time.Hour))
		_, err = st.Accept(ctx, "acme", "erin", "erin@acme.test")
		must("accept", err)
		_, err = st.Accept(ctx, "acme", "erin", "erin@acme.test")
		must("accept again", err)
		must("invite frank", invite("frank@acme.test", time.Hour))
		_, _, err = st.Decline(ctx, "acme", "frank", "frank@acme.test")
		must("decline", err)
		_, err = st.Leave(ctx, "acme", "erin")
		must("leave", err)
		key2, _, err := st.CreateAPIKey(ctx, "acme", "admin-acme")
		must("create second key", err)
		must("revoke key", st.RevokeAPIKey(ctx, "admin-acme", key2))
		items, err := st.ClaimOutbox(ctx, "token", 10, time.Minute)
		must("claim outbox", err)
		if len(items) < 2 {
			t.Fatalf("claim outbox: %d claimed, want at least 2", len(items))
		}
		must("mark sent", st.MarkOutboxSent(ctx, items[0].ID, "token"))
		must("mark sent together", st.MarkOutboxSentMany(ctx, []int64{items[0].ID, items[1].ID}, "token"))
		must("retry later", st.RetryOutbox(ctx, items[1].ID, "token", clk.Now().Add(time.Minute), "try again"))
		_, err = st.WorkspacesOf(ctx, "admin-acme")
		must("list a person's workspaces", err)
		_, err = st.WorkspaceNameTaken(ctx, "acme")
		must("check a name", err)
		renamed := "Acme Corp"
		_, err = st.UpdateWorkspace(ctx, "acme", "admin-acme", &renamed)
		must("rename", err)
		// the email-domain policy, bulk invites, idempotency keys.
		_, err = st.SetDomainPolicy(ctx, "acme", "admin-acme", store.EmailDomainPolicy{Allow: []string{"acme.test"}, Deny: []string{"no.acme.test"}})
		must("set a domain policy", err)
		_, err = st.DomainPolicy(ctx, "acme", "admin-acme")
		must("read the domain policy", err)
		must("invite under a policy", invite("grace@acme.test", time.Hour))
		if err := invite("x@no.acme.test", time.Hour); err == nil {
			t.Fatal("inviting a denied domain: got no error")
		}
		for i, r := range st.InviteMany(ctx, []store.InviteParams{
			{Workspace: "acme", Caller: "admin-acme", Email: "heidi@acme.test", TTL: time.Hour},
			{Workspace: "acme", Caller: "admin-acme", Email: "y@other.test", TTL: time.Hour},
		}) {
			if (i == 0) != (r.Err == nil) {
				t.Fatalf("bulk row %d: %v", i, r.Err)
			}
		}
		scope := store.IdempotencyScope{Workspace: "acme", Caller: "admin-acme", Key: "k"}
		claim, err := st.BeginIdempotent(ctx, scope, []byte("h"), time.Hour)
		must("claim a key", err)
		_, err = st.BeginIdempotent(ctx, scope, []byte("h"), time.Hour)
		must("find the key in use", err)
		must("record the answer", st.FinishIdempotent(ctx, claim, 200, []byte("{}")))
		other, err := st.BeginIdempotent(ctx, store.IdempotencyScope{Workspace: "acme", Caller: "admin-acme", Key: "k2"}, []byte("h"), time.Hour)
		must("claim another key", err)
		must("release a key", st.ReleaseIdempotent(ctx, other))
		clk.Advance(2 * time.Hour)
		_, err = st.BeginIdempotent(ctx, scope, []byte("h2"), time.Hour)
		must("take over an expired key", err)
		_, err = st.SweepIdempotencyKeys(ctx)
		must("sweep keys", err)
		// a workspace's webhook endpoints, read by the workspace's name.
		hook := "https://hooks.acme.test/"
		ep, err := st.CreateWebhook(ctx, "acme", "admin-acme", store.WebhookInput{URL: &hook})
		must("create a webhook endpoint", err)
		_, err = st.Webhooks(ctx, "acme")
		must("list the webhook endpoints", err)
		_, err = st.Webhook(ctx, "acme", ep.ID)
		must("read a webhook endpoint", err)
		// the webhook queue: a backlog on one endpoint, claims, outcomes
		// (delivered, and a failure that backs the endpoint off), a
		// test event.
		hook2 := "https://hooks2.acme.test/"
		ep2, err := st.CreateWebhook(ctx, "acme", "admin-acme", store.WebhookInput{URL: &hook2})
		must("create a second webhook endpoint", err)
		for i := range 30 {
			must("invite for webhooks", invite(fmt.Sprintf("hooked%d@acme.test", i), time.Hour))
		}
		claimed, err := st.ClaimWebhookQueue(ctx, store.WebhookClaim{Token: "hooks", Limit: 8, Lease: time.Minute, After: ep.ID,
			Busy: map[int64]int{ws.ID: 1}, PerWorkspace: 8})
		must("claim webhooks", err)
		if len(claimed.Items) < 2 {
			t.Fatalf("claim webhooks: %d claimed, want at least 2", len(claimed.Items))
		}
		backoff := func(int) time.Duration { return time.Minute }
		_, err = st.RecordWebhookAttempts(ctx, "hooks", []store.WebhookOutcome{
			{Item: claimed.Items[0], Result: store.WebhookResult{Outcome: store.AttemptDelivered, Started: clk.Now(), StatusCode: 204}},
			{Item: claimed.Items[1], Result: store.WebhookResult{Outcome: store.AttemptRetry, Started: clk.Now(), Error: "timed out",
				Next: clk.Now().Add(time.Minute), EndpointBackoff: backoff}},
		}, time.Hour)
		must("record webhook attempts", err)
		_, _, err = st.SendWebhookTest(ctx, "acme", "admin-acme", ep2.ID)
		must("send a test event", err)

		type stmt struct {
			sql  string
			vars []any
		}
		var stmts []stmt
		seen := map[string]bool{}
		for _, c := range captured() {
			head := strings.ToUpper(strings.Fields(c.SQL)[0])
			if seen[c.SQL] || (head != "SELECT" && head != "INSERT" && head != "UPDATE" && head != "DELETE" && head != "WITH") {
				continue // savepoints; each distinct text once
			}
			seen[c.SQL] = true
			stmts = append(stmts, stmt{c.SQL, c.Vars})
		}
		if len(stmts) < 15 {
			t.Fatalf("captured %d statements, want the whole lifecycle's (is the capture working?)", len(stmts))
		}
		for _, sql := range st.RawStatementsForTest() {
			stmts = append(stmts, stmt{sql, nil})
		}
		for _, s := range stmts {
			plan, err := st.ExplainForTest(ctx, s.sql, s.vars)
			if err != nil {
				t.Errorf("explain %s: %v", s.sql, err)
				continue
			}
			t.Logf("statement:\n%s\nplan:\n%s", s.sql, plan) // go test -v shows every plan
			// The invite checks' LIMIT 1 OFFSET 0 is a planner fence, not a limit.
			limited := strings.Contains(strings.ReplaceAll(s.sql, "LIMIT 1 OFFSET 0", ""), "LIMIT")
			if problems := planProblems(st.Dialect(), plan, limited); len(problems) > 0 {
				t.Errorf("statement:\n%s\nplan:\n%s\nproblems: %s", s.sql, plan, strings.Join(problems, "; "))
			}
		}
	})
}

// TestMigrate_DropsReplacedIndexes: a database made by a release before the
// versioned migrations (no goose_db_version) loses, when it is migrated, the
// indexes that newer ones replaced: the first three with version 1,
// idx_webhook_claim with version 3 (the fair webhook claim).
func TestMigrate_DropsReplacedIndexes(t *testing.T) {
	storetest.EachDialect(t, func(t *testing.T, dialect string) {
		t.Parallel()
		ctx := context.Background()
		// The previous release's schema: version 1's tables without its
		// bookkeeping, and the indexes it had.
		st := openUnmigrated(t, storetest.DSN(t, dialect))
		if err := st.MigrateToForTest(ctx, 1); err != nil {
			t.Fatal(err)
		}
		old := []struct {
			model      any
			name, ddl  string
			replacedBy string
		}{
			{&store.OutboxMessage{}, "idx_outbox_due", "CREATE INDEX idx_outbox_due ON outbox_messages (status, next_attempt_at)", "idx_outbox_claim"},
			{&store.APIKey{}, "idx_api_keys_workspace_id", "CREATE INDEX idx_api_keys_workspace_id ON api_keys (workspace_id)", "idx_api_keys_workspace_sub"},
			{&store.Invitation{}, "idx_invitations_email", "CREATE INDEX IF NOT EXISTS idx_invitations_email ON invitations (email)", "idx_invitations_pending_email_list"},
			{&store.WebhookMessage{}, "idx_webhook_claim", "CREATE INDEX IF NOT EXISTS idx_webhook_claim ON webhook_messages (next_attempt_at, id)", "idx_webhook_endpoint_queue"},
		}
		for _, o := range old {
			if err := st.ExecForTest(ctx, o.ddl); err != nil {
				t.Fatal(err)
			}
		}
		if err := st.ExecForTest(ctx, "DROP TABLE goose_db_version"); err != nil {
			t.Fatal(err)
		}
		if err := st.Migrate(ctx); err != nil {
			t.Fatal(err)
		}
		for _, o := range old {
			if st.HasIndexForTest(o.model, o.name) {
				t.Errorf("%s: still there after Migrate", o.name)
			}
			if !st.HasIndexForTest(o.model, o.replacedBy) {
				t.Errorf("%s: missing after Migrate", o.replacedBy)
			}
		}
	})
}
