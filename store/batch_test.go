package store_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/membership-api/controlplane/store"
	"github.com/membership-api/controlplane/store/storetest"
)

// TestInvitations_BatchMixed starts many different invites at once, so that
// they share batch statements (including batches larger than one statement
// takes, and padded ones), and checks each answer is what the same invite
// alone would get: fresh invitations, refreshed ones, duplicates within a
// batch, the same email in two workspaces, a member's email, a caller who
// is not an admin, an unknown workspace and an expired pending invitation.
// The database must end with one pending invitation per email and workspace,
// each with exactly one queued email.
func TestInvitations_BatchMixed(t *testing.T) {
	eachDialect(t, func(t *testing.T, st *store.Store, clk *clock) {
		ctx := context.Background()
		acme := mustWorkspace(t, st, "acme")
		beta := mustWorkspace(t, st, "beta")
		if _, err := storetest.AddMember(ctx, st, "acme", "admin-acme", storetest.NewMember{Sub: "plain", Email: "plain@example.com", Role: store.RoleMember}); err != nil {
			t.Fatal(err)
		}
		old, err := st.Invite(ctx, store.InviteParams{Workspace: "acme", Caller: "admin-acme", Email: "old@example.com", TTL: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		refreshed, err := st.Invite(ctx, store.InviteParams{Workspace: "acme", Caller: "admin-acme", Email: "again@example.com", Role: store.RoleAdmin, TTL: 3 * time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		clk.Advance(2 * time.Hour) // old has expired, refreshed has not

		type call struct {
			p       store.InviteParams
			wantErr error // nil: success
			check   func(inv store.Invitation) error
		}
		fresh := func(ws store.Workspace, role string) func(store.Invitation) error {
			return func(inv store.Invitation) error {
				if inv.WorkspaceID != ws.ID || inv.Role != role || inv.Status != store.InvitationPending ||
					!inv.ExpiresAt.Equal(clk.Now().Add(time.Hour)) {
					return fmt.Errorf("got %+v, want a pending %s invitation of workspace %d expiring in 1h", inv, role, ws.ID)
				}
				return nil
			}
		}
		var calls []call
		for i := range 150 { // more than one batch statement takes
			calls = append(calls, call{p: store.InviteParams{Workspace: "acme", Caller: "admin-acme",
				Email: fmt.Sprintf("u%d@example.com", i), TTL: time.Hour}, check: fresh(acme, store.RoleMember)})
		}
		for range 5 { // the same email, several times in one batch
			calls = append(calls, call{p: store.InviteParams{Workspace: "acme", Caller: "admin-acme",
				Email: "dup@example.com", Role: store.RoleAdmin, TTL: time.Hour}, check: fresh(acme, store.RoleAdmin)})
		}
		calls = append(calls,
			call{p: store.InviteParams{Workspace: "beta", Caller: "admin-beta", Email: "U1@Example.com", TTL: time.Hour},
				check: fresh(beta, store.RoleMember)},
			call{p: store.InviteParams{Workspace: "acme", Caller: "admin-acme", Email: "again@example.com", TTL: time.Hour},
				check: func(inv store.Invitation) error {
					if inv.ID != refreshed.ID || inv.Role != store.RoleAdmin || !inv.ExpiresAt.Equal(clk.Now().Add(time.Hour)) {
						return fmt.Errorf("got %+v, want invitation %d refreshed, role admin kept", inv, refreshed.ID)
					}
					return nil
				}},
			call{p: store.InviteParams{Workspace: "acme", Caller: "admin-acme", Email: "old@example.com", TTL: time.Hour},
				check: func(inv store.Invitation) error {
					if inv.ID == old.ID {
						return fmt.Errorf("expired invitation %d was reused", old.ID)
					}
					return fresh(acme, store.RoleMember)(inv)
				}},
			call{p: store.InviteParams{Workspace: "acme", Caller: "admin-acme", Email: "plain@example.com", TTL: time.Hour}, wantErr: store.ErrConflict},
			call{p: store.InviteParams{Workspace: "acme", Caller: "plain", Email: "x@example.com", TTL: time.Hour}, wantErr: store.ErrForbidden},
			call{p: store.InviteParams{Workspace: "nope", Caller: "admin-acme", Email: "y@example.com", TTL: time.Hour}, wantErr: store.ErrNotFound},
			call{p: store.InviteParams{Workspace: "beta", Caller: "admin-acme", Email: "z@example.com", TTL: time.Hour}, wantErr: store.ErrNotFound},
		)

		got := make([]store.Invitation, len(calls))
		errs := make([]error, len(calls))
		invites := make([]func(), len(calls))
		for i, c := range calls {
			invites[i] = func() { got[i], errs[i] = st.Invite(ctx, c.p) }
		}
		race(invites...)

		for i, c := range calls {
			switch {
			case c.wantErr != nil && !errors.Is(errs[i], c.wantErr):
				t.Errorf("invite %+v: got %v, want %v", c.p, errs[i], c.wantErr)
			case c.wantErr == nil && errs[i] != nil:
				t.Errorf("invite %+v: %v", c.p, errs[i])
			case c.wantErr == nil:
				if err := c.check(got[i]); err != nil {
					t.Errorf("invite %+v: %v", c.p, err)
				}
				stored, err := storetest.PendingInvitation(ctx, st, c.p.Workspace, got[i].Email)
				if err != nil || !sameInvitation(stored, got[i]) {
					t.Errorf("invite %+v: answered %+v, stored pending is %+v (%v)", c.p, got[i], stored, err)
				}
			}
		}

		// 150 + dup + again + old in acme, U1 in beta; each queued once.
		const wantPending = 150 + 1 + 1 + 1 + 1
		entries, err := listUsers(ctx, st, acme.Name)
		if err != nil {
			t.Fatal(err)
		}
		pending := 0
		for _, e := range entries {
			if !e.Accepted {
				pending++
			}
		}
		if pending != wantPending-1 {
			t.Errorf("acme lists %d pending invitations, want %d", pending, wantPending-1)
		}
		counts, err := st.OutboxCounts(ctx)
		if err != nil {
			t.Fatal(err)
		}
		// Every invitation ever created queued one email (no dispatcher
		// runs here): the pending ones plus the expired first old@; the
		// refresh of again@ queued none of its own.
		if counts[store.OutboxPending] != wantPending+1 {
			t.Errorf("queued emails: %v, want %d pending", counts, wantPending+1)
		}
	})
}

// sameInvitation compares every stored field (times by instant).
func sameInvitation(a, b store.Invitation) bool {
	return a.ID == b.ID && a.WorkspaceID == b.WorkspaceID && a.Email == b.Email && a.Role == b.Role &&
		a.Status == b.Status && a.InvitedBy == b.InvitedBy && a.ExpiresAt.Equal(b.ExpiresAt) &&
		a.CreatedAt.Equal(b.CreatedAt) && a.UpdatedAt.Equal(b.UpdatedAt) && a.CreatedBy == b.CreatedBy && a.UpdatedBy == b.UpdatedBy
}

// TestInvitations_BatchesDoNotDeadlock races two batches holding the same
// emails in opposite order (two admins bulk-inviting the same people, or
// retries): rows are written in one order, so neither waits on the other.
func TestInvitations_BatchesDoNotDeadlock(t *testing.T) {
	eachDialect(t, func(t *testing.T, st *store.Store, _ *clock) {
		ctx := context.Background()
		mustWorkspace(t, st, "acme")
		for round := range 20 {
			forward := make([]store.InviteParams, 40)
			backward := make([]store.InviteParams, 40)
			for i := range forward {
				p := store.InviteParams{Workspace: "acme", Caller: "admin-acme", Email: fmt.Sprintf("r%d-%d@example.com", round, i), TTL: time.Hour}
				forward[i], backward[len(backward)-1-i] = p, p
			}
			var errs [2]error
			race(
				func() { errs[0] = st.InviteBatchForTest(ctx, forward) },
				func() { errs[1] = st.InviteBatchForTest(ctx, backward) },
			)
			if err := errors.Join(errs[:]...); err != nil {
				t.Fatalf("round %d: %v", round, err)
			}
		}
	})
}

// TestSQLite_SymlinkedDatabase opens the database through a symlink: the WAL
// SQLite writes sits next to the real file, and that is the one to fsync (a
// stale WAL-named file next to the link must not be mistaken for it).
func TestSQLite_SymlinkedDatabase(t *testing.T) {
	dir := t.TempDir()
	realDB := filepath.Join(dir, "data", "real.db")
	if err := os.MkdirAll(filepath.Dir(realDB), 0o755); err != nil {
		t.Fatal(err)
	}
	first := storetest.OpenDSN(t, realDB, store.Options{})
	mustWorkspace(t, first, "acme")
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link.db")
	if err := os.Symlink(realDB, link); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(link+"-wal", nil, 0o644); err != nil { // stale decoy
		t.Fatal(err)
	}
	st := storetest.OpenDSN(t, link, store.Options{})
	if _, err := st.Invite(context.Background(), store.InviteParams{Workspace: "acme", Caller: "admin-acme", Email: "a@example.com", TTL: time.Hour}); err != nil {
		t.Fatal(err)
	}
	if info, err := os.Stat(realDB + "-wal"); err != nil || info.Size() == 0 {
		t.Fatalf("the real WAL should hold the invite: %v %v", info, err)
	}
	if info, err := os.Stat(link + "-wal"); err != nil || info.Size() != 0 {
		t.Fatalf("the decoy next to the link should be untouched: %v %v", info, err)
	}
	// The store must not hold the decoy open (it would fsync it instead).
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("cannot list open files here: %v", err)
	}
	for _, fd := range fds {
		if target, _ := os.Readlink(filepath.Join("/proc/self/fd", fd.Name())); target == link+"-wal" {
			t.Fatalf("the store holds %s open: it would fsync the wrong file", target)
		}
	}
}
