package store_test

import (
	"context"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/membership-api/controlplane/store"
	"github.com/membership-api/controlplane/store/storetest"
)

// listUsers reads a workspace's whole user list.
func listUsers(ctx context.Context, st *store.Store, workspaceName string) ([]store.UserEntry, error) {
	var users []store.UserEntry
	_, err := st.EachUser(ctx, workspaceName, nil, 0, func(u store.UserEntry, _ store.ListPosition) error {
		users = append(users, u)
		return nil
	})
	return users, err
}

// pageUsers walks the user list limit entries at a time, as a client
// following Link headers does, and returns what it saw in order.
func pageUsers(t *testing.T, st *store.Store, workspaceName string, limit int) []store.UserEntry {
	t.Helper()
	var all []store.UserEntry
	var after *store.ListPosition
	for pages := 0; ; pages++ {
		if pages > 1000 {
			t.Fatal("the walk does not end")
		}
		n := 0
		next, err := st.EachUser(context.Background(), workspaceName, after, limit, func(u store.UserEntry, _ store.ListPosition) error {
			all = append(all, u)
			n++
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if n > limit {
			t.Fatalf("page of %d entries with limit %d", n, limit)
		}
		if next == nil {
			return all
		}
		if n != limit {
			t.Fatalf("a page of %d entries (limit %d) announces a next one", n, limit)
		}
		after = next
	}
}

// The user list: members (oldest first, ties by id), then pending
// invitations (same), expired flagged; others' and non-pending invitations
// absent. Every page size gives the same list, and the last page announces
// no next one, also when it is exactly full.
func TestLists_UsersOrderAndPages(t *testing.T) {
	eachDialect(t, func(t *testing.T, st *store.Store, clk *clock) {
		ctx := context.Background()
		ws := mustWorkspace(t, st, "acme")
		other := mustWorkspace(t, st, "other")
		mustInvite(t, st, other, "stranger@example.com")
		for i := range 4 { // two members share a created_at: id decides
			if i != 2 {
				clk.Advance(time.Millisecond)
			}
			if _, err := storetest.AddMember(ctx, st, "acme", "admin-acme", storetest.NewMember{Sub: fmt.Sprintf("m%d", i), Email: fmt.Sprintf("m%d@acme.test", i), Role: store.RoleMember}); err != nil {
				t.Fatal(err)
			}
		}
		for i := range 5 {
			if i != 3 {
				clk.Advance(time.Millisecond)
			}
			mustInvite(t, st, ws, fmt.Sprintf("i%d@example.com", i))
		}
		if _, _, err := st.Decline(ctx, "acme", "i4", "i4@example.com"); err != nil {
			t.Fatal(err)
		}
		clk.Advance(2 * time.Hour) // mustInvite's one-hour invitations have expired
		mustInvite(t, st, ws, "late@example.com")

		want := []string{"admin@acme.test", "m0@acme.test", "m1@acme.test", "m2@acme.test", "m3@acme.test",
			"i0@example.com", "i1@example.com", "i2@example.com", "i3@example.com", "late@example.com"}
		for _, limit := range []int{0, 1, 2, 3, 5, 10, 11, store.MaxListLimit} {
			var got []store.UserEntry
			if limit == 0 {
				var err error
				if got, err = listUsers(ctx, st, ws.Name); err != nil {
					t.Fatal(err)
				}
			} else {
				got = pageUsers(t, st, ws.Name, limit)
			}
			var emails []string
			for _, u := range got {
				emails = append(emails, u.Email)
			}
			if !reflect.DeepEqual(emails, want) {
				t.Errorf("limit %d: got %v, want %v", limit, emails, want)
				continue
			}
			m3, i0, late := got[4], got[5], got[9]
			if !m3.Accepted || m3.Sub != "m3" || m3.Role != store.RoleMember || m3.Expired {
				t.Errorf("limit %d: member entry %+v", limit, m3)
			}
			if i0.Accepted || i0.Sub != "" || !i0.Expired || i0.Source != store.SourceInvitation || late.Expired {
				t.Errorf("limit %d: invitation entries %+v, %+v (want the first expired, the last not)", limit, i0, late)
			}
		}
	})
}

// My invitations: pending and unexpired only, oldest first, each with its
// workspace, the inviter's email and the workspace's member count (one
// grouped count, not a subquery per row); paged like the user list.
func TestLists_PendingInvitationsFor(t *testing.T) {
	eachDialect(t, func(t *testing.T, st *store.Store, clk *clock) {
		ctx := context.Background()
		var want []string
		for i := range 6 {
			clk.Advance(time.Millisecond)
			name := fmt.Sprintf("ws%d", i)
			ws := mustWorkspace(t, st, name)
			for j := range i { // ws<i> has 1 + i members
				if _, err := storetest.AddMember(ctx, st, name, "admin-"+name, storetest.NewMember{Sub: fmt.Sprintf("u%d", j), Role: store.RoleMember}); err != nil {
					t.Fatal(err)
				}
			}
			mustInvite(t, st, ws, "Bob@Example.com")
			mustInvite(t, st, ws, "carol@example.com")
			want = append(want, fmt.Sprintf("%s:%d:admin@%s.test", name, 1+i, name))
		}
		if _, _, err := st.Decline(ctx, "ws2", "bob", "bob@example.com"); err != nil {
			t.Fatal(err)
		}
		want = append(want[:2], want[3:]...)
		for _, limit := range []int{0, 1, 2, 4, 5, 6} {
			var got []string
			var after *store.ListPosition
			for {
				n := 0
				next, err := st.EachPendingInvitationFor(ctx, "bob@EXAMPLE.com", after, limit, func(v store.InvitationView, _ store.ListPosition) error {
					if v.Email != "bob@example.com" || v.Status != store.InvitationPending || v.InvitedBy != "admin-"+v.WorkspaceName {
						t.Errorf("view %+v", v)
					}
					got = append(got, fmt.Sprintf("%s:%d:%s", v.WorkspaceName, v.MemberCount, v.InviterEmail))
					n++
					return nil
				})
				if err != nil {
					t.Fatal(err)
				}
				if next == nil {
					break
				}
				if n != limit {
					t.Fatalf("limit %d: a page of %d announces a next one", limit, n)
				}
				after = next
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("limit %d: got %v, want %v", limit, got, want)
			}
		}
		clk.Advance(2 * time.Hour)
		next, err := st.EachPendingInvitationFor(ctx, "bob@example.com", nil, 0, func(v store.InvitationView, _ store.ListPosition) error {
			t.Errorf("expired invitation listed: %+v", v)
			return nil
		})
		if err != nil || next != nil {
			t.Errorf("after expiry: next %v, err %v", next, err)
		}
	})
}

// A walk that began keeps its order while others insert: a position taken
// before the inserts still resumes after the same entry, and entries that
// existed before the walk appear once each. And an error from fn stops the
// walk and comes back as it is.
func TestLists_ResumeAfterInsertsAndStop(t *testing.T) {
	eachDialect(t, func(t *testing.T, st *store.Store, clk *clock) {
		ctx := context.Background()
		ws := mustWorkspace(t, st, "acme")
		for i := range 4 {
			clk.Advance(time.Millisecond)
			mustInvite(t, st, ws, fmt.Sprintf("i%d@example.com", i))
		}
		var seen []string
		take := func(u store.UserEntry, _ store.ListPosition) error { seen = append(seen, u.Email); return nil }
		next, err := st.EachUser(ctx, ws.Name, nil, 2, take)
		if err != nil || next == nil {
			t.Fatalf("first page: next %v, err %v", next, err)
		}
		// Meanwhile: a member joins (before the position: not seen), an
		// invitation is accepted (after it: seen as the member? no, the
		// members were passed; it leaves the invitations), one is added.
		clk.Advance(time.Millisecond)
		if _, err := storetest.AddMember(ctx, st, "acme", "admin-acme", storetest.NewMember{Sub: "new", Email: "new@acme.test", Role: store.RoleMember}); err != nil {
			t.Fatal(err)
		}
		mustInvite(t, st, ws, "later@example.com")
		if _, err := st.EachUser(ctx, ws.Name, next, 0, take); err != nil {
			t.Fatal(err)
		}
		want := []string{"admin@acme.test", "i0@example.com", "i1@example.com", "i2@example.com", "i3@example.com", "later@example.com"}
		if !reflect.DeepEqual(seen, want) {
			t.Errorf("got %v, want %v", seen, want)
		}

		stop := fmt.Errorf("stop")
		n := 0
		_, err = st.EachUser(ctx, ws.Name, nil, 0, func(store.UserEntry, store.ListPosition) error { n++; return stop })
		if err != stop || n != 1 { //nolint:errorlint // fn's own error, as is: identity is the point
			t.Errorf("fn's error: got %v after %d entries, want it back after 1", err, n)
		}
	})
}
