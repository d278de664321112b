package e2e_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	josejwt "github.com/go-jose/go-jose/v4/jwt"
	"github.com/golang-jwt/jwt/v5"

	"github.com/membership-api/controlplane/gen"
	"github.com/membership-api/controlplane/server"
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
	return f.oauthClientAs(t, f.token(f.adminSub, f.adminEmail, "admin"), name, role)
}

// oauthClientAs makes it with the given admin credential.
func (f *fixture) oauthClientAs(t *testing.T, admin, name, role string) serviceAccount {
	t.Helper()
	resp, body := f.do(t, "POST", "/v0/service_accounts", f.bearer(admin), `{"name":"`+name+`","role":"`+role+`"}`)
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
	return http.Header{"Authorization": {"Bearer " + token}, "Content-Type": {"application/json"}}
}

func TestOAuth_ClientCredentials(t *testing.T) {
	t.Parallel()
	parallelDialects(t, func(t *testing.T, dialect string) {
		f := newTenant(t, dialect)
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
		if claims["sub"] != admin.clientID || claims["workspace"] != f.ws || claims["scope"] != "admin" ||
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
	t.Parallel()
	parallelDialects(t, func(t *testing.T, dialect string) {
		f := newTenant(t, dialect)
		sa := f.oauthClient(t, "deployer", "admin")
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
				before := f.countRows(t)
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
				if after := f.countRows(t); !mapsEqual(before, after) {
					t.Errorf("rows changed: %v → %v", before, after)
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
	t.Parallel()
	f := newTenant(t, "sqlite")
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
	t.Parallel()
	parallelDialects(t, func(t *testing.T, dialect string) {
		f := newTenant(t, dialect)
		sa := f.oauthClient(t, "deployer", "admin")
		token := f.mustToken(t, sa, "")
		// A second replica on the same database, sharing the keys.
		replica := f.start("--public-url", f.srv.URL)
		for _, srv := range []*runningServer{f.srv, replica} {
			if got := f.send(t, srv, "GET", "/v0/users", saHeaders(token), ""); got.status != 200 {
				t.Fatalf("before the deletion (%s): %d %s", srv.URL, got.status, got.message)
			}
		}
		if resp, body := f.do(t, "DELETE", "/v0/service_accounts/"+sa.clientID, f.bearer(f.token(f.adminSub, f.adminEmail, "admin")), ""); resp.StatusCode != 200 {
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
	t.Parallel()
	f := newTenant(t, "sqlite")
	token := f.mustToken(t, f.oauthClient(t, "deployer", "admin"), "")
	for _, tc := range []struct{ method, path, body string }{
		{"GET", "/v0/users", ""},
		{"POST", "/v0/users", `{"email":"x@example.com"}`},
		{"GET", "/v0/service_accounts", ""},
	} {
		if resp, body := f.do(t, tc.method, tc.path, with(f.bearer(token), server.WorkspaceHeader, f.otherWS), tc.body); resp.StatusCode != 404 {
			t.Errorf("%s %s naming other: %d %s, want 404", tc.method, tc.path, resp.StatusCode, body)
		}
	}
}

// TestOAuth_ReservedSubject: a token of another issuer (here the
// development one) whose sub starts with sa_ is refused, so nobody acts as
// a service account's member row through their identity provider.
func TestOAuth_ReservedSubject(t *testing.T) {
	t.Parallel()
	f := newTenant(t, "sqlite")
	sa := f.oauthClient(t, "deployer", "admin")
	got := f.send(t, f.srv, "GET", "/v0/users", f.bearer(f.token(sa.clientID, "", "admin")), "")
	if got.status != 401 || got.kind != "invalid_token" || !strings.Contains(got.message, "reserved") {
		t.Errorf("development token with sub %s: %d %s %s, want 401 invalid_token", sa.clientID, got.status, got.kind, got.message)
	}
	// A token claiming this server's issuer but signed by another key.
	forged := f.devKeySign(t, jwt.MapClaims{"iss": f.srv.URL, "sub": sa.clientID, "workspace": f.ws, "scope": "admin",
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
	t.Parallel()
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

// jwksKIDs fetches the JWKS and returns it with its kids.
func jwksKIDs(t *testing.T, base string) (jose.JSONWebKeySet, []string) {
	t.Helper()
	var set jose.JSONWebKeySet
	h := getJSON(t, base+"/.well-known/jwks.json", &set)
	if !strings.Contains(h.Get("Cache-Control"), "max-age=300") {
		t.Errorf("JWKS Cache-Control %q, want max-age=300", h.Get("Cache-Control"))
	}
	var kids []string
	for _, k := range set.Keys {
		kids = append(kids, k.KeyID)
	}
	return set, kids
}

// verifyWithJWKS verifies token against the published JWKS with go-jose, a
// JOSE implementation independent of the server's (golang-jwt, jwkset), as
// a resource server of another stack would.
func verifyWithJWKS(t *testing.T, set jose.JSONWebKeySet, token string) (josejwt.Claims, error) {
	t.Helper()
	parsed, err := josejwt.ParseSigned(token, []jose.SignatureAlgorithm{jose.EdDSA})
	if err != nil {
		return josejwt.Claims{}, err
	}
	keys := set.Key(parsed.Headers[0].KeyID)
	if len(keys) != 1 {
		return josejwt.Claims{}, fmt.Errorf("kid %q: %d keys in the JWKS", parsed.Headers[0].KeyID, len(keys))
	}
	var claims josejwt.Claims
	err = parsed.Claims(keys[0].Key, &claims)
	return claims, err
}

// TestOAuth_JWKS: the published keys verify the tokens with another JOSE
// library, and nothing private is published.
func TestOAuth_JWKS(t *testing.T) {
	t.Parallel()
	f := newTenant(t, "sqlite")
	token := f.mustToken(t, f.oauthClient(t, "deployer", "admin"), "")
	set, kids := jwksKIDs(t, f.srv.URL)
	if len(kids) != 1 {
		t.Fatalf("JWKS kids %v, want one key", kids)
	}
	claims, err := verifyWithJWKS(t, set, token)
	if err != nil {
		t.Fatalf("go-jose could not verify the token with the JWKS: %v", err)
	}
	if err := claims.ValidateWithLeeway(josejwt.Expected{Issuer: f.srv.URL, Time: time.Now()}, 0); err != nil {
		t.Errorf("claims: %v", err)
	}
	if !set.Keys[0].IsPublic() || set.Keys[0].Use != "sig" || set.Keys[0].Algorithm != "EdDSA" {
		t.Errorf("published key %+v, want a public EdDSA signing key", set.Keys[0])
	}
	// A token whose signature was altered is refused by it.
	if _, err := verifyWithJWKS(t, set, token[:len(token)-4]+"AAAA"); err == nil {
		t.Error("an altered signature verified")
	}
}

// TestOAuth_KeyRotation: `oauth-keys rotate` adds a key that is published
// at once and signs only after --delay; tokens of the old key keep working
// after the switch, on a replica too, and the old key stays published while
// they are valid (when it leaves the JWKS: TestKeyState in server/).
func TestOAuth_KeyRotation(t *testing.T) {
	t.Parallel()
	parallelDialects(t, func(t *testing.T, dialect string) {
		f := newFixture(t, dialect, "--oauth-key-refresh", "100ms", "--oauth-token-ttl", "1m")
		replica := f.start("--public-url", f.srv.URL, "--oauth-key-refresh", "100ms", "--oauth-token-ttl", "1m")
		sa := f.oauthClient(t, "deployer", "admin")
		before := f.mustToken(t, sa, "")
		_, header := unverifiedClaims(t, before)
		oldKID := header["kid"].(string)

		r := runCLI(t, f.args("oauth-keys", "rotate", "--delay", "2s")...)
		newKID := strings.TrimSpace(r.stdout)
		if r.code != 0 || newKID == "" || newKID == oldKID || !strings.Contains(r.stderr, "warning") {
			t.Fatalf("rotate: %+v", r)
		}
		// Published at once (within the refresh), before it signs.
		var set jose.JSONWebKeySet
		waitFor(t, "the new key in the JWKS", func() bool {
			var kids []string
			set, kids = jwksKIDs(t, replica.URL)
			return slices.Contains(kids, newKID)
		})
		// Still signing with the old key: the delay (2 s) is not over
		// unless this machine took that long since the rotation.
		rotated := time.Now()
		if _, header := unverifiedClaims(t, f.mustToken(t, sa, "")); header["kid"] != oldKID && time.Since(rotated) < time.Second {
			t.Errorf("signing with %v before the delay", header["kid"])
		}
		// Signing with the new key once the delay is over.
		var after string
		waitFor(t, "a token signed with the new key", func() bool {
			after = f.mustToken(t, sa, "")
			_, header := unverifiedClaims(t, after)
			return header["kid"] == newKID
		})
		_, kids := jwksKIDs(t, f.srv.URL)
		if !slices.Contains(kids, oldKID) || !slices.Contains(kids, newKID) {
			t.Errorf("JWKS after the switch %v, want both %s and %s", kids, oldKID, newKID)
		}
		set, _ = jwksKIDs(t, replica.URL)
		for name, token := range map[string]string{"before": before, "after": after} {
			for _, srv := range []*runningServer{f.srv, replica} {
				if got := f.send(t, srv, "GET", "/v0/users", saHeaders(token), ""); got.status != 200 {
					t.Errorf("token signed %s the rotation on %s: %d %s", name, srv.URL, got.status, got.message)
				}
			}
			if _, err := verifyWithJWKS(t, set, token); err != nil {
				t.Errorf("token signed %s the rotation, verified with the JWKS: %v", name, err)
			}
		}
		if r := runCLI(t, f.args("oauth-keys", "rotate", "--delay", "-1s")...); r.code == 0 || !strings.Contains(r.stderr, "must not be negative") {
			t.Errorf("rotate with a negative delay: %+v", r)
		}
		list := mustCLI(t, f.args("oauth-keys", "list")...)
		if !strings.Contains(list, oldKID) || !strings.Contains(list, newKID) {
			t.Errorf("oauth-keys list:\n%s", list)
		}
	})
}

// waitFor polls cond (every 50 ms, up to 20 s).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

// TestOAuth_FailedClientAuthenticationLimited: wrong client secrets count
// against the address's failed-authentication quota like wrong API keys;
// a request without credentials does not.
func TestOAuth_FailedClientAuthenticationLimited(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "sqlite", "--rate-limit-failed-auth", "3/m")
	sa := f.oauthClient(t, "deployer", "admin")
	wrong := serviceAccount{clientID: sa.clientID, secret: "bls_guessed"}
	for range 3 {
		if a := f.requestToken(t, "", "application/json", `{"grant_type":"client_credentials"}`); a.status != 401 {
			t.Fatalf("no credentials: %d %s", a.status, a.body)
		}
	}
	if a := f.requestToken(t, sa.basic(), "application/json", `{"grant_type":"client_credentials"}`); a.status != 200 {
		t.Fatalf("before the guesses: %d %s", a.status, a.body)
	}
	for range 3 {
		if a := f.requestToken(t, wrong.basic(), "application/json", `{"grant_type":"client_credentials"}`); a.status != 401 {
			t.Fatalf("guess: %d %s", a.status, a.body)
		}
	}
	h := http.Header{"Authorization": {sa.basic()}, "Content-Type": {"application/json"}}
	check429(t, f.send(t, f.srv, "POST", "/v0/oauth/token", h, `{"grant_type":"client_credentials"}`), `"failed-auth";q=3;w=60`)
	// The quota is the address's: an API key from it is refused too.
	check429(t, f.send(t, f.srv, "GET", "/v0/users", f.bearer(f.adminKey), ""), `"failed-auth";q=3;w=60`)
}

// TestOAuth_BesideExternalIssuer: with an external issuer configured, its
// tokens and this server's own service-account tokens are both accepted,
// each verified with its own issuer's keys; the external issuer's tokens
// may not use the sa_ prefix.
func TestOAuth_BesideExternalIssuer(t *testing.T) {
	t.Parallel()
	f, priv := newExternalIssuerFixture(t)
	external := func(sub string) string {
		tok, err := jwt.NewWithClaims(jwt.SigningMethodEdDSA, jwt.MapClaims{"iss": "https://idp.example", "sub": sub,
			"scope": "admin", "exp": time.Now().Add(time.Hour).Unix()}).SignedString(priv)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	sa := f.oauthClientAs(t, external(f.adminSub), "deployer", "admin")
	if got := f.send(t, f.srv, "GET", "/v0/users", f.bearer(external(f.adminSub)), ""); got.status != 200 {
		t.Errorf("external token: %d %s", got.status, got.message)
	}
	if got := f.send(t, f.srv, "GET", "/v0/users", saHeaders(f.mustToken(t, sa, "")), ""); got.status != 200 {
		t.Errorf("own token beside the external issuer: %d %s", got.status, got.message)
	}
	if got := f.send(t, f.srv, "GET", "/v0/users", f.bearer(external(sa.clientID)), ""); got.status != 401 || !strings.Contains(got.message, "reserved") {
		t.Errorf("external token with sub %s: %d %s, want 401 reserved", sa.clientID, got.status, got.message)
	}
	// A token signed by the external issuer's key but claiming to be ours.
	forged, _ := jwt.NewWithClaims(jwt.SigningMethodEdDSA, jwt.MapClaims{"iss": f.srv.URL, "sub": sa.clientID, "workspace": f.ws,
		"scope": "admin", "iat": time.Now().Unix(), "exp": time.Now().Add(time.Hour).Unix()}).SignedString(priv)
	if got := f.send(t, f.srv, "GET", "/v0/users", saHeaders(forged), ""); got.status != 401 {
		t.Errorf("external key claiming this server's issuer: %d %s, want 401", got.status, got.message)
	}
}
