package store_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/membership-api/controlplane/store"
)

// queueEmail invites email to workspace ws (made by mustWorkspace), which
// queues its email.
func queueEmail(t *testing.T, st *store.Store, ws, email string) {
	t.Helper()
	_, err := st.Invite(context.Background(), store.InviteParams{Workspace: ws, Caller: "admin-" + ws, Email: email, TTL: 7 * 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
}

// failDue claims every due message and marks it failed, as a dispatcher
// giving up would; it returns their ids in claim order.
func failDue(t *testing.T, st *store.Store) []int64 {
	t.Helper()
	ctx := context.Background()
	items, err := st.ClaimOutbox(ctx, "test-dispatcher", 100, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	ids := make([]int64, len(items))
	for i, it := range items {
		ids[i] = it.ID
		if err := st.EndOutbox(ctx, it.ID, "test-dispatcher", store.OutboxFailed, "451 4.3.0 try later"); err != nil {
			t.Fatal(err)
		}
	}
	return ids
}

func outboxCounts(t *testing.T, st *store.Store) map[string]int64 {
	t.Helper()
	c, err := st.OutboxCounts(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func requeue(t *testing.T, st *store.Store, f store.OutboxFilter, wantRequeued, wantSkipped int64) {
	t.Helper()
	requeued, skipped, err := st.RequeueFailedOutbox(context.Background(), f)
	if err != nil || requeued != wantRequeued || skipped != wantSkipped {
		t.Fatalf("requeue %+v: %d requeued, %d skipped, %v; want %d, %d", f, requeued, skipped, err, wantRequeued, wantSkipped)
	}
}

// TestOutbox_RequeueScopes: mail-retry's one workspace, one message and
// everything; names that do not exist are ErrNotFound, not "0 requeued".
func TestOutbox_RequeueScopes(t *testing.T) {
	eachDialect(t, func(t *testing.T, st *store.Store, clk *clock) {
		ctx := context.Background()
		mustWorkspace(t, st, "acme")
		mustWorkspace(t, st, "other")
		queueEmail(t, st, "acme", "a1@example.com")
		queueEmail(t, st, "acme", "a2@example.com")
		queueEmail(t, st, "other", "o1@example.com")
		queueEmail(t, st, "other", "o2@example.com")
		ids := failDue(t, st)
		if len(ids) != 4 {
			t.Fatalf("failed %d messages, want 4", len(ids))
		}
		for _, f := range []store.OutboxFilter{{Workspace: "nope"}, {ID: 999999}} {
			if _, _, err := st.RequeueFailedOutbox(ctx, f); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("requeue %+v: got %v, want ErrNotFound", f, err)
			}
		}
		if c := outboxCounts(t, st); c[store.OutboxFailed] != 4 {
			t.Fatalf("a refused requeue changed rows: %v", c)
		}

		clk.Advance(time.Hour)
		requeue(t, st, store.OutboxFilter{Workspace: "acme"}, 2, 0)
		items, err := st.ClaimOutbox(ctx, "d", 100, time.Minute)
		if err != nil || len(items) != 2 {
			t.Fatalf("claim after requeue: %d items, %v; want acme's 2, due at once", len(items), err)
		}
		for _, it := range items {
			if it.WorkspaceName != "acme" || it.Attempts != 1 || !it.QueuedSince().Equal(clk.Now()) || it.LastError == "" {
				t.Errorf("requeued message %+v: want acme, attempts restarted (1 with this claim), age from the requeue, last error kept", it)
			}
		}

		requeue(t, st, store.OutboxFilter{ID: ids[3]}, 1, 0)
		requeue(t, st, store.OutboxFilter{ID: ids[3]}, 0, 0) // pending now, nothing to do
		requeue(t, st, store.OutboxFilter{}, 1, 0)           // the last failed one
		if c := outboxCounts(t, st); c[store.OutboxFailed] != 0 || c[store.OutboxPending] != 4 {
			t.Errorf("counts %v, want all 4 pending", c)
		}
	})
}

// TestOutbox_RequeueRespectsOnePendingPerInvitation: requeuing must not
// break idx_outbox_unsent (one pending message per invitation), neither
// against a message a re-invite queued after the failure nor between two
// failed messages of one invitation; the command still succeeds.
func TestOutbox_RequeueRespectsOnePendingPerInvitation(t *testing.T) {
	eachDialect(t, func(t *testing.T, st *store.Store, _ *clock) {
		mustWorkspace(t, st, "acme")
		queueEmail(t, st, "acme", "twice@example.com")
		queueEmail(t, st, "acme", "reinvited@example.com")
		failDue(t, st)
		queueEmail(t, st, "acme", "twice@example.com") // a second email, failed too
		newest := failDue(t, st)[0]
		queueEmail(t, st, "acme", "reinvited@example.com") // pending again beside its failed one

		// twice@: its newest failed message is requeued, the older one left;
		// reinvited@: left failed, its pending message carries the email.
		requeue(t, st, store.OutboxFilter{}, 1, 2)
		items, err := st.ClaimOutbox(context.Background(), "d", 100, time.Minute)
		if err != nil || len(items) != 2 {
			t.Fatalf("claim: %d items, %v; want one pending message per invitation", len(items), err)
		}
		for _, it := range items {
			if it.InvitationEmail == "twice@example.com" && it.ID != newest {
				t.Errorf("requeued message %d of twice@, want the newest failed one (%d)", it.ID, newest)
			}
		}
		requeue(t, st, store.OutboxFilter{}, 0, 2) // again: nothing more, no error
	})
}

// TestOutbox_StatusEntries: what mail-status reports, oldest pending by
// queued time (a requeue counts as queued) and failed ones latest first.
func TestOutbox_StatusEntries(t *testing.T) {
	eachDialect(t, func(t *testing.T, st *store.Store, clk *clock) {
		ctx := context.Background()
		mustWorkspace(t, st, "acme")
		if _, ok, err := st.OldestPendingOutbox(ctx); ok || err != nil {
			t.Fatalf("oldest pending of an empty outbox: ok %v, %v", ok, err)
		}
		queueEmail(t, st, "acme", "first@example.com")
		clk.Advance(time.Minute)
		queueEmail(t, st, "acme", "second@example.com")
		failDue(t, st)
		clk.Advance(time.Minute)
		queueEmail(t, st, "acme", "third@example.com")

		failed, err := st.FailedOutbox(ctx, 10)
		if err != nil || len(failed) != 2 || failed[0].Workspace != "acme" || failed[0].LastError != "451 4.3.0 try later" {
			t.Fatalf("failed: %+v, %v", failed, err)
		}
		if one, _ := st.FailedOutbox(ctx, 1); len(one) != 1 {
			t.Errorf("limit 1 gave %d entries", len(one))
		}
		oldest, ok, err := st.OldestPendingOutbox(ctx)
		if err != nil || !ok || oldest.Email != "third@example.com" {
			t.Fatalf("oldest pending: %+v %v %v; want third@", oldest, ok, err)
		}
		clk.Advance(time.Minute)
		requeue(t, st, store.OutboxFilter{ID: failed[1].ID}, 1, 0)
		oldest, _, _ = st.OldestPendingOutbox(ctx)
		if oldest.Email != "third@example.com" || !oldest.QueuedSince.Equal(clk.Now().Add(-time.Minute)) {
			t.Errorf("oldest pending after a requeue: %+v; want third@ (the requeued one is younger)", oldest)
		}
	})
}
