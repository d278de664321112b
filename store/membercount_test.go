package store_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/membership-api/controlplane/store"
	"github.com/membership-api/controlplane/store/storetest"
)

// storedAndCounted returns the workspace's stored MemberCount and its
// members counted.
func storedAndCounted(t *testing.T, st *store.Store, name string) (stored, counted int64) {
	t.Helper()
	ws, err := st.WorkspaceForTest(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	n, err := listUsersCount(st, ws.Name)
	if err != nil {
		t.Fatal(err)
	}
	return ws.MemberCount, n
}

func listUsersCount(st *store.Store, workspaceName string) (int64, error) {
	var n int64
	_, err := st.EachUser(context.Background(), workspaceName, nil, 0, func(u store.UserEntry, _ store.ListPosition) error {
		if u.Accepted {
			n++
		}
		return nil
	})
	return n, err
}

// TestMemberCount: the stored count follows every way members come and go,
// also when accepts, removals and leaves race. (Nothing recounts at start
// any more: every release since the column came keeps it in each change.)
func TestMemberCount(t *testing.T) {
	eachDialect(t, func(t *testing.T, st *store.Store, _ *clock) {
		ctx := context.Background()
		ws := mustWorkspace(t, st, "acme")
		if _, err := storetest.AddMember(ctx, st, "acme", "test", storetest.NewMember{Sub: "m0", Email: "m0@acme.test", Role: store.RoleMember}); err != nil {
			t.Fatal(err)
		}
		const n = 12
		for i := range n {
			mustInvite(t, st, ws, fmt.Sprintf("u%d@acme.test", i))
		}
		var fns []func()
		for i := range n {
			email, sub := fmt.Sprintf("u%d@acme.test", i), fmt.Sprintf("u%d", i)
			fns = append(fns, func() {
				if _, err := st.Accept(ctx, "acme", sub, email); err == nil && i%3 == 0 {
					_, _ = st.Leave(ctx, "acme", sub) // may lose its race; the counts are checked after
				}
			})
		}
		fns = append(fns, func() { _ = st.RemoveUser(ctx, "acme", "admin-acme", "m0") }) // may lose its race too
		race(fns...)
		stored, counted := storedAndCounted(t, st, "acme")
		if stored != counted || counted != 1+n-n/3 {
			t.Fatalf("stored %d, counted %d, want both %d", stored, counted, 1+n-n/3)
		}
	})
}
