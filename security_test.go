package main

import (
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"

	"controlplane/server"
)

// apiKeyRefused lists operations that an API key may not call at all (the
// handler answers 403 after the security step); see README "Auth model".
var apiKeyRefused = map[string]bool{
	"ListAllPendingInvitations":  true,
	"AcceptWorkspaceInvitation":  true,
	"DeclineWorkspaceInvitation": true,
	"LeaveWorkspace":             true,
}

// TestSecurity_EveryOperation walks every operation in openapi/controlplane.yml
// so operations added to the YAML are covered with no test change: no
// credentials → 401; a valid token without the declared scopes → 403; a
// token with the declared scopes, or an API key, passes the security step.
func TestSecurity_EveryOperation(t *testing.T) {
	f := newFixture(t, "sqlite")
	doc := loadSpec(t)
	param := regexp.MustCompile(`\{[^}]+\}`)
	count := 0
	for path, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			count++
			t.Run(op.OperationID, func(t *testing.T) {
				url := server.APIBasePath + param.ReplaceAllString(path, "acme")
				body := ""
				if op.RequestBody != nil {
					body = `{}`
				}
				security := doc.Security
				if op.Security != nil {
					security = *op.Security
				}
				if len(security) == 0 {
					t.Skip("operation declares no security")
				}
				var oauthScopes []string
				for _, req := range security {
					if scopes, ok := req["OAuth2"]; ok {
						oauthScopes = scopes
					}
				}

				resp, b := f.do(t, method, url, with(bearer("x"), "Authorization", ""), body)
				if resp.StatusCode != http.StatusUnauthorized {
					t.Errorf("no credentials: got %d %s, want 401", resp.StatusCode, b)
				}
				if len(oauthScopes) > 0 {
					resp, b = f.do(t, method, url, bearer(f.token("u-admin", "admin@acme.test", "unrelated:scope")), body)
					if resp.StatusCode != http.StatusForbidden {
						t.Errorf("token without %v: got %d %s, want 403", oauthScopes, resp.StatusCode, b)
					}
					resp, b = f.do(t, method, url, bearer(f.token("u-admin", "admin@acme.test", strings.Join(oauthScopes, " "))), body)
					if resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden {
						t.Errorf("token with %v: got %d %s, want past the security step", oauthScopes, resp.StatusCode, b)
					}
				}
				if slices.ContainsFunc(security, func(r openapi3.SecurityRequirement) bool { _, ok := r["ApiKeyAuth"]; return ok }) {
					resp, b = f.do(t, method, url, bearer(f.adminKey), body)
					want403 := apiKeyRefused[op.OperationID]
					if (resp.StatusCode == http.StatusForbidden) != want403 || resp.StatusCode == http.StatusUnauthorized {
						t.Errorf("API key: got %d %s (refused by design: %v)", resp.StatusCode, b, want403)
					}
				}
			})
		}
	}
	if count == 0 {
		t.Fatal("the spec has no operations")
	}
}
