package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"controlplane/gen"
	"controlplane/server"
	"controlplane/store/storetest"
)

// serviceAccount is a service account made through the API, with the
// secret it was shown once.
type serviceAccount struct {
	clientID, secret string
}

// basic is its HTTP Basic client authentication (RFC 6749 §2.3.1), as
// Blaxel's SDK sends BL_CLIENT_CREDENTIALS.
func (sa serviceAccount) basic() string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(sa.clientID+":"+sa.secret))
}

// createServiceAccount makes a service account of role in acme, as its admin.
func (f *fixture) oauthClient(t *testing.T, name, role string) serviceAccount {
	t.Helper()
	resp, body := f.do(t, "POST", "/v0/service_accounts", bearer(f.token("u-admin", "admin@acme.test", "admin")),
		`{"name":"`+name+`","role":"`+role+`"}`)
	var got gen.ServiceAccountWithSecret
	if resp.StatusCode != 200 || json.Unmarshal(body, &got) != nil || deref(got.ClientId) == "" || deref(got.ClientSecret) == "" {
		t.Fatalf("create service account: %d %s", resp.StatusCode, body)
	}
	return serviceAccount{clientID: *got.ClientId, secret: *got.ClientSecret}
}

// tokenAnswer is one answer of the token endpoint.
type tokenAnswer struct {
	status int
	header http.Header
	token  gen.OAuthToken
	err    gen.OAuthError
	body   string
}

// requestToken posts to the token endpoint (validated against the spec).
func (f *fixture) requestToken(t *testing.T, authorization, contentType, body string) tokenAnswer {
	t.Helper()
	h := http.Header{"Content-Type": {contentType}}
	if authorization != "" {
		h.Set("Authorization", authorization)
	}
	resp, b := f.do(t, "POST", "/v0/oauth/token", h, body)
	a := tokenAnswer{status: resp.StatusCode, header: resp.Header, body: string(b)}
	if resp.StatusCode == 200 {
		if err := json.Unmarshal(b, &a.token); err != nil {
			t.Fatal(err)
		}
	} else if err := json.Unmarshal(b, &a.err); err != nil {
		t.Fatalf("%d: %v: %s", resp.StatusCode, err, b)
	}
	return a
}

// mustToken gets a token with Basic and the SDK's JSON body.
func (f *fixture) mustToken(t *testing.T, sa serviceAccount, scope string) string {
	t.Helper()
	body := `{"grant_type":"client_credentials"}`
	if scope != "" {
		body = `{"grant_type":"client_credentials","scope":"` + scope + `"}`
	}
	a := f.requestToken(t, sa.basic(), "application/json", body)
	if a.status != 200 {
		t.Fatalf("token: %d %s", a.status, a.body)
	}
	return a.token.AccessToken
}

// unverifiedClaims reads a JWT's header and claims, as the SDK does (jwt-decode).
func unverifiedClaims(t *testing.T, token string) (jwt.MapClaims, map[string]any) {
	t.Helper()
	claims := jwt.MapClaims{}
	tok, _, err := jwt.NewParser().ParseUnverified(token, claims)
	if err != nil {
		t.Fatal(err)
	}
	return claims, tok.Header
}

// saHeaders are a service account token's request headers: no workspace
// header (the token names its workspace).
func saHeaders(token string) http.Header {
	return with(bearer(token), server.WorkspaceHeader, "")
}

func TestOAuth_ClientCredentials(t *testing.T) {
	storetest.EachDialect(t, func(t *testing.T, dialect string) {
		f := newFixture(t, dialect)
		admin := f.oauthClient(t, "deployer", "admin")
		member := f.oauthClient(t, "reader", "member")

		// Basic + the JSON body Blaxel's SDK sends.
		a := f.requestToken(t, admin.basic(), "application/json", `{"grant_type":"client_credentials"}`)
		if a.status != 200 || a.token.TokenType != "Bearer" || a.token.ExpiresIn != 3600 || a.token.Scope != "admin" {
			t.Fatalf("Basic + JSON: %d %s", a.status, a.body)
		}
		if a.header.Get("Cache-Control") != "no-store" || a.header.Get("Pragma") != "no-cache" {
			t.Errorf("Cache-Control %q, Pragma %q; want no-store, no-cache", a.header.Get("Cache-Control"), a.header.Get("Pragma"))
		}
		if strings.Contains(a.body, "refresh_token") {
			t.Errorf("a refresh token was issued (RFC 6749 §4.4.3 says not to): %s", a.body)
		}
		claims, header := unverifiedClaims(t, a.token.AccessToken)
		iat, _ := claims.GetIssuedAt()
		exp, _ := claims.GetExpirationTime()
		if claims["sub"] != admin.clientID || claims["workspace"] != "acme" || claims["scope"] != "admin" ||
			claims["iss"] != f.srv.URL || header["kid"] == "" || header["alg"] != "EdDSA" ||
			iat == nil || exp == nil || exp.Sub(iat.Time) != time.Hour {
			t.Errorf("claims %v, header %v", claims, header)
		}

		// Form encoding (RFC 6749 clients), scope narrowed.
		a = f.requestToken(t, admin.basic(), "application/x-www-form-urlencoded", "grant_type=client_credentials&scope=workspaces%3Alist+workspaces%3Aget")
		if a.status != 200 || a.token.Scope != "workspaces:list workspaces:get" {
			t.Errorf("Basic + form: %d %s", a.status, a.body)
		}
		// client_id and client_secret in the body, JSON and form.
		a = f.requestToken(t, "", "application/json", `{"grant_type":"client_credentials","client_id":"`+admin.clientID+`","client_secret":"`+admin.secret+`"}`)
		if a.status != 200 {
			t.Errorf("JSON body credentials: %d %s", a.status, a.body)
		}
		a = f.requestToken(t, "", "application/x-www-form-urlencoded", url.Values{"grant_type": {"client_credentials"},
			"client_id": {admin.clientID}, "client_secret": {admin.secret}}.Encode())
		if a.status != 200 {
			t.Errorf("form body credentials: %d %s", a.status, a.body)
		}

		// The token works: the workspace's users through the generated
		// client, no workspace header needed (the token names it).
		token := f.mustToken(t, admin, "")
		users, err := f.srv.client(t).ListWorkspaceUsersWithResponse(context.Background(), nil, withAuth("Authorization", token, ""))
		if err != nil || users.StatusCode() != 200 || users.JSON200 == nil || len(*users.JSON200) == 0 {
			t.Fatalf("list users with the token: %v %d %s", err, users.StatusCode(), users.Body)
		}
		// And as Blaxel's SDKs send it, with the workspace named.
		if resp, body := f.do(t, "GET", "/v0/users", with(with(saHeaders(token), "Authorization", ""), "X-Blaxel-Authorization", "Bearer "+token), ""); resp.StatusCode != 200 {
			t.Errorf("X-Blaxel-Authorization: %d %s", resp.StatusCode, body)
		}

		// A member's default scopes are those the spec's operations
		// require, without admin; it may not ask for admin.
		a = f.requestToken(t, member.basic(), "application/json", `{"grant_type":"client_credentials"}`)
		scopes := strings.Split(a.token.Scope, " ")
		if a.status != 200 || slices.Contains(scopes, "admin") || !slices.Contains(scopes, "workspaces:list") || !slices.Contains(scopes, "workspaces:invite") {
			t.Errorf("member default scopes: %d %s", a.status, a.body)
		}
		if a = f.requestToken(t, member.basic(), "application/json", `{"grant_type":"client_credentials","scope":"admin"}`); a.status != 400 || a.err.Error != "invalid_scope" {
			t.Errorf("member asking for admin: %d %s, want 400 invalid_scope", a.status, a.body)
		}
		// A member holding workspaces:invite is still a member: inviting
		// needs the admin role.
		memberToken := f.mustToken(t, member, "")
		if resp, body := f.do(t, "POST", "/v0/users", saHeaders(memberToken), `{"email":"x@example.com"}`); resp.StatusCode != 403 {
			t.Errorf("member service account inviting: %d %s, want 403", resp.StatusCode, body)
		}
		if resp, body := f.do(t, "GET", "/v0/users", saHeaders(memberToken), ""); resp.StatusCode != 200 {
			t.Errorf("member service account listing: %d %s, want 200", resp.StatusCode, body)
		}
	})
}

// TestOAuth_Errors: every RFC 6749 §5.2 refusal, in the shape OAuth clients
// and Blaxel's SDK read ({"error": …, "error_description": …}), changing nothing.
func TestOAuth_Errors(t *testing.T) {
	storetest.EachDialect(t, func(t *testing.T, dialect string) {
		f := newFixture(t, dialect)
		sa := f.oauthClient(t, "deployer", "admin")
		st := f.store()
		wrong := serviceAccount{clientID: sa.clientID, secret: sa.secret + "x"}
		unknown := serviceAccount{clientID: "sa_doesnotexist", secret: sa.secret}
		const grant = `{"grant_type":"client_credentials"}`
		const json, form = "application/json", "application/x-www-form-urlencoded"
		for _, tc := range []struct {
			name, authorization, contentType, body string
			status                                 int
			code                                   string
		}{
			{"MissingGrantType", sa.basic(), json, `{}`, 400, "invalid_request"},
			{"EmptyGrantType", sa.basic(), form, `grant_type=`, 400, "invalid_request"},
			{"PasswordGrant", sa.basic(), json, `{"grant_type":"password","username":"a","password":"b"}`, 400, "unsupported_grant_type"},
			{"RefreshGrant", sa.basic(), form, `grant_type=refresh_token&refresh_token=x`, 400, "unsupported_grant_type"},
			{"WrongSecret", wrong.basic(), json, grant, 401, "invalid_client"},
			{"WrongSecretInBody", "", json, `{"grant_type":"client_credentials","client_id":"` + sa.clientID + `","client_secret":"nope"}`, 401, "invalid_client"},
			{"UnknownClient", unknown.basic(), json, grant, 401, "invalid_client"},
			{"NoClientAuthentication", "", json, grant, 401, "invalid_client"},
			{"NoSecret", "", json, `{"grant_type":"client_credentials","client_id":"` + sa.clientID + `"}`, 401, "invalid_client"},
			{"UnknownScope", sa.basic(), json, `{"grant_type":"client_credentials","scope":"nothing:at-all"}`, 400, "invalid_scope"},
			{"ScopeWithNoBreakSpace", sa.basic(), json, `{"grant_type":"client_credentials","scope":"workspaces:list\u00a0admin"}`, 400, "invalid_scope"},
			{"TwoClientAuthentications", sa.basic(), json, `{"grant_type":"client_credentials","client_id":"` + sa.clientID + `","client_secret":"` + sa.secret + `"}`, 400, "invalid_request"},
			{"BasicAndAnotherClientID", sa.basic(), form, `grant_type=client_credentials&client_id=sa_other`, 400, "invalid_request"},
			{"MalformedJSON", sa.basic(), json, `{"grant_type":`, 400, "invalid_request"},
			{"RepeatedJSONMember", sa.basic(), json, `{"grant_type":"client_credentials","grant_type":"password"}`, 400, "invalid_request"},
			{"GrantTypeNotAString", sa.basic(), json, `{"grant_type":7}`, 400, "invalid_request"},
			{"RepeatedFormParameter", sa.basic(), form, `grant_type=client_credentials&grant_type=client_credentials`, 400, "invalid_request"},
			{"MalformedForm", sa.basic(), form, `grant_type=%zz`, 400, "invalid_request"},
			{"NotBase64", "Basic !!!", json, grant, 400, "invalid_request"},
			{"BasicWithoutColon", "Basic " + base64.StdEncoding.EncodeToString([]byte(sa.clientID)), json, grant, 400, "invalid_request"},
			{"BearerAtTheTokenEndpoint", "Bearer " + f.adminKey, json, grant, 400, "invalid_request"},
			{"EmptyBody", sa.basic(), json, ``, 400, "invalid_request"},
			{"WrongMediaType", sa.basic(), "text/plain", grant, 415, "unsupported_media_type"},
			{"TooLarge", sa.basic(), json, `{"grant_type":"client_credentials","x":"` + strings.Repeat("a", server.DefaultBodyLimit) + `"}`, 413, "payload_too_large"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				before, err := storetest.CountRows(context.Background(), st)
				if err != nil {
					t.Fatal(err)
				}
				a := f.requestToken(t, tc.authorization, tc.contentType, tc.body)
				if a.status != tc.status || a.err.Error != tc.code {
					t.Errorf("got %d %s, want %d %s", a.status, a.body, tc.status, tc.code)
				}
				if tc.status == 400 || tc.status == 401 {
					if deref(a.err.ErrorDescription) == "" {
						t.Errorf("no error_description: %s", a.body)
					}
				}
				if tc.status == 401 && a.header.Get("WWW-Authenticate") != `Basic realm="controlplane"` {
					t.Errorf("WWW-Authenticate %q, want Basic", a.header.Get("WWW-Authenticate"))
				}
				if after, err := storetest.CountRows(context.Background(), st); err != nil || !mapsEqual(before, after) {
					t.Errorf("rows changed: %v → %v (%v)", before, after, err)
				}
			})
		}
	})
}

func mapsEqual(a, b map[string]int64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// TestOAuth_ScopesEnforced: a token narrowed to workspaces:list lists but
// cannot invite, although its account is an admin.
func TestOAuth_ScopesEnforced(t *testing.T) {
	f := newFixture(t, "sqlite")
	sa := f.oauthClient(t, "deployer", "admin")
	token := f.mustToken(t, sa, "workspaces:list")
	if resp, body := f.do(t, "GET", "/v0/users", saHeaders(token), ""); resp.StatusCode != 200 {
		t.Errorf("list: %d %s", resp.StatusCode, body)
	}
	resp, body := f.do(t, "POST", "/v0/users", saHeaders(token), `{"email":"x@example.com"}`)
	var e gen.Error
	if resp.StatusCode != 403 || json.Unmarshal(body, &e) != nil || e.Error != "insufficient_scope" {
		t.Errorf("invite with workspaces:list only: %d %s, want 403 insufficient_scope", resp.StatusCode, body)
	}
	if resp, body := f.do(t, "POST", "/v0/users", saHeaders(f.mustToken(t, sa, "")), `{"email":"x@example.com"}`); resp.StatusCode != 200 {
		t.Errorf("invite with the default admin scope: %d %s", resp.StatusCode, body)
	}
}

// TestOAuth_DeletedAccount: deleting a service account refuses its
// unexpired token at once (the verifier looks the account up on every
// request; the token cache does not hide it), on every replica.
func TestOAuth_DeletedAccount(t *testing.T) {
	storetest.EachDialect(t, func(t *testing.T, dialect string) {
		f := newFixture(t, dialect)
		sa := f.oauthClient(t, "deployer", "admin")
		token := f.mustToken(t, sa, "")
		// A second replica on the same database, sharing the keys.
		replica := f.start("--public-url", f.srv.URL)
		for _, srv := range []*runningServer{f.srv, replica} {
			if got := f.send(t, srv, "GET", "/v0/users", saHeaders(token), ""); got.status != 200 {
				t.Fatalf("before the deletion (%s): %d %s", srv.URL, got.status, got.message)
			}
		}
		if resp, body := f.do(t, "DELETE", "/v0/service_accounts/"+sa.clientID, bearer(f.token("u-admin", "admin@acme.test", "admin")), ""); resp.StatusCode != 200 {
			t.Fatalf("delete: %d %s", resp.StatusCode, body)
		}
		for _, srv := range []*runningServer{f.srv, replica} {
			got := f.send(t, srv, "GET", "/v0/users", saHeaders(token), "")
			if got.status != 401 || got.kind != "invalid_token" || !strings.Contains(got.message, "service account deleted") {
				t.Errorf("after the deletion (%s): %d %s %s, want 401 invalid_token", srv.URL, got.status, got.kind, got.message)
			}
		}
		if a := f.requestToken(t, sa.basic(), "application/json", `{"grant_type":"client_credentials"}`); a.status != 401 {
			t.Errorf("token for a deleted account: %d %s", a.status, a.body)
		}
	})
}

// TestOAuth_BoundToWorkspace: a service account of acme cannot act in
// other, whatever header it sends (404 as for any foreign workspace).
func TestOAuth_BoundToWorkspace(t *testing.T) {
	f := newFixture(t, "sqlite")
	token := f.mustToken(t, f.oauthClient(t, "deployer", "admin"), "")
	for _, tc := range []struct{ method, path, body string }{
		{"GET", "/v0/users", ""},
		{"POST", "/v0/users", `{"email":"x@example.com"}`},
		{"GET", "/v0/service_accounts", ""},
	} {
		if resp, body := f.do(t, tc.method, tc.path, with(bearer(token), server.WorkspaceHeader, "other"), tc.body); resp.StatusCode != 404 {
			t.Errorf("%s %s naming other: %d %s, want 404", tc.method, tc.path, resp.StatusCode, body)
		}
	}
}

// TestOAuth_ReservedSubject: a token of another issuer (here the
// development one) whose sub starts with sa_ is refused, so nobody acts as
// a service account's member row through their identity provider.
func TestOAuth_ReservedSubject(t *testing.T) {
	f := newFixture(t, "sqlite")
	sa := f.oauthClient(t, "deployer", "admin")
	got := f.send(t, f.srv, "GET", "/v0/users", bearer(f.token(sa.clientID, "", "admin")), "")
	if got.status != 401 || got.kind != "invalid_token" || !strings.Contains(got.message, "reserved") {
		t.Errorf("development token with sub %s: %d %s %s, want 401 invalid_token", sa.clientID, got.status, got.kind, got.message)
	}
	// A token claiming this server's issuer but signed by another key.
	forged := f.devKeySign(t, jwt.MapClaims{"iss": f.srv.URL, "sub": sa.clientID, "workspace": "acme", "scope": "admin",
		"iat": time.Now().Unix(), "exp": time.Now().Add(time.Hour).Unix()})
	if got := f.send(t, f.srv, "GET", "/v0/users", saHeaders(forged), ""); got.status != 401 || got.kind != "invalid_token" {
		t.Errorf("forged own token: %d %s %s, want 401 invalid_token", got.status, got.kind, got.message)
	}
}

// getJSON fetches a document outside the spec (the well-known ones).
func getJSON(t *testing.T, url string, v any) http.Header {
	t.Helper()
	resp, err := httpGet(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d %s %v", url, resp.StatusCode, body, err)
	}
	if err := json.Unmarshal(body, v); err != nil {
		t.Fatalf("GET %s: %v: %s", url, err, body)
	}
	return resp.Header
}

// TestOAuth_Metadata: RFC 8414 metadata naming this server's token
// endpoint and keys, every URL under --public-url.
func TestOAuth_Metadata(t *testing.T) {
	f := newFixture(t, "sqlite", "--public-url", "https://api.example.com/")
	var md struct {
		Issuer        string   `json:"issuer"`
		TokenEndpoint string   `json:"token_endpoint"`
		JWKSURI       string   `json:"jwks_uri"`
		Grants        []string `json:"grant_types_supported"`
		AuthMethods   []string `json:"token_endpoint_auth_methods_supported"`
		Scopes        []string `json:"scopes_supported"`
		ResponseTypes []string `json:"response_types_supported"`
	}
	h := getJSON(t, f.srv.URL+"/.well-known/oauth-authorization-server", &md)
	if md.Issuer != "https://api.example.com" || md.TokenEndpoint != "https://api.example.com/v0/oauth/token" ||
		md.JWKSURI != "https://api.example.com/.well-known/jwks.json" || !slices.Equal(md.Grants, []string{"client_credentials"}) ||
		!slices.Equal(md.AuthMethods, []string{"client_secret_basic", "client_secret_post"}) ||
		!slices.Contains(md.Scopes, "admin") || !slices.Contains(md.Scopes, "workspaces:list") || md.ResponseTypes == nil {
		t.Errorf("metadata %+v", md)
	}
	if !strings.Contains(h.Get("Cache-Control"), "max-age=") {
		t.Errorf("Cache-Control %q", h.Get("Cache-Control"))
	}
	claims, _ := unverifiedClaims(t, f.mustToken(t, f.oauthClient(t, "deployer", "member"), ""))
	if claims["iss"] != md.Issuer {
		t.Errorf("token iss %v, metadata issuer %s", claims["iss"], md.Issuer)
	}
}
