package store_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/membership-api/controlplane/store"
	"github.com/membership-api/controlplane/store/storetest"
)

// TestCheckEmail: the one email rule, in its production form and with local
// domains allowed for development.
func TestCheckEmail(t *testing.T) {
	local64 := strings.Repeat("a", 64)
	for _, tc := range []struct {
		email           string
		strict, devMode bool // accepted by the production rule, with AllowLocalDomains
	}{
		// Addresses the tests and docs use stay valid.
		{"a@b.co", true, true},
		{"admin@acme.test", true, true},
		{"x@y.z", true, true},
		{"New.User+tag@Example.COM", true, true},
		{"o'brien@sub.example.co.uk", true, true},
		{"a@xn--bcher-kva.example", true, true},
		{"a@123.example", true, true}, // digits in a label other than the last are fine
		{local64 + "@example.com", true, true},
		// Local or private destinations: refused unless allowed.
		{"user@localhost", false, true},
		{"user@LOCALHOST", false, true},
		{"user@mailhog", false, true},
		{"user@app.localhost", false, true},
		{"user@127.0.0.1", false, true},
		{"user@10.0.0.1", false, true},
		{"user@0x7f.1", false, true},
		{"user@example.123", false, true},
		// Never accepted.
		{"user@[127.0.0.1]", false, false},
		{"user@[IPv6:::1]", false, false},
		{local64 + "a@example.com", false, false},
		{strings.Repeat("a", 60) + "@" + strings.Repeat("b.", 97) + "com", false, false}, // 257 characters
		{".a@example.com", false, false},
		{"a.@example.com", false, false},
		{"a..b@example.com", false, false},
		{"a@example..com", false, false},
		{"a@.example.com", false, false},
		{"a@example.com.", false, false},
		{"a@-example.com", false, false},
		{"a@example-.com", false, false},
		{"a@" + strings.Repeat("b", 64) + ".com", false, false},
		{"a@b_c.com", false, false},
		{"not an email", false, false},
		{"a b@c.de", false, false},
		{"Alice <a@b.co>", false, false},
		{"a@b.co\r\nBcc: x@y.z", false, false},
		{"bób@example.com", false, false},
		{"a@@b.co", false, false},
		{"a@b.co,c@d.co", false, false},
		{"\"a\"@b.co", false, false},
		{"@b.co", false, false},
		{"a@", false, false},
		{"", false, false},
	} {
		for _, mode := range []struct {
			opts store.EmailOptions
			want bool
		}{{store.EmailOptions{}, tc.strict}, {store.EmailOptions{AllowLocalDomains: true}, tc.devMode}} {
			err := store.CheckEmail(tc.email, mode.opts)
			if (err == nil) != mode.want {
				t.Errorf("%q with %+v: got %v, want accepted %v", tc.email, mode.opts, err, mode.want)
			}
			if err != nil && strings.ContainsAny(err.Error(), "\r\n") {
				t.Errorf("%q: error %q spans lines", tc.email, err)
			}
		}
	}
}

// TestEmailRule_Store: CreateWorkspace and AddMember apply the rule (to the
// normalised address) and store nothing when it refuses; an empty email is a
// service account's.
func TestEmailRule_Store(t *testing.T) {
	ctx := context.Background()
	st := storetest.Open(t, "sqlite", store.Options{})
	for _, bad := range []string{"not an email", "admin@localhost", "admin@127.0.0.1", strings.Repeat("a", 65) + "@acme.test"} {
		if _, err := st.CreateWorkspace(ctx, store.NewWorkspace{Name: "acme", AdminSub: "admin", AdminEmail: bad}); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("CreateWorkspace with %q: got %v, want ErrInvalid", bad, err)
		}
	}
	if _, err := st.CreateWorkspace(ctx, store.NewWorkspace{Name: "acme", AdminSub: "admin", AdminEmail: " Admin@Acme.test "}); err != nil {
		t.Fatalf("CreateWorkspace after refusals (the name must still be free): %v", err)
	}
	if _, err := st.CreateWorkspace(ctx, store.NewWorkspace{Name: "dev", AdminSub: "admin", AdminEmail: "admin@localhost"}, store.EmailOptions{AllowLocalDomains: true}); err != nil {
		t.Errorf("CreateWorkspace with local domains allowed: %v", err)
	}
	if _, err := storetest.AddMember(ctx, st, "acme", "t", storetest.NewMember{Sub: "kim", Email: "kim@localhost", Role: store.RoleMember}); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("AddMember kim@localhost: got %v, want ErrInvalid", err)
	}
	if _, err := storetest.AddMember(ctx, st, "acme", "t", storetest.NewMember{Sub: "kim", Email: "kim@localhost", Role: store.RoleMember}, store.EmailOptions{AllowLocalDomains: true}); err != nil {
		t.Errorf("AddMember kim@localhost with local domains allowed: %v", err)
	}
	if _, err := storetest.AddMember(ctx, st, "acme", "t", storetest.NewMember{Sub: "robot", Role: store.RoleMember}); err != nil {
		t.Errorf("AddMember without email (service account): %v", err)
	}
	users, err := listUsers(ctx, st, mustMembership(t, st, "acme", "admin").Workspace.Name)
	if err != nil {
		t.Fatal(err)
	}
	if len(users) != 3 || users[0].Email != "admin@acme.test" {
		t.Errorf("members: got %+v, want admin (normalised), kim and robot", users)
	}
}

func mustMembership(t *testing.T, st *store.Store, workspace, sub string) store.Membership {
	t.Helper()
	m, err := st.Membership(context.Background(), workspace, sub)
	if err != nil {
		t.Fatal(err)
	}
	return m
}
