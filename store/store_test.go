package store_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/membership-api/controlplane/store"
	"github.com/membership-api/controlplane/store/storetest"
)

// clock is a settable time source for expiry tests.
type clock struct{ t atomic.Int64 }

func newClock() *clock {
	c := &clock{}
	c.t.Store(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC).UnixNano())
	return c
}
func (c *clock) Now() time.Time          { return time.Unix(0, c.t.Load()).UTC() }
func (c *clock) Advance(d time.Duration) { c.t.Add(int64(d)) }

// eachDialect runs fn against a fresh store of every dialect, each with
// its own clock, beside the other tests that do the same.
func eachDialect(t *testing.T, fn func(t *testing.T, st *store.Store, clk *clock)) {
	storetest.EachDialect(t, func(t *testing.T, dialect string) {
		t.Parallel()
		clk := newClock()
		st := storetest.Open(t, dialect, store.Options{Now: clk.Now})
		fn(t, st, clk)
	})
}

func mustWorkspace(t *testing.T, st *store.Store, name string) store.Workspace {
	t.Helper()
	ws, err := st.CreateWorkspace(context.Background(), store.NewWorkspace{Name: name, AdminSub: "admin-" + name, AdminEmail: "admin@" + name + ".test"})
	if err != nil {
		t.Fatalf("create workspace: %v", err)
	}
	return ws
}

func TestWorkspaces_Create(t *testing.T) {
	eachDialect(t, func(t *testing.T, st *store.Store, _ *clock) {
		ctx := context.Background()
		ws := mustWorkspace(t, st, "acme")
		if ws.DisplayName != "acme" {
			t.Errorf("display name: got %q, want %q", ws.DisplayName, "acme")
		}
		m, err := st.Membership(ctx, "acme", "admin-acme")
		if err != nil || m.Role != store.RoleAdmin {
			t.Fatalf("admin membership: got %+v, %v; want admin", m, err)
		}
		if _, err := st.CreateWorkspace(ctx, store.NewWorkspace{Name: "acme", AdminSub: "x", AdminEmail: "x@y.z"}); !errors.Is(err, store.ErrConflict) {
			t.Errorf("duplicate name: got %v, want ErrConflict", err)
		}
		if _, err := st.CreateWorkspace(ctx, store.NewWorkspace{Name: "Bad Name", AdminSub: "x", AdminEmail: "x@y.z"}); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("bad name: got %v, want ErrInvalid", err)
		}
		if _, err := st.Membership(ctx, "acme", "stranger"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("non-member: got %v, want ErrNotFound", err)
		}
		if _, err := st.Membership(ctx, "nope", "admin-acme"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("unknown workspace: got %v, want ErrNotFound", err)
		}
	})
}

func TestInvitations_Create(t *testing.T) {
	eachDialect(t, func(t *testing.T, st *store.Store, clk *clock) {
		ctx := context.Background()
		mustWorkspace(t, st, "acme")
		inv, err := st.Invite(ctx, store.InviteParams{Workspace: "acme", Caller: "admin-acme", Email: "Bob@Example.COM", TTL: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		if inv.Email != "bob@example.com" || inv.Role != store.RoleMember || inv.Status != store.InvitationPending {
			t.Errorf("got %+v, want normalised pending member invitation", inv)
		}
		if want := clk.Now().Add(time.Hour); !inv.ExpiresAt.Equal(want) {
			t.Errorf("expiresAt: got %v, want %v", inv.ExpiresAt, want)
		}
		if inv.ID == 0 || inv.CreatedBy != "admin-acme" {
			t.Errorf("got id %d createdBy %q", inv.ID, inv.CreatedBy)
		}

		t.Run("ReinviteRefreshesExpiry", func(t *testing.T) {
			clk.Advance(10 * time.Minute)
			if _, err := storetest.AddMember(ctx, st, "acme", "test", storetest.NewMember{Sub: "other-admin", Role: store.RoleAdmin}); err != nil {
				t.Fatal(err)
			}
			again, err := st.Invite(ctx, store.InviteParams{Workspace: "acme", Caller: "other-admin", Email: "BOB@example.com", TTL: time.Hour})
			if err != nil {
				t.Fatal(err)
			}
			if again.ID != inv.ID {
				t.Errorf("id: got %d, want the pending invitation %d", again.ID, inv.ID)
			}
			if want := clk.Now().Add(time.Hour); !again.ExpiresAt.Equal(want) {
				t.Errorf("expiresAt: got %v, want refreshed %v", again.ExpiresAt, want)
			}
			if !again.CreatedAt.Equal(inv.CreatedAt) || again.UpdatedBy != "other-admin" || again.InvitedBy != "admin-acme" {
				t.Errorf("got %+v: want createdAt/invitedBy kept, updatedBy changed", again)
			}
		})

		t.Run("ExpiredStartsFresh", func(t *testing.T) {
			clk.Advance(2 * time.Hour)
			fresh, err := st.Invite(ctx, store.InviteParams{Workspace: "acme", Caller: "admin-acme", Email: "bob@example.com", TTL: time.Hour})
			if err != nil {
				t.Fatal(err)
			}
			if fresh.ID == inv.ID {
				t.Errorf("expired invitation %d was reused", inv.ID)
			}
			counts, _ := storetest.CountRows(ctx, st)
			if counts["invitations"] != 2 {
				t.Errorf("invitations: got %d rows, want 2 (old one kept as history)", counts["invitations"])
			}
		})

		t.Run("Authorization", func(t *testing.T) {
			if _, err := storetest.AddMember(ctx, st, "acme", "test", storetest.NewMember{Sub: "plain", Email: "plain@acme.test", Role: store.RoleMember}); err != nil {
				t.Fatal(err)
			}
			_, err := st.Invite(ctx, store.InviteParams{Workspace: "acme", Caller: "plain", Email: "x@example.com", TTL: time.Hour})
			if !errors.Is(err, store.ErrForbidden) {
				t.Errorf("plain member: got %v, want ErrForbidden", err)
			}
			for _, p := range []store.InviteParams{{Workspace: "acme", Caller: "stranger"}, {Workspace: "nope", Caller: "admin-acme"}} {
				p.Email, p.TTL = "x@example.com", time.Hour
				if _, err := st.Invite(ctx, p); !errors.Is(err, store.ErrNotFound) {
					t.Errorf("%+v: got %v, want ErrNotFound", p, err)
				}
			}
		})

		t.Run("AlreadyMember", func(t *testing.T) {
			_, err := st.Invite(ctx, store.InviteParams{Workspace: "acme", Caller: "admin-acme", Email: "ADMIN@acme.test", TTL: time.Hour})
			if !errors.Is(err, store.ErrConflict) {
				t.Errorf("got %v, want ErrConflict", err)
			}
		})
	})
}

// TestInvitations_ConcurrentIdentical races 50 identical invites: the
// partial unique index must leave exactly one pending row, and every call
// must succeed with that row.
func TestInvitations_ConcurrentIdentical(t *testing.T) {
	eachDialect(t, func(t *testing.T, st *store.Store, _ *clock) {
		ctx := context.Background()
		mustWorkspace(t, st, "acme")
		const n = 50
		ids := make([]int64, n)
		errs := make([]error, n)
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				inv, err := st.Invite(ctx, store.InviteParams{Workspace: "acme", Caller: "admin-acme", Email: "race@example.com", TTL: time.Hour})
				ids[i], errs[i] = inv.ID, err
			}()
		}
		close(start)
		wg.Wait()
		for i := range n {
			if errs[i] != nil {
				t.Fatalf("invite %d: %v", i, errs[i])
			}
			if ids[i] != ids[0] {
				t.Errorf("invite %d returned id %d, want %d", i, ids[i], ids[0])
			}
		}
		counts, err := storetest.CountRows(ctx, st)
		if err != nil {
			t.Fatal(err)
		}
		if counts["invitations"] != 1 {
			t.Errorf("invitations: got %d rows, want 1", counts["invitations"])
		}
	})
}

func TestAPIKeys(t *testing.T) {
	eachDialect(t, func(t *testing.T, st *store.Store, _ *clock) {
		ctx := context.Background()
		mustWorkspace(t, st, "acme")
		key, _, err := st.CreateAPIKey(ctx, "acme", "admin-acme")
		if err != nil {
			t.Fatal(err)
		}
		if !store.IsAPIKey(key) || len(key) < 40 {
			t.Errorf("key %q lacks the prefix or entropy", key)
		}
		got, err := st.LookupAPIKey(ctx, key)
		if err != nil || got.Sub != "admin-acme" || got.Workspace.Name != "acme" {
			t.Fatalf("lookup: got %+v, %v", got, err)
		}
		if _, _, err := st.CreateAPIKey(ctx, "acme", "stranger"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("key for non-member: got %v, want ErrNotFound", err)
		}
		if err := st.RevokeAPIKey(ctx, "test", key); err != nil {
			t.Fatal(err)
		}
		if _, err := st.LookupAPIKey(ctx, key); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("revoked key: got %v, want ErrNotFound", err)
		}
		if err := st.RevokeAPIKey(ctx, "test", key); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("second revoke: got %v, want ErrNotFound", err)
		}
	})
}
