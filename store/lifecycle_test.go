package store_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/membership-api/controlplane/store"
	"github.com/membership-api/controlplane/store/storetest"
)

func mustInvite(t *testing.T, st *store.Store, ws store.Workspace, email string) store.Invitation {
	t.Helper()
	inv, err := st.Invite(context.Background(), store.InviteParams{Workspace: ws.Name, Caller: "admin-" + ws.Name, Email: email, TTL: time.Hour})
	if err != nil {
		t.Fatalf("invite %s: %v", email, err)
	}
	return inv
}

func invitationStatuses(t *testing.T, st *store.Store, ws store.Workspace) map[string]int {
	t.Helper()
	users, err := listUsers(context.Background(), st, ws.Name)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	for _, u := range users {
		if u.Accepted {
			got["member"]++
		} else {
			got["pending"]++
		}
	}
	return got
}

func TestLifecycle_Transitions(t *testing.T) {
	eachDialect(t, func(t *testing.T, st *store.Store, clk *clock) {
		ctx := context.Background()
		ws := mustWorkspace(t, st, "acme")

		t.Run("AcceptMakesMemberWithInvitedRole", func(t *testing.T) {
			mustInvite(t, st, ws, "bob@example.com")
			if _, err := st.UpdateRole(ctx, "acme", "admin-acme", "BOB@example.com", store.RoleAdmin); err != nil {
				t.Fatal(err)
			}
			if _, err := st.Accept(ctx, "acme", "bob", "bob@example.com"); err != nil {
				t.Fatal(err)
			}
			m, err := st.Membership(ctx, "acme", "bob")
			if err != nil || m.Role != store.RoleAdmin {
				t.Errorf("got %+v %v, want admin member", m, err)
			}
			if _, err := st.Accept(ctx, "acme", "bob", "bob@example.com"); err != nil {
				t.Errorf("second accept: got %v, want a no-op", err)
			}
		})

		t.Run("DeclineRevokeExpireAreFinal", func(t *testing.T) {
			mustInvite(t, st, ws, "d@example.com")
			if _, _, err := st.Decline(ctx, "acme", "d", "d@example.com"); err != nil {
				t.Fatal(err)
			}
			mustInvite(t, st, ws, "r@example.com")
			if err := st.RemoveUser(ctx, "acme", "admin-acme", "r@example.com"); err != nil {
				t.Fatal(err)
			}
			mustInvite(t, st, ws, "e@example.com")
			clk.Advance(2 * time.Hour)
			for _, email := range []string{"d@example.com", "r@example.com", "e@example.com"} {
				if _, err := st.Accept(ctx, "acme", email, email); !errors.Is(err, store.ErrNotFound) {
					t.Errorf("accept %s: got %v, want ErrNotFound", email, err)
				}
				if _, _, err := st.Decline(ctx, "acme", email, email); !errors.Is(err, store.ErrNotFound) {
					t.Errorf("decline %s: got %v, want ErrNotFound", email, err)
				}
			}
			// Re-inviting starts a fresh pending invitation each time.
			for _, email := range []string{"d@example.com", "r@example.com", "e@example.com"} {
				mustInvite(t, st, ws, email)
				if _, err := st.Accept(ctx, "acme", email, email); err != nil {
					t.Errorf("accept re-invited %s: %v", email, err)
				}
			}
		})

		t.Run("LastAdmin", func(t *testing.T) {
			other := mustWorkspace(t, st, "solo")
			_ = other
			if err := st.RemoveUser(ctx, "solo", "admin-solo", "admin-solo"); !errors.Is(err, store.ErrConflict) {
				t.Errorf("remove last admin: got %v, want ErrConflict", err)
			}
			if _, err := st.UpdateRole(ctx, "solo", "admin-solo", "admin@solo.test", store.RoleMember); !errors.Is(err, store.ErrConflict) {
				t.Errorf("demote last admin: got %v, want ErrConflict", err)
			}
			if _, err := st.Leave(ctx, "solo", "admin-solo"); !errors.Is(err, store.ErrConflict) {
				t.Errorf("last admin leaves: got %v, want ErrConflict", err)
			}
		})

		t.Run("RemovedMembersKeysAreRevoked", func(t *testing.T) {
			if _, err := storetest.AddMember(ctx, st, "acme", "t", storetest.NewMember{Sub: "kim", Email: "kim@example.com", Role: store.RoleMember}); err != nil {
				t.Fatal(err)
			}
			key, _, err := st.CreateAPIKey(ctx, "acme", "kim")
			if err != nil {
				t.Fatal(err)
			}
			if err := st.RemoveUser(ctx, "acme", "admin-acme", "kim"); err != nil {
				t.Fatal(err)
			}
			if _, err := storetest.AddMember(ctx, st, "acme", "t", storetest.NewMember{Sub: "kim", Email: "kim@example.com", Role: store.RoleMember}); err != nil {
				t.Fatal(err)
			}
			if _, err := st.LookupAPIKey(ctx, key); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("key of a removed then re-added member: got %v, want revoked", err)
			}
		})

		t.Run("BadRoleAndUnknownUser", func(t *testing.T) {
			for _, role := range []string{"Admin", "MEMBER", "owner", ""} {
				if _, err := st.UpdateRole(ctx, "acme", "admin-acme", "bob", role); !errors.Is(err, store.ErrInvalid) {
					t.Errorf("role %q: got %v, want ErrInvalid", role, err)
				}
			}
			if err := st.RemoveUser(ctx, "acme", "admin-acme", "nobody@example.com"); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("remove unknown: got %v, want ErrNotFound", err)
			}
		})
	})
}

// race runs fns at the same moment and waits for all.
func race(fns ...func()) {
	var wg sync.WaitGroup
	start := make(chan struct{})
	for _, fn := range fns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			fn()
		}()
	}
	close(start)
	wg.Wait()
}

// TestLifecycle_Races runs each race many times; the database must end in
// exactly one of the states a serial order could produce.
func TestLifecycle_Races(t *testing.T) {
	const rounds = 25
	eachDialect(t, func(t *testing.T, st *store.Store, _ *clock) {
		ctx := context.Background()
		ws := mustWorkspace(t, st, "acme")

		t.Run("AcceptVsRevoke", func(t *testing.T) {
			for i := range rounds {
				email := "ar" + string(rune('a'+i)) + "@example.com"
				mustInvite(t, st, ws, email)
				var acceptErr, revokeErr error
				race(
					func() { _, acceptErr = st.Accept(ctx, "acme", email, email) },
					func() { revokeErr = st.RemoveUser(ctx, "acme", "admin-acme", email) },
				)
				_, memberErr := st.Membership(ctx, "acme", email)
				switch {
				case acceptErr == nil && revokeErr == nil:
					// accept first, then the removal removed the new member
					if memberErr == nil {
						t.Errorf("round %d: accepted then removed, but still a member", i)
					}
				case errors.Is(acceptErr, store.ErrNotFound) && revokeErr == nil:
					if memberErr == nil {
						t.Errorf("round %d: revoked invitation still made a member", i)
					}
				default:
					t.Errorf("round %d: accept %v, revoke %v", i, acceptErr, revokeErr)
				}
				if _, err := storetest.PendingInvitation(ctx, st, ws.Name, email); !errors.Is(err, store.ErrNotFound) {
					t.Errorf("round %d: invitation still pending after the race", i)
				}
			}
		})

		t.Run("AcceptVsReinvite", func(t *testing.T) {
			for i := range rounds {
				email := "ri" + string(rune('a'+i)) + "@example.com"
				mustInvite(t, st, ws, email)
				reinvite := func() {
					_, err := st.Invite(ctx, store.InviteParams{Workspace: "acme", Caller: "admin-acme", Email: email, TTL: time.Hour})
					if err != nil && !errors.Is(err, store.ErrConflict) {
						t.Errorf("round %d: re-invite: %v", i, err)
					}
				}
				// Either outcome of the accept is right; the state after is checked below.
				race(func() { _, _ = st.Accept(ctx, "acme", email, email) }, reinvite, reinvite, reinvite)
				_, memberErr := st.Membership(ctx, "acme", email)
				_, pendingErr := storetest.PendingInvitation(ctx, st, ws.Name, email)
				if memberErr == nil && pendingErr == nil {
					t.Errorf("round %d: %s is a member and still has a pending invitation", i, email)
				}
			}
		})

		t.Run("TwoAccepts", func(t *testing.T) {
			for i := range rounds {
				email := "aa" + string(rune('a'+i)) + "@example.com"
				mustInvite(t, st, ws, email)
				errs := make([]error, 2)
				race(
					func() { _, errs[0] = st.Accept(ctx, "acme", email, email) },
					func() { _, errs[1] = st.Accept(ctx, "acme", email, email) },
				)
				if errs[0] != nil || errs[1] != nil {
					t.Errorf("round %d: %v / %v, want both to succeed (the second is a no-op)", i, errs[0], errs[1])
				}
			}
			got := invitationStatuses(t, st, ws)
			counts, _ := storetest.CountRows(ctx, st)
			if int64(got["member"]) != counts["members"] {
				t.Errorf("members listed %d, rows %d", got["member"], counts["members"])
			}
		})

		t.Run("RoleChangeVsRemoval", func(t *testing.T) {
			for i := range rounds {
				sub := "rr" + string(rune('a'+i))
				if _, err := storetest.AddMember(ctx, st, "acme", "t", storetest.NewMember{Sub: sub, Email: sub + "@example.com", Role: store.RoleMember}); err != nil {
					t.Fatal(err)
				}
				var roleErr, removeErr error
				race(
					func() { _, roleErr = st.UpdateRole(ctx, "acme", "admin-acme", sub, store.RoleAdmin) },
					func() { removeErr = st.RemoveUser(ctx, "acme", "admin-acme", sub) },
				)
				_, memberErr := st.Membership(ctx, "acme", sub)
				if removeErr != nil || memberErr == nil {
					t.Errorf("round %d: removal %v, still member: %v", i, removeErr, memberErr == nil)
				}
				if roleErr != nil && !errors.Is(roleErr, store.ErrNotFound) {
					t.Errorf("round %d: role change: %v", i, roleErr)
				}
			}
		})

		t.Run("DemotedAdminCannotDemote", func(t *testing.T) {
			// Three admins: the first keeps the workspace administered, so
			// only the callers' own roles decide. Each demotes the other;
			// whoever runs second is no longer an admin and must fail.
			for i := range rounds {
				name := "trio" + string(rune('a'+i))
				mustWorkspace(t, st, name)
				for _, sub := range []string{"u1", "u2"} {
					if _, err := storetest.AddMember(ctx, st, name, "t", storetest.NewMember{Sub: sub, Email: sub + "@example.com", Role: store.RoleAdmin}); err != nil {
						t.Fatal(err)
					}
				}
				errs := make([]error, 2)
				race(
					func() { _, errs[0] = st.UpdateRole(ctx, name, "u1", "u2", store.RoleMember) },
					func() { _, errs[1] = st.UpdateRole(ctx, name, "u2", "u1", store.RoleMember) },
				)
				if (errs[0] == nil) == (errs[1] == nil) {
					t.Errorf("round %d: %v / %v; want exactly one demotion", i, errs[0], errs[1])
				}
				for _, err := range errs {
					if err != nil && !errors.Is(err, store.ErrForbidden) {
						t.Errorf("round %d: %v, want ErrForbidden", i, err)
					}
				}
			}
		})

		t.Run("TwoAdminsDemoteEachOther", func(t *testing.T) {
			for i := range rounds {
				name := "duo" + string(rune('a'+i))
				mustWorkspace(t, st, name)
				if _, err := storetest.AddMember(ctx, st, name, "t", storetest.NewMember{Sub: "second", Email: "second@example.com", Role: store.RoleAdmin}); err != nil {
					t.Fatal(err)
				}
				errs := make([]error, 2)
				race(
					func() { _, errs[0] = st.UpdateRole(ctx, name, "second", "admin-"+name, store.RoleMember) },
					func() { _, errs[1] = st.UpdateRole(ctx, name, "admin-"+name, "second", store.RoleMember) },
				)
				ok := 0
				for _, err := range errs {
					if err == nil {
						ok++
					} else if !errors.Is(err, store.ErrConflict) && !errors.Is(err, store.ErrForbidden) {
						t.Errorf("round %d: %v", i, err)
					}
				}
				if ok != 1 {
					t.Errorf("round %d: %d demotions succeeded, want exactly 1 (one admin must remain)", i, ok)
				}
			}
		})
	})
}
