package e2e_test

import (
	"context"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/pem"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/golang-jwt/jwt/v5"

	"github.com/membership-api/controlplane/store"
)

// apiKeyRefused lists operations that an API key may not call at all (the
// handler answers 403 after the security step); see docs/api/auth.md.
var apiKeyRefused = map[string]bool{
	"ListAllPendingInvitations":  true,
	"AcceptWorkspaceInvitation":  true,
	"DeclineWorkspaceInvitation": true,
	"LeaveWorkspace":             true,
	"CreateWorkspace":            true,
}

// unsecured lists the operations the YAML declares open (security: []),
// each with the reason: any other operation without security is a defect.
var unsecured = map[string]string{
	"OauthToken": "the token endpoint: clients authenticate with their client credentials in the request (TestOAuth_Errors)",
}

// TestSecurity_EveryOperation walks every operation in openapi/controlplane.yml
// so operations added to the YAML are covered with no test change: no
// credentials → 401; a valid token without the declared scopes → 403; a
// token with the declared scopes, or an API key, passes the security step.
func TestSecurity_EveryOperation(t *testing.T) {
	t.Parallel()
	f := newTenant(t, "sqlite")
	doc := loadSpec(t)
	// DeleteWorkspace acts on a workspace of its own: on acme it would take
	// the fixture's keys (and the workspace) from the operations after it.
	if _, err := f.store().CreateWorkspace(context.Background(), store.NewWorkspace{Name: f.uniq("doomed"), AdminSub: f.adminSub, AdminEmail: f.adminEmail}); err != nil {
		t.Fatal(err)
	}
	forEachOperation(t, f.ws, func(method, url string, op *openapi3.Operation) {
		t.Run(op.OperationID, func(t *testing.T) {
			if op.OperationID == "DeleteWorkspace" {
				url = strings.Replace(url, "/"+f.ws, "/"+f.uniq("doomed"), 1)
			}
			body := ""
			if op.RequestBody != nil {
				body = `{}`
			}
			security := doc.Security
			if op.Security != nil {
				security = *op.Security
			}
			if len(security) == 0 {
				if reason, ok := unsecured[op.OperationID]; !ok {
					t.Errorf("declares no security, and is not one of the operations meant to be open (unsecured)")
				} else {
					t.Skip(reason)
				}
				return
			}
			var oauthScopes []string
			for _, req := range security {
				if scopes, ok := req["OAuth2"]; ok {
					oauthScopes = scopes
				}
			}

			resp, b := f.do(t, method, url, with(f.bearer("x"), "Authorization", ""), body)
			if resp.StatusCode != http.StatusUnauthorized {
				t.Errorf("no credentials: got %d %s, want 401", resp.StatusCode, b)
			}
			if len(oauthScopes) > 0 {
				resp, b = f.do(t, method, url, f.bearer(f.token(f.adminSub, f.adminEmail, "unrelated:scope")), body)
				if resp.StatusCode != http.StatusForbidden {
					t.Errorf("token without %v: got %d %s, want 403", oauthScopes, resp.StatusCode, b)
				}
				resp, b = f.do(t, method, url, f.bearer(f.token(f.adminSub, f.adminEmail, strings.Join(oauthScopes, " "))), body)
				if resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden {
					t.Errorf("token with %v: got %d %s, want past the security step", oauthScopes, resp.StatusCode, b)
				}
			}
			hasScheme := func(name string) bool {
				return slices.ContainsFunc(security, func(r openapi3.SecurityRequirement) bool { _, ok := r[name]; return ok })
			}
			if hasScheme("ApiKeyAuth") {
				want403 := apiKeyRefused[op.OperationID]
				resp, b = f.do(t, method, url, f.bearer(f.adminKey), body)
				if (resp.StatusCode == http.StatusForbidden) != want403 || resp.StatusCode == http.StatusUnauthorized {
					t.Errorf("API key: got %d %s (refused by design: %v)", resp.StatusCode, b, want403)
				}
				// Blaxel's SDKs send the key in X-Blaxel-Authorization:
				// every operation taking a key declares that header's
				// scheme too, so contract validators accept those requests.
				if !hasScheme("BlaxelApiKeyAuth") {
					t.Errorf("security lists ApiKeyAuth but not BlaxelApiKeyAuth")
				}
				h := with(f.bearer(f.adminKey), "Authorization", "")
				h.Set("X-Blaxel-Authorization", "Bearer "+f.adminKey)
				resp, b = f.do(t, method, url, h, body)
				if (resp.StatusCode == http.StatusForbidden) != want403 || resp.StatusCode == http.StatusUnauthorized {
					t.Errorf("API key in X-Blaxel-Authorization: got %d %s (refused by design: %v)", resp.StatusCode, b, want403)
				}
			}
		})
	})
}

// newExternalIssuerFixture serves SQLite with an external issuer
// (https://idp.example) whose Ed25519 key it returns, for signing its tokens.
func newExternalIssuerFixture(t *testing.T) (*fixture, ed25519.PrivateKey) {
	t.Helper()
	_, priv, _ := ed25519.GenerateKey(nil)
	der, _ := x509.MarshalPKIXPublicKey(priv.Public())
	keyFile := filepath.Join(t.TempDir(), "issuer.pem")
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return newFixture(t, "sqlite", "--jwt-public-key", keyFile, "--jwt-issuer", "https://idp.example"), priv
}

// TestSecurity_ExternalIssuer: configuring an external issuer turns the
// development issuer off; tokens of the external one are accepted.
func TestSecurity_ExternalIssuer(t *testing.T) {
	t.Parallel()
	f, priv := newExternalIssuerFixture(t)

	devToken := f.token(f.adminSub, f.adminEmail, "workspaces:invite")
	if resp, body := f.do(t, "POST", "/v0/users", f.bearer(devToken), `{"email":"a@b.co"}`); resp.StatusCode != 401 {
		t.Errorf("development token with an external issuer configured: got %d %s, want 401", resp.StatusCode, body)
	}
	external, _ := jwt.NewWithClaims(jwt.SigningMethodEdDSA, jwt.MapClaims{"iss": "https://idp.example", "sub": f.adminSub,
		"scope": "workspaces:invite", "exp": time.Now().Add(time.Hour).Unix()}).SignedString(priv)
	if resp, body := f.do(t, "POST", "/v0/users", f.bearer(external), `{"email":"a@b.co"}`); resp.StatusCode != 200 {
		t.Errorf("external token: got %d %s, want 200", resp.StatusCode, body)
	}
	if strings.Contains(f.srv.logs.String(), "trusting the built-in development issuer") {
		t.Error("serve still announces the development issuer")
	}
}
