package store_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/membership-api/controlplane/store"
)

// TestAudit_InviteBatches: concurrent invites (batched) each append
// exactly one event with their own actor and request ID, and queue a
// webhook message only in the workspace with a subscribed endpoint; a
// re-invite after expiry appends invitation.expired, then created.
func TestAudit_InviteBatches(t *testing.T) {
	eachDialect(t, func(t *testing.T, st *store.Store, clk *clock) {
		ctx := context.Background()
		hooked, quiet := mustWorkspace(t, st, "hooked"), mustWorkspace(t, st, "quiet")
		url := "https://hooks.example.com/x"
		ep, err := st.CreateWebhook(ctx, "hooked", "admin-hooked", store.WebhookInput{URL: &url, EventTypes: &[]string{store.ActionInvitationCreated}})
		if err != nil {
			t.Fatal(err)
		}
		const n = 40
		var wg sync.WaitGroup
		for i := range n {
			for _, ws := range []store.Workspace{hooked, quiet} {
				wg.Go(func() {
					actor := store.Actor{Kind: store.ActorAPIKey, Sub: "admin-" + ws.Name, RequestID: fmt.Sprintf("req-%s-%d", ws.Name, i)}
					_, err := st.Invite(store.WithActor(ctx, actor), store.InviteParams{Workspace: ws.Name, Caller: "admin-" + ws.Name,
						Email: fmt.Sprintf("u%d@example.com", i), TTL: time.Hour})
					if err != nil {
						t.Error(err)
					}
				})
			}
		}
		wg.Wait()
		for _, ws := range []store.Workspace{hooked, quiet} {
			events, err := st.ListAudit(ctx, store.AuditFilter{WorkspaceID: ws.ID, Action: store.ActionInvitationCreated, Limit: 1000})
			if err != nil {
				t.Fatal(err)
			}
			seen := map[string]bool{}
			for _, e := range events {
				var i int
				if _, err := fmt.Sscanf(e.TargetID, "u%d@example.com", &i); err != nil || e.RequestID != fmt.Sprintf("req-%s-%d", ws.Name, i) ||
					e.ActorKind != store.ActorAPIKey || e.ActorSub != "admin-"+ws.Name || e.Workspace != ws.Name || seen[e.TargetID] {
					t.Errorf("%s: event %+v", ws.Name, e)
				}
				seen[e.TargetID] = true
			}
			if len(events) != n {
				t.Errorf("%s: %d invitation.created events, want %d", ws.Name, len(events), n)
			}
		}
		msgs, err := st.WebhookMessages(ctx, ep.ID)
		if err != nil || len(msgs) != n {
			t.Errorf("hooked endpoint: %d messages (%v), want one per invite", len(msgs), err)
		}

		// Expiry: the stale invitation moves to history with its event.
		clk.Advance(2 * time.Hour)
		if _, err := st.Invite(ctx, store.InviteParams{Workspace: "quiet", Caller: "admin-quiet", Email: "u0@example.com", TTL: time.Hour}); err != nil {
			t.Fatal(err)
		}
		events, err := st.ListAudit(ctx, store.AuditFilter{WorkspaceID: quiet.ID, Limit: 2})
		if err != nil || len(events) != 2 || events[0].Action != store.ActionInvitationCreated || events[1].Action != store.ActionInvitationExpired ||
			events[1].TargetID != "u0@example.com" || events[1].ActorKind != store.ActorSystem {
			t.Errorf("after expiry: %+v %v; want expired then created (no actor in the context: system)", events, err)
		}
	})
}

// TestAudit_FailedChangeAppendsNothing: a refused change rolls its event
// back with it (one transaction).
func TestAudit_FailedChangeAppendsNothing(t *testing.T) {
	eachDialect(t, func(t *testing.T, st *store.Store, _ *clock) {
		ctx := context.Background()
		ws := mustWorkspace(t, st, "acme")
		before, err := st.ListAudit(ctx, store.AuditFilter{WorkspaceID: ws.ID, Limit: 100})
		if err != nil {
			t.Fatal(err)
		}
		if err := st.RemoveUser(ctx, "acme", "admin-acme", "admin-acme"); err == nil {
			t.Fatal("removing the last admin succeeded")
		}
		if _, err := st.UpdateRole(ctx, "acme", "admin-acme", "admin-acme", store.RoleMember); err == nil {
			t.Fatal("demoting the last admin succeeded")
		}
		after, err := st.ListAudit(ctx, store.AuditFilter{WorkspaceID: ws.ID, Limit: 100})
		if err != nil || len(after) != len(before) {
			t.Errorf("events before %d, after %d (%v): a refused change appended one", len(before), len(after), err)
		}
	})
}

// TestAudit_WorkspaceDeletedIsAuditOnly: deleting a workspace records
// workspace.deleted in the audit log, but no endpoint receives it (docs/api/audit-and-webhooks.md,
// "Event catalogue"): the workspace's endpoints, subscribed to it or to
// every type, go with it in the same transaction, their queued messages
// too, and another workspace's endpoint hears nothing of it.
func TestAudit_WorkspaceDeletedIsAuditOnly(t *testing.T) {
	eachDialect(t, func(t *testing.T, st *store.Store, _ *clock) {
		ctx := context.Background()
		gone := mustWorkspace(t, st, "gone")
		mustWorkspace(t, st, "other")
		url := "https://hooks.example.com/x"
		endpoint := func(ws string, types *[]string) store.WebhookEndpoint {
			t.Helper()
			ep, err := st.CreateWebhook(ctx, ws, "admin-"+ws, store.WebhookInput{URL: &url, EventTypes: types})
			if err != nil {
				t.Fatal(err)
			}
			return ep
		}
		deletedOnly := endpoint("gone", &[]string{store.ActionWorkspaceDeleted})
		everything := endpoint("gone", nil)
		elsewhere := endpoint("other", nil)
		if _, err := st.DeleteWorkspace(ctx, "gone", "admin-gone"); err != nil {
			t.Fatal(err)
		}
		events, err := st.ListAudit(ctx, store.AuditFilter{WorkspaceID: gone.ID, Action: store.ActionWorkspaceDeleted, Limit: 5})
		if err != nil || len(events) != 1 || events[0].TargetID != "gone" {
			t.Errorf("workspace.deleted events: %+v, %v; want one", events, err)
		}
		for name, ep := range map[string]store.WebhookEndpoint{"subscribed to workspace.deleted": deletedOnly,
			"subscribed to every type": everything, "of another workspace": elsewhere} {
			msgs, err := st.WebhookMessages(ctx, ep.ID)
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range msgs {
				if m.EventType == store.ActionWorkspaceDeleted || ep.ID != elsewhere.ID {
					t.Errorf("endpoint %s: message %+v queued; want none for the deleted workspace", name, m)
				}
			}
		}
	})
}
