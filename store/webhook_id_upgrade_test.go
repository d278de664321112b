package store

import (
	"context"
	"testing"
	"time"

	"gorm.io/gorm"
)

// TestWebhookID_Upgrade: a message queued before webhook-ids were stored
// got an empty webhook_id when the column was added, and is then sent
// (and logged) under the id it had, "msg_" + its row id; messages queued
// after the upgrade get a stored one.
func TestWebhookID_Upgrade(t *testing.T) {
	ctx := context.Background()
	st, _ := openSQLiteWithWorkspace(t, "upgraded")
	url := "https://hooks.example.com/old"
	ep, err := st.CreateWebhook(ctx, "upgraded", "admin", WebhookInput{URL: &url})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Invite(ctx, InviteParams{Workspace: "upgraded", Caller: "admin", Email: "old@example.com", TTL: time.Hour}); err != nil {
		t.Fatal(err)
	}
	// What adding the column left in the rows queued before it.
	err = st.inTx(ctx, func(tx *gorm.DB) error { return tx.Exec("UPDATE webhook_messages SET webhook_id = ''").Error })
	if err != nil {
		t.Fatal(err)
	}
	items, err := st.ClaimWebhooks(ctx, "dispatcher", 10, time.Minute)
	if err != nil || len(items) != 1 {
		t.Fatalf("claim: %d items, %v", len(items), err)
	}
	old := items[0]
	if got, want := MessageWebhookID(old.WebhookID, old.ID), "msg_1"; got != want {
		t.Errorf("message queued before the upgrade: webhook-id %q, want %q", got, want)
	}
	r := WebhookResult{Outcome: AttemptDelivered, Started: time.Now(), StatusCode: 204}
	if _, err := st.RecordWebhookAttempt(ctx, old, "dispatcher", r, time.Hour); err != nil {
		t.Fatal(err)
	}
	log, err := st.WebhookAttempts(ctx, ep.ID, 10)
	if err != nil || len(log) != 1 {
		t.Fatalf("delivery log: %d lines, %v", len(log), err)
	}
	if got := MessageWebhookID(log[0].WebhookID, log[0].MessageID); got != "msg_1" {
		t.Errorf("delivery log of the old message: %q, want msg_1", got)
	}
	if _, err := st.Invite(ctx, InviteParams{Workspace: "upgraded", Caller: "admin", Email: "new@example.com", TTL: time.Hour}); err != nil {
		t.Fatal(err)
	}
	msgs, err := st.WebhookMessages(ctx, ep.ID)
	if err != nil || len(msgs) != 2 {
		t.Fatalf("%d messages, %v", len(msgs), err)
	}
	if len(msgs[1].WebhookID) != len("msg_")+32 {
		t.Errorf("message queued after the upgrade: webhook-id %q, want a stored one", msgs[1].WebhookID)
	}
}
