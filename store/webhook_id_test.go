package store_test

import (
	"context"
	"regexp"
	"slices"
	"testing"
	"time"

	"github.com/membership-api/controlplane/store"
	"github.com/membership-api/controlplane/store/storetest"
)

// webhookIDForm is a webhook-id made since they are stored: "msg_", the
// queueing time in milliseconds (12 hex digits), 80 random bits.
var webhookIDForm = regexp.MustCompile(`^msg_[0-9a-f]{12}[0-9a-f]{20}$`)

// TestWebhooks_WebhookID: every way a message is queued (an audited change
// through appendAudit, an invite batch, a test event made in Go) gives it
// its own webhook-id of the stored form; ids sort by when they were
// queued; every attempt of one message carries its id, in the request and
// in the delivery log.
func TestWebhooks_WebhookID(t *testing.T) {
	eachDialect(t, func(t *testing.T, st *store.Store, clk *clock) {
		ctx := context.Background()
		mustWorkspace(t, st, "ids")
		url := "https://hooks.example.com/a"
		ep, err := st.CreateWebhook(ctx, "ids", "admin-ids", store.WebhookInput{URL: &url})
		if err != nil {
			t.Fatal(err)
		}
		clk.Advance(time.Second)
		if _, err := st.Invite(ctx, store.InviteParams{Workspace: "ids", Caller: "admin-ids", Email: "one@example.com", TTL: time.Hour}); err != nil {
			t.Fatal(err)
		}
		clk.Advance(time.Second)
		if err := st.InviteBatchForTest(ctx, []store.InviteParams{
			{Workspace: "ids", Caller: "admin-ids", Email: "two@example.com", TTL: time.Hour},
			{Workspace: "ids", Caller: "admin-ids", Email: "three@example.com", TTL: time.Hour}}); err != nil {
			t.Fatal(err)
		}
		clk.Advance(time.Second)
		test, _, err := st.SendWebhookTest(ctx, "ids", "admin-ids", ep.ID)
		if err != nil {
			t.Fatal(err)
		}
		msgs, err := st.WebhookMessages(ctx, ep.ID)
		if err != nil {
			t.Fatal(err)
		}
		if len(msgs) != 4 {
			t.Fatalf("got %d messages, want 4 (an invite, a batch of two, a test: %+v)", len(msgs), msgs)
		}
		var ids []string
		for _, m := range msgs {
			if !webhookIDForm.MatchString(m.WebhookID) {
				t.Errorf("message %d: webhook-id %q, want the form msg_<12 hex time><20 hex random>", m.ID, m.WebhookID)
			}
			ids = append(ids, m.WebhookID)
		}
		if msgs[3].WebhookID != test.WebhookID {
			t.Errorf("test message: stored id %q, returned %q", msgs[3].WebhookID, test.WebhookID)
		}
		if !slices.IsSorted(ids[:2]) || ids[0] > ids[2] || ids[1] > ids[3] || ids[2] > ids[3] {
			t.Errorf("webhook-ids %q do not sort by when they were queued", ids)
		}
		if len(slices.Compact(slices.Sorted(slices.Values(ids)))) != len(ids) {
			t.Errorf("webhook-ids %q: got a duplicate", ids)
		}

		// Two attempts of one message: the same id in both claims and in
		// both lines of the delivery log.
		var claimed []string
		for range 2 {
			items, err := st.ClaimWebhooks(ctx, "dispatcher", 1, time.Minute)
			if err != nil || len(items) != 1 {
				t.Fatalf("claim: %d items, %v", len(items), err)
			}
			claimed = append(claimed, items[0].WebhookID)
			// Due again first: as early as the first message was.
			r := store.WebhookResult{Outcome: store.AttemptRetry, Started: clk.Now(), Error: "answered 500", StatusCode: 500, Next: msgs[0].NextAttemptAt}
			if _, err := st.RecordWebhookAttempt(ctx, items[0], "dispatcher", r, time.Hour); err != nil {
				t.Fatal(err)
			}
		}
		if claimed[0] != ids[0] || claimed[1] != ids[0] {
			t.Errorf("two attempts carried %q, want %q twice", claimed, ids[0])
		}
		log, err := st.WebhookAttempts(ctx, ep.ID, 10)
		if err != nil || len(log) != 2 {
			t.Fatalf("delivery log: %d lines, %v", len(log), err)
		}
		for _, a := range log {
			if got := store.MessageWebhookID(a.WebhookID, a.MessageID); got != ids[0] {
				t.Errorf("delivery log attempt %d: webhook-id %q, want %q", a.Attempt, got, ids[0])
			}
		}
	})
}

// TestWebhooks_WebhookIDAcrossDatabases: the first messages of two
// databases, queued at the same instant, have different ids (their
// sequence numbers, the ids before, were both 1).
func TestWebhooks_WebhookIDAcrossDatabases(t *testing.T) {
	storetest.EachDialect(t, func(t *testing.T, dialect string) {
		t.Parallel()
		clk := newClock()
		var first []store.WebhookMessage
		for range 2 {
			st := storetest.Open(t, dialect, store.Options{Now: clk.Now})
			ctx := context.Background()
			mustWorkspace(t, st, "twin")
			url := "https://hooks.example.com/twin"
			ep, err := st.CreateWebhook(ctx, "twin", "admin-twin", store.WebhookInput{URL: &url})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := st.Invite(ctx, store.InviteParams{Workspace: "twin", Caller: "admin-twin", Email: "a@example.com", TTL: time.Hour}); err != nil {
				t.Fatal(err)
			}
			msgs, err := st.WebhookMessages(ctx, ep.ID)
			if err != nil || len(msgs) != 1 {
				t.Fatalf("%d messages, %v", len(msgs), err)
			}
			first = append(first, msgs[0])
		}
		if first[0].WebhookID == first[1].WebhookID || first[0].WebhookID[:16] != first[1].WebhookID[:16] {
			t.Errorf("first messages of two databases at one instant: %q and %q, want one time prefix and different ids",
				first[0].WebhookID, first[1].WebhookID)
		}
	})
}

// TestMessageWebhookID: messages queued before webhook-ids were stored
// keep the id they were first sent with, so their redeliveries deduplicate.
func TestMessageWebhookID(t *testing.T) {
	if got := store.MessageWebhookID("", 42); got != "msg_42" {
		t.Errorf("no stored id: got %q, want msg_42", got)
	}
	if got := store.MessageWebhookID("msg_0193ab", 42); got != "msg_0193ab" {
		t.Errorf("stored id: got %q, want msg_0193ab", got)
	}
}
