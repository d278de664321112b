package store_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/membership-api/controlplane/store"
	"github.com/membership-api/controlplane/store/storetest"
)

//nolint:gosec // G101: made-up fixture secrets, the point of the test
func goodFixtures() store.Fixtures {
	return store.Fixtures{Workspaces: []store.FixtureWorkspace{{
		Line: 2, Name: "acme", DisplayName: "Acme Inc",
		Admin:       store.FixtureMember{Sub: "alice", Email: "Alice@Acme.test"},
		Members:     []store.FixtureMember{{Line: 5, Sub: "bob", Email: "bob@acme.test", Role: store.RoleMember}},
		Invitations: []store.FixtureInvitation{{Line: 6, Email: "carol@example.com", TTL: 48 * time.Hour}},
		ServiceAccounts: []store.FixtureServiceAccount{{Line: 7, Name: "ci", Role: store.RoleAdmin, ClientID: "sa_ci_fixture_01",
			ClientSecret: "bls_ci_fixture_secret_01", APIKeys: []store.FixtureAPIKey{{Line: 9, Name: "ci", Key: "bl_ci_fixture_key_000001", ExpiresIn: "30d"}}}},
		APIKeys: []store.FixtureAPIKey{{Line: 10, Sub: "bob", Key: "bl_bob_fixture_key_00001"}},
	}}}
}

// TestFixtures_Load: every kind of fixture is usable as the API would use
// it: members, a pending invitation, a service account's fixed credentials
// and keys with fixed secrets.
func TestFixtures_Load(t *testing.T) {
	t.Parallel()
	storetest.EachDialect(t, func(t *testing.T, dialect string) {
		t.Parallel()
		ctx := context.Background()
		st := storetest.Open(t, dialect, store.Options{})
		if err := st.LoadFixtures(ctx, goodFixtures(), store.FixtureOptions{}); err != nil {
			t.Fatal(err)
		}
		if m, err := st.Membership(ctx, "acme", "bob"); err != nil || m.Role != store.RoleMember {
			t.Fatalf("bob: %v %v", m, err)
		}
		if m, err := st.Membership(ctx, "acme", "alice"); err != nil || m.Role != store.RoleAdmin {
			t.Fatalf("alice: %v %v", m, err)
		}
		if _, err := storetest.PendingInvitation(ctx, st, "acme", "carol@example.com"); err != nil {
			t.Fatalf("carol's invitation: %v", err)
		}
		if sa, err := st.AuthenticateServiceAccount(ctx, "sa_ci_fixture_01", "bls_ci_fixture_secret_01"); err != nil || sa.Role != store.RoleAdmin {
			t.Fatalf("service account: %v %v", sa, err)
		}
		k, err := st.LookupAPIKey(ctx, "bl_ci_fixture_key_000001")
		if err != nil || k.Sub != "sa_ci_fixture_01" || k.ExpiresAt == nil || k.PublicID == "" {
			t.Fatalf("service account key: %+v %v", k, err)
		}
		if k, err := st.LookupAPIKey(ctx, "bl_bob_fixture_key_00001"); err != nil || k.Sub != "bob" {
			t.Fatalf("bob's key: %+v %v", k, err)
		}
		// Loading again over them conflicts, and changes nothing.
		before, err := storetest.CountRows(ctx, st)
		if err != nil {
			t.Fatal(err)
		}
		if err := st.LoadFixtures(ctx, goodFixtures(), store.FixtureOptions{}); err == nil || !strings.Contains(err.Error(), "line 2") {
			t.Fatalf("loading twice: %v, want a refusal at line 2", err)
		}
		after, err := storetest.CountRows(ctx, st)
		if err != nil {
			t.Fatal(err)
		}
		for table, n := range before {
			if after[table] != n {
				t.Errorf("%s: %d rows after a refused load, want %d", table, after[table], n)
			}
		}
		// With Reset, the same fixtures load again over the old data.
		if err := st.LoadFixtures(ctx, goodFixtures(), store.FixtureOptions{Reset: true}); err != nil {
			t.Fatal(err)
		}
	})
}

// TestFixtures_Refused: each bad fixture is refused with its line and the
// rule, and nothing is written.
func TestFixtures_Refused(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		bend func(f *store.Fixtures)
		want string
	}{
		{"unknown role", func(f *store.Fixtures) { f.Workspaces[0].Members[0].Role = "owner" }, `line 5: unknown role "owner"`},
		{"duplicate workspace", func(f *store.Fixtures) {
			dup := f.Workspaces[0]
			dup.Line = 20
			f.Workspaces = append(f.Workspaces, dup)
		}, `line 20: workspace "acme" is declared twice (first at line 2)`},
		{"bad email", func(f *store.Fixtures) { f.Workspaces[0].Invitations[0].Email = "not an email" }, `line 6: bad email "not an email"`},
		{"key of a non-member", func(f *store.Fixtures) { f.Workspaces[0].APIKeys[0].Sub = "mallory" }, `line 10: API key's sub "mallory" is not a member`},
		{"short key", func(f *store.Fixtures) { f.Workspaces[0].APIKeys[0].Key = "bl_short" }, `line 10: API key "bl_short" must start with "bl_"`},
		{"invited member", func(f *store.Fixtures) { f.Workspaces[0].Invitations[0].Email = "bob@acme.test" }, `line 6: "bob@acme.test" is already a member`},
	}
	ctx := context.Background()
	st := storetest.Open(t, "sqlite", store.Options{})
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := goodFixtures()
			c.bend(&f)
			err := st.LoadFixtures(ctx, f, store.FixtureOptions{Reset: true})
			if err == nil || !strings.Contains(err.Error(), c.want) || !errors.Is(err, store.ErrInvalid) {
				t.Fatalf("got %v, want an ErrInvalid saying %q", err, c.want)
			}
			rows, err := storetest.CountRows(ctx, st)
			if err != nil {
				t.Fatal(err)
			}
			if rows["workspaces"] != 0 {
				t.Fatalf("a refused load left %d workspaces", rows["workspaces"])
			}
		})
	}
}

// TestReset: every workspace and all it holds goes; the server's keys and
// a migration tool's bookkeeping table stay.
func TestReset(t *testing.T) {
	t.Parallel()
	storetest.EachDialect(t, func(t *testing.T, dialect string) {
		t.Parallel()
		ctx := context.Background()
		st := storetest.Open(t, dialect, store.Options{})
		before, err := storetest.CountRows(ctx, st)
		if err != nil {
			t.Fatal(err)
		}
		if before["goose_db_version"] == 0 {
			t.Fatal("the test store has no goose_db_version rows: it was not migrated")
		}
		if err := st.LoadFixtures(ctx, goodFixtures(), store.FixtureOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := st.Invite(ctx, store.InviteParams{Workspace: "acme", Caller: "alice", Email: "dave@example.com", TTL: time.Hour}); err != nil {
			t.Fatal(err)
		}
		if err := st.Reset(ctx); err != nil {
			t.Fatal(err)
		}
		rows, err := storetest.CountRows(ctx, st)
		if err != nil {
			t.Fatal(err)
		}
		for table, n := range rows {
			keep := table == "goose_db_version" || table == "secrets" || table == "signing_keys"
			if !keep && n != 0 {
				t.Errorf("%s: %d rows after Reset, want 0", table, n)
			}
		}
		if rows["goose_db_version"] != before["goose_db_version"] || rows["secrets"] == 0 {
			t.Errorf("after Reset: goose_db_version %d rows (want %d), secrets %d (want the cursor key)", rows["goose_db_version"], before["goose_db_version"], rows["secrets"])
		}
		if _, err := st.CursorKey(ctx); err != nil {
			t.Error(err)
		}
	})
}
