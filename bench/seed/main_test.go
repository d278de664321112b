package main

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/membership-api/controlplane/store"
	"github.com/membership-api/controlplane/store/storetest"
)

// TestSets_MatchPackageComment: the sets seed what the package comment (and
// make bench's labels) say, 336,153 rows in all.
func TestSets_MatchPackageComment(t *testing.T) {
	got := rows(sets)
	want := map[string]int64{"workspaces": 1004, "members": 125051, "invitations": 210098}
	for table, w := range want {
		if got[table] != w {
			t.Errorf("%s: %d rows, want %d", table, got[table], w)
		}
	}
}

// testSets are sets' shapes at a fiftieth of their size (the same names,
// kinds of rows and statements), so the test below seeds in a second
// instead of a minute; the full size is what make bench seeds and times.
var testSets = []workspaceSet{
	{prefix: "small", count: 1, members: 1},
	{prefix: "big", count: 1, members: 400, pending: 1401, closed: 200},
	{prefix: "list100", count: 1, members: 50, pending: 50},
	{prefix: "list10k", count: 1, members: 100, pending: 100},
	{prefix: "inv", count: 20, members: 100, invitee: "invitee@bench.test"},
}

// TestSeed_RowsActLikeTheApps seeds a fresh database of each dialect and
// checks that the store treats the rows as its own: counts as the package
// comment says, the admin's membership, member emails found case-insensitively
// (an invite of a member's email is a conflict), a re-invite of a seeded
// pending invitation refreshing that row (times readable, partial index
// hit), and the invitee accepting a seeded invitation (expiry compared as the
// store writes it).
func TestSeed_RowsActLikeTheApps(t *testing.T) {
	for _, dialect := range storetest.Dialects {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			dsn := storetest.DSN(t, dialect)
			n, err := run(ctx, dsn, testSets)
			if err != nil {
				t.Fatalf("seed: %v", err)
			}
			want := rows(testSets)
			if total := want["workspaces"] + want["members"] + want["invitations"]; n != total {
				t.Errorf("seeded %d rows, want %d", n, total)
			}
			st := storetest.OpenDSN(t, dsn, store.Options{})

			counts, err := storetest.CountRows(ctx, st)
			if err != nil {
				t.Fatal(err)
			}
			want["outbox_messages"], want["api_keys"] = 0, 0
			for table, w := range want {
				if counts[table] != w {
					t.Errorf("%s: got %d rows, want %d", table, counts[table], w)
				}
			}

			m, err := st.Membership(ctx, "big", adminSub)
			if err != nil || m.Role != store.RoleAdmin {
				t.Fatalf("Membership(big, %s) = %+v, %v; want admin", adminSub, m, err)
			}
			invite := func(email string) (store.Invitation, error) {
				return st.Invite(ctx, store.InviteParams{Workspace: "big", Caller: adminSub, Email: email, TTL: time.Hour})
			}
			if _, err := invite("USER-7@Big.test"); !errors.Is(err, store.ErrConflict) {
				t.Errorf("invite of a seeded member's email: got %v, want ErrConflict", err)
			}
			seeded, err := storetest.PendingInvitation(ctx, st, m.Workspace.Name, "invitee-5@big.test")
			if err != nil {
				t.Fatalf("seeded pending invitation: %v", err)
			}
			again, err := invite("invitee-5@big.test")
			if err != nil || again.ID != seeded.ID {
				t.Errorf("re-invite of a seeded pending email: got ID %d, %v; want the seeded ID %d", again.ID, err, seeded.ID)
			}
			if _, err := invite("new@big.test"); err != nil {
				t.Errorf("invite of a new email: %v", err)
			}

			if _, err := st.Accept(ctx, "inv-7", "bench-invitee", "invitee@bench.test"); err != nil {
				t.Fatalf("accept a seeded invitation: %v", err)
			}
			if m, err := st.Membership(ctx, "inv-7", "bench-invitee"); err != nil || m.Role != store.RoleMember {
				t.Errorf("after accepting: Membership = %+v, %v; want member", m, err)
			}
			if _, err := st.CreateWorkspace(ctx, store.NewWorkspace{Name: "big", AdminSub: "x", AdminEmail: "x@x.test"}); !errors.Is(err, store.ErrConflict) {
				t.Errorf("CreateWorkspace(big): got %v, want ErrConflict", err)
			}
		})
	}
}
