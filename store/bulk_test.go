package store_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/membership-api/controlplane/store"
	"github.com/membership-api/controlplane/store/storetest"
)

// bulkSetup gives workspace name the same state: a member, a pending
// invitation, one that expires first (once the clock advances), a domain
// policy.
func bulkSetup(t *testing.T, st *store.Store, name string) {
	t.Helper()
	ctx := context.Background()
	mustWorkspace(t, st, name)
	if _, err := storetest.AddMember(ctx, st, name, "admin-"+name, storetest.NewMember{Sub: "plain", Email: "plain@example.com", Role: store.RoleMember}); err != nil {
		t.Fatal(err)
	}
	for _, email := range []string{"pending@example.com", "stale@example.com"} {
		ttl := time.Hour
		if email == "pending@example.com" {
			ttl = 10 * time.Hour
		}
		if _, err := st.Invite(ctx, store.InviteParams{Workspace: name, Caller: "admin-" + name, Email: email, TTL: ttl}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := st.SetDomainPolicy(ctx, name, "admin-"+name, store.EmailDomainPolicy{Deny: []string{"blocked.test"}}); err != nil {
		t.Fatal(err)
	}
}

// TestInviteMany_SameAsSingleInvites: every row of InviteMany is answered
// as the same invite alone would be: two workspaces in the same state, one
// invited in bulk, the other one invite at a time, compared row by row.
func TestInviteMany_SameAsSingleInvites(t *testing.T) {
	eachDialect(t, func(t *testing.T, st *store.Store, clk *clock) {
		ctx := context.Background()
		bulkSetup(t, st, "acme")
		bulkSetup(t, st, "beta")
		clk.Advance(2 * time.Hour) // stale@ has expired, pending@ has not
		emails := []string{"new@example.com", "Pending@Example.com", "plain@example.com", "stale@example.com",
			"x@blocked.test", "x@sub.blocked.test", "", "NEW@example.com", "ADMIN"}
		for i := range 40 {
			emails = append(emails, fmt.Sprintf("fresh%d@example.com", i))
		}
		params := func(ws string) []store.InviteParams {
			ps := make([]store.InviteParams, len(emails))
			for i, e := range emails {
				if e == "ADMIN" { // the workspace's own admin
					e = "admin@" + ws + ".test"
				}
				ps[i] = store.InviteParams{Workspace: ws, Caller: "admin-" + ws, Email: e, TTL: 3 * time.Hour}
			}
			return ps
		}
		bulk := st.InviteMany(ctx, params("acme"))
		if len(bulk) != len(emails) {
			t.Fatalf("%d results for %d rows", len(bulk), len(emails))
		}
		for i, p := range params("beta") {
			inv, err := st.Invite(ctx, p)
			got := bulk[i]
			if kind(got.Err) != kind(err) {
				t.Errorf("row %d %q: bulk %v, single %v", i, emails[i], got.Err, err)
				continue
			}
			if err != nil {
				continue
			}
			b := got.Invitation
			if b.Email != inv.Email || b.Role != inv.Role || b.Status != inv.Status || b.InvitedBy != "admin-acme" ||
				!b.ExpiresAt.Equal(inv.ExpiresAt) || !b.CreatedAt.Equal(inv.CreatedAt) || !b.UpdatedAt.Equal(inv.UpdatedAt) {
				t.Errorf("row %d %q: bulk %+v, single %+v", i, emails[i], b, inv)
			}
		}
		// One pending invitation per email, each with one queued email
		// per write, as single invites leave.
		counts, err := storetest.CountRows(ctx, st)
		if err != nil {
			t.Fatal(err)
		}
		if counts["invitations"]%2 != 0 || counts["outbox_messages"]%2 != 0 {
			t.Errorf("the two workspaces differ: %v", counts)
		}
	})
}

// kind names an error for comparison: its sentinel and code.
func kind(err error) string {
	if err == nil {
		return "ok"
	}
	var se *store.Error
	if errors.As(err, &se) {
		return fmt.Sprintf("%v/%s", se.Kind, se.Code)
	}
	return "other: " + err.Error()
}

// TestInviteMany_OneBatch: 1,000 fresh rows are settled by the batch (no
// row takes the slow path): the batch hook sees all of them in one call.
func TestInviteMany_OneBatch(t *testing.T) {
	storetest.EachDialect(t, func(t *testing.T, dialect string) {
		t.Parallel()
		var batches, rows atomic.Int64
		st := storetest.Open(t, dialect, store.Options{Hooks: store.Hooks{InviteBatch: func(n int) { batches.Add(1); rows.Add(int64(n)) }}})
		mustWorkspace(t, st, "acme")
		ps := make([]store.InviteParams, store.MaxBulkInvites)
		for i := range ps {
			ps[i] = store.InviteParams{Workspace: "acme", Caller: "admin-acme", Email: fmt.Sprintf("u%d@example.com", i), TTL: time.Hour}
		}
		for i, r := range st.InviteMany(context.Background(), ps) {
			if r.Err != nil || r.Invitation.ID == 0 {
				t.Fatalf("row %d: %+v", i, r)
			}
		}
		if batches.Load() != 1 || rows.Load() != store.MaxBulkInvites {
			t.Errorf("%d batches of %d rows in all, want 1 batch of %d", batches.Load(), rows.Load(), store.MaxBulkInvites)
		}
	})
}

// BenchmarkInviteMany measures a bulk invite of 1,000 fresh rows (rows/s).
func BenchmarkInviteMany(b *testing.B) {
	for _, dialect := range storetest.Dialects {
		b.Run(dialect, func(b *testing.B) {
			st := storetest.Open(b, dialect, store.Options{})
			if _, err := st.CreateWorkspace(context.Background(), store.NewWorkspace{Name: "bench", AdminSub: "admin", AdminEmail: "admin@bench.test"}); err != nil {
				b.Fatal(err)
			}
			seq := 0
			b.ResetTimer()
			for b.Loop() {
				ps := make([]store.InviteParams, store.MaxBulkInvites)
				for i := range ps {
					seq++
					ps[i] = store.InviteParams{Workspace: "bench", Caller: "admin", Email: fmt.Sprintf("u%d@bench.test", seq), TTL: time.Hour}
				}
				for _, r := range st.InviteMany(context.Background(), ps) {
					if r.Err != nil {
						b.Fatal(r.Err)
					}
				}
			}
			b.ReportMetric(float64(b.N*store.MaxBulkInvites)/b.Elapsed().Seconds(), "rows/s")
		})
	}
}
