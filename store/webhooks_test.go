package store_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/membership-api/controlplane/store"
)

// TestWebhooks_OwnCreationNotSent: an endpoint is not sent the
// webhook_endpoint.created event of its own creation, whose delivery would
// come before its creator could store the signing secret; an endpoint
// already subscribed to every type gets it, and the next event reaches
// both.
func TestWebhooks_OwnCreationNotSent(t *testing.T) {
	eachDialect(t, func(t *testing.T, st *store.Store, _ *clock) {
		ctx := context.Background()
		mustWorkspace(t, st, "hooked")
		create := func(url string) store.WebhookEndpoint {
			t.Helper()
			ep, err := st.CreateWebhook(ctx, "hooked", "admin-hooked", store.WebhookInput{URL: &url})
			if err != nil {
				t.Fatal(err)
			}
			return ep
		}
		messages := func(ep store.WebhookEndpoint) []store.WebhookMessage {
			t.Helper()
			msgs, err := st.WebhookMessages(ctx, ep.ID)
			if err != nil {
				t.Fatal(err)
			}
			return msgs
		}
		a := create("https://hooks.example.com/a")
		if got := messages(a); len(got) != 0 {
			t.Errorf("A after its own creation: %d messages %+v, want none", len(got), got)
		}
		b := create("https://hooks.example.com/b")
		got := messages(a)
		if len(got) != 1 || got[0].EventType != store.ActionWebhookCreated {
			t.Fatalf("A after B's creation: %+v, want one %s", got, store.ActionWebhookCreated)
		}
		events, err := st.ListAudit(ctx, store.AuditFilter{WorkspaceID: b.WorkspaceID, Action: store.ActionWebhookCreated, Limit: 10})
		if err != nil {
			t.Fatal(err)
		}
		var bCreated int64
		for _, e := range events {
			if e.TargetID == strconv.FormatInt(b.ID, 10) {
				bCreated = e.ID
			}
		}
		if bCreated == 0 || got[0].EventID == nil || *got[0].EventID != bCreated {
			t.Errorf("A's message is for event %v, want B's creation (event %d)", got[0].EventID, bCreated)
		}
		if got := messages(b); len(got) != 0 {
			t.Errorf("B after its own creation: %d messages %+v, want none", len(got), got)
		}

		// A later event reaches both.
		if _, err := st.Invite(ctx, store.InviteParams{Workspace: "hooked", Caller: "admin-hooked", Email: "later@example.com", TTL: time.Hour}); err != nil {
			t.Fatal(err)
		}
		for name, ep := range map[string]store.WebhookEndpoint{"A": a, "B": b} {
			msgs := messages(ep)
			if len(msgs) == 0 || msgs[len(msgs)-1].EventType != store.ActionInvitationCreated {
				t.Errorf("%s after an invite: %+v, want the invitation.created message last", name, msgs)
			}
		}
	})
}
