package e2e_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/membership-api/controlplane/gen"
	"github.com/membership-api/controlplane/store"
)

// auditToken is an admin's token for the audit log and webhooks.
func (f *fixture) auditToken(sub, email string) string {
	return f.token(sub, email, "audit:read", "webhooks:read", "webhooks:write")
}

// auditEvents reads GET /v0/audit with query q as admin (every answer
// validated against the YAML).
func (f *fixture) auditEvents(t *testing.T, q string) ([]gen.AuditEvent, *http.Response) {
	t.Helper()
	resp, body := f.do(t, "GET", "/v0/audit?"+q, f.bearer(f.auditToken(f.adminSub, f.adminEmail)), "")
	if resp.StatusCode != 200 {
		t.Fatalf("GET /v0/audit?%s: %d %s", q, resp.StatusCode, body)
	}
	var events []gen.AuditEvent
	if err := json.Unmarshal(body, &events); err != nil {
		t.Fatal(err)
	}
	return events, resp
}

// TestAudit_EveryLifecycleAction: each change made over the API appends
// exactly its event (action, target, actor and its kind, request ID, the
// changed fields), newest first; a refused change appends none.
func TestAudit_EveryLifecycleAction(t *testing.T) {
	t.Parallel()
	parallelDialects(t, func(t *testing.T, dialect string) {
		f := newTenant(t, dialect)
		admin := f.bearer(f.userToken(f.adminSub, f.adminEmail))
		key := f.bearer(f.adminKey)
		carol := f.bearer(f.userToken(f.uniq("u-carol"), "carol@example.com"))
		erin := f.bearer(f.userToken(f.uniq("u-erin"), "erin@example.com"))
		member := f.bearer(f.userToken(f.memberSub, f.memberEmail))
		wsAdmin := f.bearer(f.token(f.adminSub, f.adminEmail, "workspaces:update"))

		// What the fixture's CLI did: the workspace and the API keys, by the CLI.
		events, _ := f.auditEvents(t, "limit=1000")
		counts := map[string]int{}
		for _, e := range events {
			if e.Actor.Kind != gen.AuditActorKindCli || e.Workspace != f.ws || e.RequestId != nil {
				t.Errorf("fixture event %+v: want the CLI's, in acme, without request ID", e)
			}
			counts[string(e.Action)]++
		}
		if counts["workspace.created"] != 1 || counts["api_key.created"] != 3 || counts["api_key.revoked"] != 1 || len(events) != 5 {
			t.Errorf("fixture events: got %v, want the workspace, 3 keys created and 1 revoked", counts)
		}
		last := events[0].Id

		steps := []struct {
			name, method, path string
			header             http.Header
			body               string
			action, target     string
			actor              string
			kind               gen.AuditActorKind
			before, after      map[string]any
		}{
			{"Invite", "POST", "/v0/users", admin, `{"email":"carol@example.com"}`, "invitation.created", "carol@example.com", f.adminSub, gen.AuditActorKindUser, nil, map[string]any{"role": "member"}},
			{"Reinvite", "POST", "/v0/users", key, `{"email":"carol@example.com"}`, "invitation.refreshed", "carol@example.com", f.adminSub, gen.AuditActorKindApiKey, nil, map[string]any{"role": "member"}},
			{"InvitationRole", "PUT", "/v0/users/carol@example.com", admin, `{"role":"admin"}`, "invitation.role_changed", "carol@example.com", f.adminSub, gen.AuditActorKindUser, map[string]any{"role": "member"}, map[string]any{"role": "admin"}},
			{"Accept", "POST", "/v0/workspaces/" + f.ws + "/join", carol, "", "invitation.accepted", "carol@example.com", f.uniq("u-carol"), gen.AuditActorKindUser, map[string]any{"status": "pending"}, map[string]any{"status": "accepted", "sub": f.uniq("u-carol"), "role": "admin"}},
			{"MemberRole", "PUT", "/v0/users/" + f.uniq("u-carol"), key, `{"role":"member"}`, "member.role_changed", f.uniq("u-carol"), f.adminSub, gen.AuditActorKindApiKey, map[string]any{"role": "admin"}, map[string]any{"role": "member"}},
			{"Remove", "DELETE", "/v0/users/" + f.uniq("u-carol"), admin, "", "member.removed", f.uniq("u-carol"), f.adminSub, gen.AuditActorKindUser, map[string]any{"role": "member", "email": "carol@example.com"}, nil},
			{"InviteDave", "POST", "/v0/users", admin, `{"email":"dave@example.com"}`, "invitation.created", "dave@example.com", f.adminSub, gen.AuditActorKindUser, nil, map[string]any{"role": "member"}},
			{"Revoke", "DELETE", "/v0/users/dave@example.com", admin, "", "invitation.revoked", "dave@example.com", f.adminSub, gen.AuditActorKindUser, map[string]any{"status": "pending"}, map[string]any{"status": "revoked"}},
			{"InviteErin", "POST", "/v0/users", admin, `{"email":"erin@example.com"}`, "invitation.created", "erin@example.com", f.adminSub, gen.AuditActorKindUser, nil, map[string]any{"role": "member"}},
			{"Decline", "POST", "/v0/workspaces/" + f.ws + "/decline", erin, "", "invitation.declined", "erin@example.com", f.uniq("u-erin"), gen.AuditActorKindUser, map[string]any{"status": "pending"}, map[string]any{"status": "declined"}},
			{"Leave", "DELETE", "/v0/workspaces/" + f.ws + "/leave", member, "", "member.left", f.memberSub, f.memberSub, gen.AuditActorKindUser, map[string]any{"role": "member", "email": f.memberEmail}, nil},
			{"Rename", "PUT", "/v0/workspaces/" + f.ws, wsAdmin, `{"displayName":"Acme Corp"}`, "workspace.updated", f.ws, f.adminSub, gen.AuditActorKindUser, map[string]any{"displayName": "Acme"}, map[string]any{"displayName": "Acme Corp"}},
		}
		for _, s := range steps {
			resp, body := f.do(t, s.method, s.path, s.header, s.body)
			if resp.StatusCode != 200 {
				t.Fatalf("%s: %d %s", s.name, resp.StatusCode, body)
			}
			events, _ := f.auditEvents(t, "limit=10")
			var fresh []gen.AuditEvent
			for _, e := range events {
				if e.Id == last {
					break
				}
				fresh = append(fresh, e)
			}
			if len(fresh) != 1 {
				t.Fatalf("%s: %d new events %+v, want exactly one", s.name, len(fresh), fresh)
			}
			e := fresh[0]
			last = e.Id
			if string(e.Action) != s.action || e.Target.Id != s.target || e.Actor.Sub != s.actor || e.Actor.Kind != s.kind ||
				e.Workspace != f.ws || deref(e.RequestId) != resp.Header.Get("X-Request-Id") {
				t.Errorf("%s: got %+v (request %s), want %s on %s by %s (%s)", s.name, e, resp.Header.Get("X-Request-Id"), s.action, s.target, s.kind, s.actor)
			}
			if time.Since(e.Time) > time.Minute || time.Until(e.Time) > time.Second {
				t.Errorf("%s: time %v is not now", s.name, e.Time)
			}
			checkFields(t, s.name+" before", e.Before, s.before)
			checkFields(t, s.name+" after", e.After, s.after)
		}

		// Refused changes append nothing (nor change any other row).
		f.checkBadInputs(t, []badInput{
			{"LastAdmin", "DELETE", "/v0/users/" + f.adminSub, admin, "", 409},
			{"AlreadyMember", "POST", "/v0/users", admin, `{"email":"` + f.adminEmail + `"}`, 409},
			{"NotAdmin", "PUT", "/v0/workspaces/" + f.ws, f.bearer(f.token(f.uniq("u-x"), "x@x.test", "workspaces:update")), `{"displayName":"X"}`, 404},
		})

		// Deleting a workspace: its event stays, readable from the store (its
		// admins can no longer ask the API for a workspace that is gone).
		st := f.store()
		membership, err := st.Membership(context.Background(), f.otherWS, f.otherSub)
		if err != nil {
			t.Fatal(err)
		}
		otherID := membership.Workspace.ID
		resp, body := f.do(t, "DELETE", "/v0/workspaces/"+f.otherWS, f.bearer(f.token(f.otherSub, f.otherEmail, "workspaces:delete")), "")
		if resp.StatusCode != 200 {
			t.Fatalf("delete other: %d %s", resp.StatusCode, body)
		}
		evs, err := st.ListAudit(context.Background(), store.AuditFilter{WorkspaceID: otherID, Action: store.ActionWorkspaceDeleted, Limit: 5})
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) != 1 || evs[0].Workspace != f.otherWS || evs[0].ActorSub != f.otherSub || evs[0].RequestID != resp.Header.Get("X-Request-Id") {
			t.Errorf("workspace.deleted events of other: got %+v, want one by its admin with the request's ID", evs)
		}
	})
}

// checkFields: every field wanted is in got with that value (times are
// only checked to be there).
func checkFields(t *testing.T, what string, got *map[string]any, want map[string]any) {
	t.Helper()
	if want == nil {
		if got != nil {
			t.Errorf("%s: got %v, want none", what, *got)
		}
		return
	}
	if got == nil {
		t.Errorf("%s: none, want %v", what, want)
		return
	}
	for k, v := range want {
		if (*got)[k] != v {
			t.Errorf("%s: %s = %v, want %v (all: %v)", what, k, (*got)[k], v, *got)
		}
	}
	for k, v := range *got {
		if strings.Contains(strings.ToLower(k), "secret") || strings.Contains(strings.ToLower(k), "hash") {
			t.Errorf("%s: %s = %v: no secret belongs in the audit log", what, k, v)
		}
	}
}

// TestAudit_ListFiltersAndPages: the filters (action, actor, time range),
// pages through the Link header with the same filters, and the refusals:
// a member (403), another workspace (404), a bad parameter or a cursor made
// for other filters (400).
func TestAudit_ListFiltersAndPages(t *testing.T) {
	t.Parallel()
	f := newTenant(t, "sqlite")
	admin := f.bearer(f.userToken(f.adminSub, f.adminEmail))
	start := time.Now().UTC()
	for _, email := range []string{"a@example.com", "b@example.com", "c@example.com", "d@example.com", "e@example.com"} {
		if resp, body := f.do(t, "POST", "/v0/users", admin, `{"email":"`+email+`"}`); resp.StatusCode != 200 {
			t.Fatalf("invite: %d %s", resp.StatusCode, body)
		}
	}
	if resp, body := f.do(t, "POST", "/v0/users", f.bearer(f.memberKey), `{"email":"x@example.com"}`); resp.StatusCode != 403 {
		t.Fatalf("member invite: %d %s", resp.StatusCode, body)
	}

	// Filtered by action and actor, two at a time, following Link.
	var emails []string
	q := "action=invitation.created&actor=" + f.adminSub + "&limit=2&since=" + url.QueryEscape(start.Format(time.RFC3339Nano))
	pages := 0
	for q != "" {
		events, resp := f.auditEvents(t, q)
		pages++
		for _, e := range events {
			if e.Action != "invitation.created" || e.Actor.Sub != f.adminSub {
				t.Errorf("filtered list holds %+v", e)
			}
			emails = append(emails, e.Target.Id)
		}
		q = ""
		if link := resp.Header.Get("Link"); link != "" {
			u, err := url.Parse(strings.TrimSuffix(strings.TrimPrefix(link, "<"), `>; rel="next"`))
			if err != nil || u.Path != "/v0/audit" || u.Query().Get("action") != "invitation.created" {
				t.Fatalf("Link %q: want the audit list with the same filters", link)
			}
			q = u.RawQuery
		}
	}
	if strings.Join(emails, " ") != "e@example.com d@example.com c@example.com b@example.com a@example.com" || pages != 3 {
		t.Errorf("pages %d, events %v: want the five invitations newest first in 3 pages", pages, emails)
	}
	if events, _ := f.auditEvents(t, "until="+url.QueryEscape(start.Format(time.RFC3339Nano))); len(events) != 5 {
		t.Errorf("until the invites: %d events, want the fixture's 5", len(events))
	}
	if events, _ := f.auditEvents(t, "actor=nobody"); len(events) != 0 {
		t.Errorf("actor nobody: %d events", len(events))
	}

	_, resp := f.auditEvents(t, "limit=1")
	link := resp.Header.Get("Link")
	cursor := link[strings.Index(link, "cursor=")+len("cursor=") : strings.Index(link, ">")]
	f.checkBadInputs(t, []badInput{
		{"CursorOtherFilters", "GET", "/v0/audit?limit=1&action=member.left&cursor=" + cursor, f.bearer(f.auditToken(f.adminSub, "")), "", 400},
		{"BadSince", "GET", "/v0/audit?since=yesterday", f.bearer(f.auditToken(f.adminSub, "")), "", 400},
		{"NoWorkspace", "GET", "/v0/audit", with(f.bearer(f.auditToken(f.adminSub, "")), "X-Blaxel-Workspace", ""), "", 400},
		{"Member", "GET", "/v0/audit", f.bearer(f.auditToken(f.memberSub, "")), "", 403},
		{"MemberKey", "GET", "/v0/audit", f.bearer(f.memberKey), "", 403},
		{"OtherWorkspace", "GET", "/v0/audit", with(f.bearer(f.auditToken(f.adminSub, "")), "X-Blaxel-Workspace", f.otherWS), "", 404},
	})
}

// TestAudit_Retention: serve --audit-retention prunes events older than it
// at start, and keeps the newer ones.
func TestAudit_Retention(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "sqlite")
	mustCLI(t, e.args("workspace", "create", "acme", "--admin-sub", "u-admin", "--admin-email", "admin@acme.test")...)
	st := e.store()
	before, err := st.ListAudit(context.Background(), store.AuditFilter{WorkspaceID: 1, Limit: 10})
	if err != nil || len(before) != 1 {
		t.Fatalf("before: %v %v", before, err)
	}
	time.Sleep(1100 * time.Millisecond)
	s := e.start("--audit-retention", "1s")
	deadline := time.Now().Add(30 * time.Second)
	for {
		after, err := st.ListAudit(context.Background(), store.AuditFilter{WorkspaceID: 1, Limit: 10})
		if err != nil {
			t.Fatal(err)
		}
		if len(after) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the event older than the retention is still there:\n%s", s.logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !strings.Contains(s.logs.String(), "pruned events") {
		t.Errorf("no log line says what was pruned:\n%s", s.logs.String())
	}
}

// TestAudit_ServiceAccounts: a service account's creation, change, keys and
// deletion are audited (never its secret), and what it does is audited
// with actor kind service_account, by its token as by its API key.
func TestAudit_ServiceAccounts(t *testing.T) {
	t.Parallel()
	parallelDialects(t, func(t *testing.T, dialect string) {
		f := newTenant(t, dialect)
		admin := f.bearer(f.token(f.adminSub, f.adminEmail, "admin"))
		sa := f.oauthClient(t, "bot", "admin")
		resp, body := f.do(t, "POST", "/v0/service_accounts/"+sa.clientID+"/api_keys", admin, `{"name":"ci","expires_in":"1d"}`)
		var key gen.ApiKey
		if resp.StatusCode != 200 || json.Unmarshal(body, &key) != nil {
			t.Fatalf("create key: %d %s", resp.StatusCode, body)
		}
		if resp, body := f.do(t, "POST", "/v0/users", f.bearer(f.mustToken(t, sa, "")), `{"email":"by-token@example.com"}`); resp.StatusCode != 200 {
			t.Fatalf("invite by the account's token: %d %s", resp.StatusCode, body)
		}
		if resp, body := f.do(t, "POST", "/v0/users", with(f.bearer(deref(key.ApiKey)), "X-Blaxel-Workspace", ""), `{"email":"by-key@example.com"}`); resp.StatusCode != 200 {
			t.Fatalf("invite by the account's key: %d %s", resp.StatusCode, body)
		}
		if resp, body := f.do(t, "PUT", "/v0/service_accounts/"+sa.clientID, admin, `{"description":"deploys"}`); resp.StatusCode != 200 {
			t.Fatalf("update: %d %s", resp.StatusCode, body)
		}
		if resp, body := f.do(t, "DELETE", "/v0/service_accounts/"+sa.clientID+"/api_keys/"+deref(key.Id), admin, ""); resp.StatusCode != 200 {
			t.Fatalf("revoke key: %d %s", resp.StatusCode, body)
		}
		if resp, body := f.do(t, "DELETE", "/v0/service_accounts/"+sa.clientID, admin, ""); resp.StatusCode != 200 {
			t.Fatalf("delete: %d %s", resp.StatusCode, body)
		}
		events, _ := f.auditEvents(t, "limit=7")
		want := []struct {
			action, target string
			kind           gen.AuditActorKind
			actor          string
		}{
			{"service_account.deleted", sa.clientID, gen.AuditActorKindUser, f.adminSub},
			{"api_key.revoked", deref(key.ApiKey)[:9], gen.AuditActorKindUser, f.adminSub},
			{"service_account.updated", sa.clientID, gen.AuditActorKindUser, f.adminSub},
			{"invitation.created", "by-key@example.com", gen.AuditActorKindServiceAccount, sa.clientID},
			{"invitation.created", "by-token@example.com", gen.AuditActorKindServiceAccount, sa.clientID},
			{"api_key.created", deref(key.ApiKey)[:9], gen.AuditActorKindUser, f.adminSub},
			{"service_account.created", sa.clientID, gen.AuditActorKindUser, f.adminSub},
		}
		if len(events) != len(want) {
			t.Fatalf("%d events, want %d: %+v", len(events), len(want), events)
		}
		for i, w := range want {
			e := events[i]
			if string(e.Action) != w.action || e.Target.Id != w.target || e.Actor.Kind != w.kind || e.Actor.Sub != w.actor {
				t.Errorf("event %d: got %s on %s by %s %s, want %s on %s by %s %s", i, e.Action, e.Target.Id, e.Actor.Kind, e.Actor.Sub, w.action, w.target, w.kind, w.actor)
			}
			raw, _ := json.Marshal(e)
			if strings.Contains(string(raw), sa.secret) || strings.Contains(string(raw), deref(key.ApiKey)) {
				t.Errorf("event %d carries a secret: %s", i, raw)
			}
		}
		checkFields(t, "updated before", events[2].Before, map[string]any{"description": ""})
		checkFields(t, "updated after", events[2].After, map[string]any{"description": "deploys"})
	})
}

// TestAudit_BulkAndDomainPolicy: a bulk invite appends one event per
// invitation it makes (written by its batch), with the request's actor and
// ID; changing the email-domain policy appends its event, with the lists
// before and after.
func TestAudit_BulkAndDomainPolicy(t *testing.T) {
	t.Parallel()
	parallelDialects(t, func(t *testing.T, dialect string) {
		f := newTenant(t, dialect)
		admin := f.bearer(f.token(f.adminSub, f.adminEmail, "admin"))
		resp, body := f.do(t, "PUT", "/v0/workspaces/"+f.ws+"/email-domains", admin, `{"deny":["blocked.test"]}`)
		if resp.StatusCode != 200 {
			t.Fatalf("policy: %d %s", resp.StatusCode, body)
		}
		events, _ := f.auditEvents(t, "limit=1")
		if e := events[0]; e.Action != "workspace.email_domains_updated" || e.Target.Id != f.ws || deref(e.RequestId) != resp.Header.Get("X-Request-Id") {
			t.Errorf("policy event: %+v", e)
		} else {
			if (*e.After)["deny"] == nil || fmt.Sprint((*e.After)["deny"]) != "[blocked.test]" || fmt.Sprint((*e.Before)["deny"]) != "[]" {
				t.Errorf("policy event fields: before %v after %v", *e.Before, *e.After)
			}
		}
		var emails []string
		for i := range 150 { // more than one SQLite batch statement (128 rows)
			emails = append(emails, fmt.Sprintf(`"b%d@example.com"`, i))
		}
		emails = append(emails, `"x@blocked.test"`, `"`+f.memberEmail+`"`)
		resp, body = f.do(t, "POST", "/v0/users/bulk", admin, `{"emails":[`+strings.Join(emails, ",")+`]}`)
		if resp.StatusCode != 200 {
			t.Fatalf("bulk: %d %s", resp.StatusCode, body)
		}
		events, _ = f.auditEvents(t, "action=invitation.created&limit=1000")
		seen := map[string]bool{}
		for _, e := range events {
			if deref(e.RequestId) != resp.Header.Get("X-Request-Id") || e.Actor.Sub != f.adminSub || e.Actor.Kind != gen.AuditActorKindUser || seen[e.Target.Id] {
				t.Errorf("bulk event %+v", e)
			}
			seen[e.Target.Id] = true
		}
		if len(events) != 150 || seen["x@blocked.test"] || seen[f.memberEmail] {
			t.Errorf("%d invitation.created events, want one per invited row (150), none for the refused rows", len(events))
		}
	})
}
