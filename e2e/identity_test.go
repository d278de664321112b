package e2e_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"

	"github.com/membership-api/controlplane/auth"
	"github.com/membership-api/controlplane/gen"
	"github.com/membership-api/controlplane/server"
	"github.com/membership-api/controlplane/store"
	"github.com/membership-api/controlplane/store/storetest"
)

// personScopes are the scopes of the operations acting on a person's invitations.
const personScopes = "invitations:list workspaces:accept workspaces:decline workspaces:leave"

// TestIdentity_EmailVerified: a token whose issuer says the email is not
// verified cannot see, accept or decline the invitations sent to that email,
// and changes nothing; a token without the claim is trusted by default (see
// docs/api/auth.md), as is a token saying true.
func TestIdentity_EmailVerified(t *testing.T) {
	t.Parallel()
	parallelDialects(t, func(t *testing.T, dialect string) {
		f := newTenant(t, dialect)
		admin := f.bearer(f.userToken(f.adminSub, f.adminEmail))
		if resp, body := f.do(t, "POST", "/v0/users", admin, `{"email":"`+f.mail("carol")+`"}`); resp.StatusCode != 200 {
			t.Fatalf("setup invite: %d %s", resp.StatusCode, body)
		}
		carol := func(verified any) http.Header {
			c := claimsFor(f.uniq("u-carol"), personScopes, time.Now().Add(time.Hour))
			c["email"] = f.mail("carol")
			if verified != nil {
				c["email_verified"] = verified
			}
			return with(f.bearer(f.devKeySign(t, c)), server.WorkspaceHeader, "")
		}
		unverified, unverifiedString := carol(false), carol("false")
		f.checkBadInputs(t, []badInput{
			{"MyInvitationsUnverified", "GET", "/v0/profile/invitations", unverified, "", 403},
			{"AcceptUnverified", "POST", "/v0/workspaces/" + f.ws + "/join", unverified, "", 403},
			{"DeclineUnverified", "POST", "/v0/workspaces/" + f.ws + "/decline", unverified, "", 403},
			{"AcceptUnverifiedString", "POST", "/v0/workspaces/" + f.ws + "/join", unverifiedString, "", 403},
			{"AcceptNotABoolean", "POST", "/v0/workspaces/" + f.ws + "/join", carol("no"), "", 401},
		})

		resp, body := f.do(t, "GET", "/v0/profile/invitations", carol(nil), "")
		if resp.StatusCode != 200 || !strings.Contains(string(body), `"`+f.mail("carol")+`"`) {
			t.Errorf("token without email_verified: got %d %s, want carol's invitation", resp.StatusCode, body)
		}
		resp, body = f.do(t, "POST", "/v0/workspaces/"+f.ws+"/join", carol(true), "")
		if resp.StatusCode != 200 {
			t.Errorf("verified token: got %d %s, want 200", resp.StatusCode, body)
		}
	})
}

// TestIdentity_TwoCredentials walks every operation of the spec: two
// different credentials are a 400 before either is checked, whatever the
// operation; the same credential in both headers passes the security step.
func TestIdentity_TwoCredentials(t *testing.T) {
	t.Parallel()
	f := newTenant(t, "sqlite")
	all := "admin " + personScopes
	tok := f.token(f.adminSub, f.adminEmail, all)
	forEachOperation(t, f.ws, func(method, url string, op *openapi3.Operation) {
		t.Run(op.OperationID, func(t *testing.T) {
			if op.Responses.Status(http.StatusBadRequest) == nil {
				t.Fatalf("%s declares no 400 in openapi/controlplane.yml", op.OperationID)
			}
			body := ""
			if op.RequestBody != nil {
				body = `{}`
			}
			for name, h := range map[string]http.Header{
				"token and key":       with(f.bearer(tok), "X-Blaxel-Authorization", "Bearer "+f.adminKey),
				"two tokens":          with(f.bearer(tok), "X-Blaxel-Authorization", "Bearer "+f.token(f.memberSub, f.memberEmail, all)),
				"key and revoked key": with(f.bearer(f.adminKey), "X-Blaxel-Authorization", "Bearer "+f.revokedKey),
			} {
				resp, b := f.do(t, method, url, h, body)
				if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(b), "two different credentials") {
					t.Errorf("%s: got %d %s, want 400", name, resp.StatusCode, b)
				}
			}
			resp, b := f.do(t, method, url, with(f.bearer(tok), "X-Blaxel-Authorization", "bearer  "+tok), body)
			if s := resp.StatusCode; s == http.StatusUnauthorized || s == http.StatusForbidden || strings.Contains(string(b), "credentials") {
				t.Errorf("the same token in both headers: got %d %s, want past the security step", s, b)
			}
		})
	})
	if logs := f.srv.logs.String(); strings.Contains(logs, f.adminKey) || strings.Contains(logs, "eyJ") {
		t.Errorf("a credential reached the log:\n%s", logs)
	}
}

// TestIdentity_EmailRuleCLI: `workspace create` applies the API's email rule
// and fails with one line, creating nothing.
func TestIdentity_EmailRuleCLI(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "sqlite")
	for _, email := range []string{"not an email", "admin@localhost", "admin@127.0.0.1", strings.Repeat("a", 65) + "@acme.test"} {
		r := runCLI(t, e.args("workspace", "create", "acme", "--admin-sub", "u1", "--admin-email", email)...)
		if r.code == 0 || !strings.HasPrefix(r.stderr, "error: ") || strings.Count(r.stderr, "\n") != 1 || !strings.Contains(r.stderr, "email") {
			t.Errorf("--admin-email %q: got %+v, want a one-line error about the email", email, r)
		}
	}
	if _, err := e.store().Membership(context.Background(), "acme", "u1"); err == nil {
		t.Error("a refused workspace create left a workspace")
	}
	mustCLI(t, e.args("workspace", "create", "acme", "--admin-sub", "u1", "--admin-email", "Admin@Acme.test")...)
}

// TestIdentity_AllowLocalEmailDomains: server.Config.AllowLocalEmailDomains
// lets development addresses through the API; the rest of the rule holds.
func TestIdentity_AllowLocalEmailDomains(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := storetest.Open(t, "sqlite", store.Options{})
	if _, err := st.CreateWorkspace(ctx, store.NewWorkspace{Name: "acme", AdminSub: "u-admin", AdminEmail: "admin@localhost"}, store.EmailOptions{AllowLocalDomains: true}); err != nil {
		t.Fatal(err)
	}
	dev, err := auth.LoadDevIssuer(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	e, closeFn, err := server.New(ctx, server.Config{Auth: auth.VerifierConfig{DevIssuer: dev}, AllowLocalEmailDomains: true},
		st, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(closeFn)
	srv := httptest.NewServer(e)
	t.Cleanup(srv.Close)
	tok, err := dev.Sign(auth.TokenRequest{Sub: "u-admin", Scopes: []string{"workspaces:invite"}, TTL: time.Hour}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	c, err := gen.NewClientWithResponses(srv.URL+server.APIBasePath, gen.WithHTTPClient(httpClient(t)))
	if err != nil {
		t.Fatal(err)
	}
	for email, want := range map[string]int{
		"dev@localhost":                        200,
		"dev@mailhog":                          200,
		"dev@127.0.0.1":                        200,
		"dev@example.com":                      200,
		"dev@[127.0.0.1]":                      400,
		".dev@localhost":                       400,
		"dev@localhost\r\n":                    400,
		strings.Repeat("a", 65) + "@localhost": 400,
	} {
		resp, err := c.InviteWorkspaceUserWithResponse(ctx, nil, gen.InviteWorkspaceUserJSONRequestBody{Email: &email}, withAuth("Authorization", tok, "acme"))
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode() != want {
			t.Errorf("%q: got %d %s, want %d", email, resp.StatusCode(), resp.Body, want)
		}
		if want == 400 {
			var e gen.Error
			if json.Unmarshal(resp.Body, &e) != nil || strings.ContainsAny(deref(e.Message), "\r\n") {
				t.Errorf("%q: error body %s", email, resp.Body)
			}
		}
	}
}

// TestIdentity_Flags: serve and workspace create accept local email domains
// only when told to, and --jwt-require-email-verified refuses a token that
// does not say its email is verified.
func TestIdentity_Flags(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "sqlite")
	if r := runCLI(t, e.args("workspace", "create", "dev", "--admin-sub", "u1", "--admin-email", "u1@localhost")...); r.code == 0 {
		t.Fatalf("u1@localhost accepted without --allow-local-email-domains: %+v", r)
	}
	mustCLI(t, e.args("workspace", "create", "dev", "--admin-sub", "u1", "--admin-email", "u1@localhost", "--allow-local-email-domains")...)
	s := e.start("--allow-local-email-domains", "--jwt-require-email-verified")
	resp, err := s.client(t).InviteWorkspaceUserWithResponse(context.Background(), nil,
		gen.InviteWorkspaceUserJSONRequestBody{Email: ptr("bob@localhost")}, withAuth("Authorization", e.token("u1", "u1@localhost", "workspaces:invite"), "dev"))
	if err != nil || resp.StatusCode() != 200 {
		t.Fatalf("bob@localhost with the flag: %v %d %s", err, resp.StatusCode(), resp.Body)
	}
	c := claimsFor("bob", "invitations:list", time.Now().Add(time.Hour))
	c["email"] = "bob@localhost" // no email_verified claim
	noClaim := (&fixture{env: e}).devKeySign(t, c)
	r, err := s.client(t).ListAllPendingInvitationsWithResponse(context.Background(), nil, withAuth("Authorization", noClaim, ""))
	if err != nil || r.StatusCode() != 403 {
		t.Errorf("token without email_verified under --jwt-require-email-verified: %v %d, want 403", err, r.StatusCode())
	}
	verified := e.token("bob", "bob@localhost", "invitations:list")
	r, err = s.client(t).ListAllPendingInvitationsWithResponse(context.Background(), nil, withAuth("Authorization", verified, ""))
	if err != nil || r.StatusCode() != 200 || r.JSON200 == nil || len(*r.JSON200) != 1 {
		t.Errorf("verified token: %v %d %s, want the one invitation", err, r.StatusCode(), r.Body)
	}
}
