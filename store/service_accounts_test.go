package store_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/membership-api/controlplane/store"
	"github.com/membership-api/controlplane/store/storetest"
)

func TestParseExpiresIn(t *testing.T) {
	for in, want := range map[string]time.Duration{
		"30d": 30 * 24 * time.Hour, "24h": 24 * time.Hour, "1w": 7 * 24 * time.Hour, "90m": 90 * time.Minute, "45s": 45 * time.Second,
		"3650d": 3650 * 24 * time.Hour,
	} {
		if got, err := store.ParseExpiresIn(in); err != nil || got != want {
			t.Errorf("%q: %v %v, want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "d", "0d", "-1d", "1.5d", "1h30m", "30", "30y", "3651d", "522w", " 1d", "1D", "99999999999d"} {
		if _, err := store.ParseExpiresIn(in); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("%q: %v, want ErrInvalid", in, err)
		}
	}
}

// TestAuthenticateServiceAccount: the right secret authenticates, a wrong
// one and an unknown client are not found alike, and a deleted account is
// gone at once.
func TestAuthenticateServiceAccount(t *testing.T) {
	storetest.EachDialect(t, func(t *testing.T, dialect string) {
		st := storetest.Open(t, dialect, store.Options{})
		ctx := context.Background()
		if _, err := st.CreateWorkspace(ctx, store.NewWorkspace{Name: "acme", AdminSub: "u-admin", AdminEmail: "admin@acme.test"}); err != nil {
			t.Fatal(err)
		}
		secret, v, err := st.CreateServiceAccount(ctx, "acme", "u-admin", store.NewServiceAccount{Name: "ci"})
		if err != nil {
			t.Fatal(err)
		}
		got, err := st.AuthenticateServiceAccount(ctx, v.ClientID, secret)
		if err != nil || got.Workspace.Name != "acme" || got.Role != store.RoleMember {
			t.Fatalf("authenticate: %+v %v", got, err)
		}
		for name, c := range map[string][2]string{
			"wrong secret":   {v.ClientID, secret + "x"},
			"unknown client": {"sa_nothere", secret},
			"not a client":   {"u-admin", secret},
			"empty":          {"", ""},
		} {
			if _, err := st.AuthenticateServiceAccount(ctx, c[0], c[1]); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("%s: %v, want ErrNotFound", name, err)
			}
		}
		if _, err := st.DeleteServiceAccount(ctx, "acme", "u-admin", v.ClientID); err != nil {
			t.Fatal(err)
		}
		if _, err := st.ActiveServiceAccount(ctx, v.ClientID); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("after delete: %v, want ErrNotFound", err)
		}
	})
}
