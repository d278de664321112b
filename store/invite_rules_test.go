package store_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/membership-api/controlplane/store"
	"github.com/membership-api/controlplane/store/storetest"
)

// TestInviteRules runs every case of the invite rules that exist twice (in
// the batch statement's SQL and in the slow path's Go: invite_rules.go)
// through both paths on both databases, each on a workspace of its own set
// up alike, and checks that they agree with each other, with the Go twins
// of the SQL rules, and with the expected verdict:
//
//   - "created" / "refreshed": the statement settles the invite, and its
//     event's action (the SQL's, on PostgreSQL) is the slow path's and
//     inviteAction's for the row;
//   - "not_admin", "already_member", "domain_not_allowed": the statement
//     leaves the invite and the slow path refuses it so (for the domain,
//     EmailDomainPolicy.DomainAllowed says no too);
//   - "stale": the statement leaves the invite (its pending invitation has
//     expired), inviteStale says so, and the slow path moves it to history
//     and creates a fresh one.
func TestInviteRules(t *testing.T) {
	type pending struct {
		role string
		age  time.Duration // how long before the invite it was made, with a TTL of an hour
	}
	cases := []struct {
		name    string
		caller  string // "plain": a member who is not an admin; empty: the workspace's admin
		member  bool   // the email is already a member's
		policy  store.EmailDomainPolicy
		pending *pending
		email   string
		role    string
		want    string
		// mayLeave: the batch may fail and leave a case the slow path
		// settles (PostgreSQL's events know the after text of the API's
		// roles and of the batch's own only).
		mayLeave bool
	}{
		{name: "caller not an admin", caller: "plain", email: "a@example.com", want: "not_admin"},
		{name: "email of a member", member: true, email: "a@example.com", want: "already_member"},
		{name: "email of a member, domain refused", member: true, policy: store.EmailDomainPolicy{Deny: []string{"example.com"}}, email: "a@example.com", want: "domain_not_allowed"},
		{name: "no policy", email: "a@example.com", want: "created"},
		{name: "allowed domain", policy: store.EmailDomainPolicy{Allow: []string{"example.com"}}, email: "a@example.com", want: "created"},
		{name: "allowed subdomain", policy: store.EmailDomainPolicy{Allow: []string{"example.com"}}, email: "a@eu.example.com", want: "created"},
		{name: "suffix not a subdomain", policy: store.EmailDomainPolicy{Allow: []string{"example.com"}}, email: "a@notexample.com", want: "domain_not_allowed"},
		{name: "domain as a prefix", policy: store.EmailDomainPolicy{Allow: []string{"example.com"}}, email: "a@example.com.evil.test", want: "domain_not_allowed"},
		{name: "not on the allowlist", policy: store.EmailDomainPolicy{Allow: []string{"example.com"}}, email: "a@other.test", want: "domain_not_allowed"},
		{name: "deny wins over allow", policy: store.EmailDomainPolicy{Allow: []string{"example.com"}, Deny: []string{"no.example.com"}}, email: "a@x.no.example.com", want: "domain_not_allowed"},
		{name: "denylist only, other domain", policy: store.EmailDomainPolicy{Deny: []string{"spam.test"}}, email: "a@example.com", want: "created"},
		{name: "denylist only, denied domain", policy: store.EmailDomainPolicy{Deny: []string{"spam.test"}}, email: "a@spam.test", want: "domain_not_allowed"},
		{name: "admin role", email: "a@example.com", role: store.RoleAdmin, want: "created"},
		{name: "pending, fresh", pending: &pending{role: store.RoleMember, age: time.Minute}, email: "a@example.com", want: "refreshed"},
		{name: "pending keeps its role", pending: &pending{role: store.RoleAdmin, age: time.Minute}, email: "a@example.com", role: store.RoleMember, want: "refreshed"},
		{name: "pending, a moment before expiry", pending: &pending{role: store.RoleMember, age: time.Hour - time.Microsecond}, email: "a@example.com", want: "refreshed"},
		{name: "pending, expiring now", pending: &pending{role: store.RoleMember, age: time.Hour}, email: "a@example.com", want: "stale"},
		{name: "pending, expired", pending: &pending{role: store.RoleAdmin, age: 2 * time.Hour}, email: "a@example.com", want: "stale"},
		{name: "pending of a role the API does not give", pending: &pending{role: "owner", age: time.Minute}, email: "a@example.com", want: "refreshed", mayLeave: true},
		{name: "pending under a policy refusing it now", policy: store.EmailDomainPolicy{Deny: []string{"example.com"}},
			pending: &pending{role: store.RoleMember, age: time.Minute}, email: "a@example.com", want: "domain_not_allowed"},
	}
	eachDialect(t, func(t *testing.T, st *store.Store, clk *clock) {
		ctx := store.WithActor(context.Background(), store.Actor{Kind: store.ActorUser, Sub: "someone", RequestID: "req-1"})
		for i, tc := range cases {
			// One workspace per path, set up alike at the same times.
			var ws [2]store.Workspace
			var old [2]store.Invitation
			for path := range ws {
				name := fmt.Sprintf("rules-%d-%d", i, path)
				ws[path] = mustWorkspace(t, st, name)
				if tc.pending != nil {
					inv, err := st.Invite(ctx, store.InviteParams{Workspace: name, Caller: "admin-" + name, Email: tc.email, Role: tc.pending.role, TTL: time.Hour})
					if err != nil {
						t.Fatalf("%s: pending invitation: %v", tc.name, err)
					}
					old[path] = inv
				}
				if _, err := storetest.AddMember(ctx, st, name, "admin-"+name, storetest.NewMember{Sub: "plain", Email: "plain@member.test", Role: store.RoleMember}); err != nil {
					t.Fatalf("%s: member: %v", tc.name, err)
				}
				if tc.member {
					if _, err := storetest.AddMember(ctx, st, name, "admin-"+name, storetest.NewMember{Sub: "sub-" + tc.email, Email: tc.email, Role: store.RoleMember}); err != nil {
						t.Fatalf("%s: member: %v", tc.name, err)
					}
				}
				if _, err := st.SetDomainPolicy(ctx, name, "admin-"+name, tc.policy); err != nil {
					t.Fatalf("%s: policy: %v", tc.name, err)
				}
			}
			if tc.pending != nil {
				clk.Advance(tc.pending.age)
			}
			now := clk.Now()
			params := func(path int) store.InviteParams {
				caller := "admin-" + ws[path].Name
				if tc.caller != "" {
					caller = tc.caller
				}
				return store.InviteParams{Workspace: ws[path].Name, Caller: caller, Email: tc.email, Role: tc.role, TTL: time.Hour}
			}

			found, batchInv, err := st.InviteByBatchForTest(ctx, params(0))
			if err != nil && !tc.mayLeave {
				t.Fatalf("%s: batch: %v", tc.name, err)
			}
			batch := "left to the slow path"
			if found {
				batch = lastActions(t, st, ws[0], 1)[0]
				if goAction := store.InviteActionForTest(batchInv); goAction != batch {
					t.Errorf("%s: the batch's event is %s, inviteAction of its row %s", tc.name, batch, goAction)
				}
			}

			verdict := map[string]string{store.ActionInvitationCreated: "created", store.ActionInvitationRefreshed: "refreshed"}
			slowInv, err := st.InviteBySlowPathForTest(ctx, params(1))
			var slow string
			var se *store.Error
			switch {
			case errors.As(err, &se) && se.Code != "":
				slow = se.Code // not_admin, already_member, domain_not_allowed
			case err != nil:
				t.Fatalf("%s: slow path: %v", tc.name, err)
			default:
				actions := lastActions(t, st, ws[1], 2)
				slow = verdict[actions[0]]
				if len(actions) > 1 && actions[1] == store.ActionInvitationExpired {
					if actions[0] != store.ActionInvitationCreated {
						t.Errorf("%s: after expiring, the slow path wrote %s, want %s", tc.name, actions[0], store.ActionInvitationCreated)
					}
					slow = "stale"
				}
			}

			switch {
			case found && verdict[batch] != slow:
				t.Errorf("%s: the batch wrote %s, the slow path decided %s", tc.name, batch, slow)
			case !found && (slow == "created" || slow == "refreshed") && !tc.mayLeave:
				t.Errorf("%s: the batch left the invite, the slow path decided %s", tc.name, slow)
			}
			if slow != tc.want {
				t.Errorf("%s: decided %s, want %s", tc.name, slow, tc.want)
			}
			if allowed := tc.policy.DomainAllowed(tc.email); allowed != (slow != store.CodeDomainNotAllowed) {
				t.Errorf("%s: DomainAllowed = %v, the paths decided %s", tc.name, allowed, slow)
			}
			if tc.pending != nil && slow != store.CodeDomainNotAllowed {
				if stale := store.InviteStaleForTest(old[1], now); stale != (slow == "stale") {
					t.Errorf("%s: inviteStale = %v, the paths decided %s", tc.name, stale, slow)
				}
			}
			if found {
				// The rows and events the two paths wrote are the same.
				if batchInv.Role != slowInv.Role || !batchInv.ExpiresAt.Equal(slowInv.ExpiresAt) || batchInv.Status != slowInv.Status {
					t.Errorf("%s: batch wrote %+v, slow path %+v", tc.name, batchInv, slowInv)
				}
				be, se := lastEvent(t, st, ws[0]), lastEvent(t, st, ws[1])
				if be.After != se.After || be.After != store.InviteAfterForTest(slowInv.Role, slowInv.ExpiresAt) ||
					be.ActorKind != se.ActorKind || be.ActorSub != se.ActorSub || be.RequestID != se.RequestID ||
					be.TargetType != se.TargetType || be.TargetID != se.TargetID || be.Before != se.Before || !be.At.Equal(se.At) {
					t.Errorf("%s: events differ:\nbatch %+v\nslow  %+v", tc.name, be, se)
				}
			}
			clk.Advance(time.Minute)
		}
	})
}

// lastActions returns the actions of ws's n newest audit events, newest first.
func lastActions(t *testing.T, st *store.Store, ws store.Workspace, n int) []string {
	t.Helper()
	events, err := st.ListAudit(context.Background(), store.AuditFilter{WorkspaceID: ws.ID, Limit: n})
	if err != nil || len(events) == 0 {
		t.Fatalf("audit of %s: %v (%d events)", ws.Name, err, len(events))
	}
	actions := make([]string, len(events))
	for i, e := range events {
		actions[i] = e.Action
	}
	return actions
}

// lastEvent returns ws's newest audit event.
func lastEvent(t *testing.T, st *store.Store, ws store.Workspace) store.AuditEvent {
	t.Helper()
	events, err := st.ListAudit(context.Background(), store.AuditFilter{WorkspaceID: ws.ID, Limit: 1})
	if err != nil || len(events) != 1 {
		t.Fatalf("audit of %s: %v", ws.Name, err)
	}
	return events[0]
}
