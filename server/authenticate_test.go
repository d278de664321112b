package server

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/getkin/kin-openapi/openapi3filter"

	"github.com/membership-api/controlplane/auth"
	"github.com/membership-api/controlplane/store"
	"github.com/membership-api/controlplane/store/storetest"
)

// BenchmarkServiceAccountCheck measures the per-request check of a
// service-account token (ActiveServiceAccount: one read by the unique
// client_id index, its workspace preloaded), which has no cache so that a
// deletion is seen at once.
func BenchmarkServiceAccountCheck(b *testing.B) {
	for _, dialect := range storetest.Dialects {
		b.Run(dialect, func(b *testing.B) {
			st := storetest.Open(b, dialect, store.Options{})
			ctx := context.Background()
			if _, err := st.CreateWorkspace(ctx, store.NewWorkspace{Name: "acme", AdminSub: "u-admin", AdminEmail: "admin@acme.test"}); err != nil {
				b.Fatal(err)
			}
			_, sa, err := st.CreateServiceAccount(ctx, "acme", "u-admin", store.NewServiceAccount{Name: "deployer", Role: store.RoleAdmin})
			if err != nil {
				b.Fatal(err)
			}
			a := &authenticator{credentials: st}
			p := &auth.Principal{Sub: sa.ClientID, BoundWorkspace: "acme", ServiceAccount: true, Scopes: []string{"admin"}}
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if _, aerr := a.activeServiceAccount(ctx, p); aerr != nil {
					b.Fatal(aerr)
				}
			}
		})
	}
}

// TestAuthenticate_APIKeySchemeFollowsHeader: BlaxelApiKeyAuth passes an
// API key that came in X-Blaxel-Authorization (alone or with the same key in
// Authorization); ApiKeyAuth passes a key from either header, as it did
// before the second scheme was declared. The failures are 401s that do not
// decide the answer.
func TestAuthenticate_APIKeySchemeFollowsHeader(t *testing.T) {
	st := storetest.Open(t, "sqlite", store.Options{})
	ctx := context.Background()
	if _, err := st.CreateWorkspace(ctx, store.NewWorkspace{Name: "acme", AdminSub: "u-admin", AdminEmail: "admin@acme.test"}); err != nil {
		t.Fatal(err)
	}
	key, _, err := st.CreateAPIKey(ctx, "acme", "u-admin")
	if err != nil {
		t.Fatal(err)
	}
	a := &authenticator{credentials: st}
	for _, tc := range []struct {
		name          string
		headers       []string
		apiKey, bxKey bool // whether ApiKeyAuth, BlaxelApiKeyAuth pass
	}{
		{"Authorization", []string{"Authorization"}, true, false},
		{"X-Blaxel-Authorization", []string{"X-Blaxel-Authorization"}, true, true},
		{"both", []string{"Authorization", "X-Blaxel-Authorization"}, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := httptest.NewRequestWithContext(ctx, http.MethodGet, "/v0/users", nil)
			for _, h := range tc.headers {
				req.Header.Set(h, "Bearer "+key)
			}
			st := &requestState{}
			rctx := context.WithValue(ctx, requestStateKey{}, st)
			check := func(scheme string, want bool) {
				t.Helper()
				err := a.authenticate(rctx, &openapi3filter.AuthenticationInput{
					RequestValidationInput: &openapi3filter.RequestValidationInput{Request: req},
					SecuritySchemeName:     scheme,
				})
				if (err == nil) != want {
					t.Errorf("%s: got %v, want pass=%v", scheme, err, want)
				}
				var ae *authError
				if err != nil && (!errors.As(err, &ae) || ae.status != http.StatusUnauthorized || ae.applies) {
					t.Errorf("%s: got %#v, want a 401 that does not apply (another alternative answers)", scheme, err)
				}
			}
			check(schemeOAuth2, false)
			check(schemeAPIKey, tc.apiKey)
			check(schemeBlaxelAPIKey, tc.bxKey)
			if st.principal == nil || st.principal.APIKey == nil {
				t.Fatalf("principal %+v, want the key's", st.principal)
			}
		})
	}
}
