package e2e_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/membership-api/controlplane/auth"
	"github.com/membership-api/controlplane/gen"
	"github.com/membership-api/controlplane/server"
	"github.com/membership-api/controlplane/store"
	"github.com/membership-api/controlplane/store/storetest"
)

func TestInvite_EndToEnd(t *testing.T) {
	t.Parallel()
	parallelDialects(t, func(t *testing.T, dialect string) {
		f := newTenant(t, dialect)
		ctx := context.Background()
		c := f.srv.client(t)
		tok := f.token(f.adminSub, f.adminEmail, "workspaces:invite")

		before := time.Now().UTC().Truncate(time.Second)
		resp, err := c.InviteWorkspaceUserWithResponse(ctx, nil, gen.InviteWorkspaceUserJSONRequestBody{Email: ptr("New.User@Example.COM")},
			withAuth("Authorization", tok, f.ws))
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode() != 200 || resp.JSON200 == nil {
			t.Fatalf("got %d %s, want 200", resp.StatusCode(), resp.Body)
		}
		inv := resp.JSON200
		for name, got := range map[string]*string{"email": inv.Email, "role": inv.Role, "invitedBy": inv.InvitedBy,
			"workspace": inv.Workspace, "createdBy": inv.CreatedBy, "updatedBy": inv.UpdatedBy} {
			want := map[string]string{"email": "new.user@example.com", "role": "member", "invitedBy": f.adminSub,
				"workspace": f.ws, "createdBy": f.adminSub, "updatedBy": f.adminSub}[name]
			if got == nil || *got != want {
				t.Errorf("%s: got %v, want %q", name, deref(got), want)
			}
		}
		created, err1 := time.Parse(time.RFC3339, deref(inv.CreatedAt))
		expires, err2 := time.Parse(time.RFC3339, deref(inv.ExpiresAt))
		if err1 != nil || err2 != nil || created.Before(before) || !expires.Equal(created.Add(7*24*time.Hour)) {
			t.Errorf("createdAt %v expiresAt %v: want RFC 3339 times 7 days apart, created after %v", deref(inv.CreatedAt), deref(inv.ExpiresAt), before)
		}

		t.Run("SDKHeadersWithAPIKey", func(t *testing.T) {
			// As Blaxel's SDKs send it: X-Blaxel-Authorization, workspace header, version header.
			h := http.Header{"X-Blaxel-Authorization": {"Bearer " + f.adminKey}, server.WorkspaceHeader: {f.ws},
				"Blaxel-Version": {"2026-09-22"}, "User-Agent": {"blaxel/sdk/python/0.2.0"}, "Content-Type": {"application/json"}}
			resp, body := f.do(t, "POST", "/v0/users", h, `{"email":"sdk@example.com"}`)
			if resp.StatusCode != 200 {
				t.Fatalf("got %d %s", resp.StatusCode, body)
			}
			// Without the workspace header the key's own workspace is used.
			resp, body = f.do(t, "POST", "/v0/users", with(h, server.WorkspaceHeader, ""), `{"email":"sdk2@example.com"}`)
			if resp.StatusCode != 200 || !strings.Contains(string(body), `"workspace":"`+f.ws+`"`) {
				t.Fatalf("got %d %s", resp.StatusCode, body)
			}
		})

		t.Run("AdminScopeImpliesAll", func(t *testing.T) {
			resp, body := f.do(t, "POST", "/v0/users", f.bearer(f.token(f.adminSub, "", "admin")), `{"email":"adm@example.com"}`)
			if resp.StatusCode != 200 {
				t.Fatalf("got %d %s", resp.StatusCode, body)
			}
		})

		t.Run("ReinviteReturnsSameInvitation", func(t *testing.T) {
			resp, err := c.InviteWorkspaceUserWithResponse(ctx, nil, gen.InviteWorkspaceUserJSONRequestBody{Email: ptr("new.user@example.com")},
				withAuth("Authorization", tok, f.ws))
			if err != nil || resp.StatusCode() != 200 {
				t.Fatalf("got %v %d", err, resp.StatusCode())
			}
			if deref(resp.JSON200.CreatedAt) != deref(inv.CreatedAt) {
				t.Errorf("createdAt: got %s, want the pending invitation's %s", deref(resp.JSON200.CreatedAt), deref(inv.CreatedAt))
			}
			st := f.store()
			ws, _ := st.Membership(ctx, f.ws, f.adminSub)
			if _, err := storetest.PendingInvitation(ctx, st, ws.Workspace.Name, "NEW.USER@example.com"); err != nil {
				t.Errorf("pending invitation not stored: %v", err)
			}
		})

		t.Run("Restart", func(t *testing.T) {
			// A server started afresh on the database (the shared one keeps
			// serving the other tests) knows the invitation only from it.
			restarted := f.start()
			resp, err := restarted.client(t).InviteWorkspaceUserWithResponse(ctx, nil, gen.InviteWorkspaceUserJSONRequestBody{Email: ptr("new.user@example.com")},
				withAuth("Authorization", tok, f.ws))
			if err != nil || resp.StatusCode() != 200 {
				t.Fatalf("after restart: %v %d", err, resp.StatusCode())
			}
			if deref(resp.JSON200.CreatedAt) != deref(inv.CreatedAt) {
				t.Errorf("after restart createdAt %s, want %s (the invitation must survive)", deref(resp.JSON200.CreatedAt), deref(inv.CreatedAt))
			}
		})

		t.Run("Health", func(t *testing.T) {
			for _, p := range []string{"/healthz", "/readyz"} {
				resp, err := httpGet(f.srv.URL + p)
				if err != nil || resp.StatusCode != 200 {
					t.Errorf("%s: %v %v", p, err, resp)
				}
				resp.Body.Close()
			}
		})
	})
}

// TestInvite_Concurrent sends 50 identical invites at once over HTTP.
func TestInvite_Concurrent(t *testing.T) {
	t.Parallel()
	parallelDialects(t, func(t *testing.T, dialect string) {
		f := newTenant(t, dialect)
		h := f.bearer(f.token(f.adminSub, "", "workspaces:invite"))
		const n = 50
		var wg sync.WaitGroup
		bodies := make([]string, n)
		statuses := make([]int, n)
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				resp, body := f.do(t, "POST", "/v0/users", h, `{"email":"Race@Example.com"}`)
				statuses[i], bodies[i] = resp.StatusCode, string(body)
			}()
		}
		wg.Wait()
		var first gen.PendingInvitation
		if err := json.Unmarshal([]byte(bodies[0]), &first); err != nil {
			t.Errorf("invite 0: %v: %s", err, bodies[0])
		}
		for i := range n {
			var got gen.PendingInvitation
			err := json.Unmarshal([]byte(bodies[i]), &got)
			if err != nil || statuses[i] != 200 || deref(got.CreatedAt) != deref(first.CreatedAt) {
				t.Errorf("invite %d: %d %s", i, statuses[i], bodies[i])
			}
		}
		counts := f.countRows(t)
		if counts["invitations"] != 1 {
			t.Errorf("invitations: got %d rows, want exactly 1", counts["invitations"])
		}
	})
}

// TestInvite_BadInputs: every bad request gets its documented 4xx with an
// Error body (checked by the validating client) and changes nothing.
func TestInvite_BadInputs(t *testing.T) {
	t.Parallel()
	parallelDialects(t, func(t *testing.T, dialect string) {
		f := newTenant(t, dialect)
		good := f.bearer(f.token(f.adminSub, f.adminEmail, "workspaces:invite"))
		otherIssuer, err := auth.LoadDevIssuer(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		forged, _ := otherIssuer.Sign(auth.TokenRequest{Sub: f.adminSub, Scopes: []string{"workspaces:invite"}, TTL: time.Hour}, time.Now())
		expired := f.devKeySign(t, claimsFor(f.adminSub, "workspaces:invite", time.Now().Add(-time.Hour)))
		wrongIssuer := f.devKeySign(t, jwt.MapClaims{"iss": "https://evil.example", "sub": f.adminSub, "scope": "workspaces:invite", "exp": time.Now().Add(time.Hour).Unix()})
		noExp := f.devKeySign(t, jwt.MapClaims{"iss": auth.DevIssuerName, "sub": f.adminSub, "scope": "workspaces:invite"})
		noSub := f.devKeySign(t, claimsFor("", "workspaces:invite", time.Now().Add(time.Hour)))
		seg := func(v any) string { b, _ := json.Marshal(v); return base64.RawURLEncoding.EncodeToString(b) }
		noneAlg := seg(map[string]string{"alg": "none", "typ": "JWT"}) + "." + seg(claimsFor(f.adminSub, "workspaces:invite", time.Now().Add(time.Hour))) + "."
		dev, _ := auth.LoadDevIssuer(f.dataDir)
		hmac, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, claimsFor(f.adminSub, "workspaces:invite", time.Now().Add(time.Hour))).
			SignedString([]byte(dev.PublicKey()))
		// Dates must be JSON numbers (RFC 7519 NumericDate), not strings.
		dateAsString := func(claim string, at time.Time) string {
			c := claimsFor(f.adminSub, "workspaces:invite", time.Now().Add(time.Hour))
			c[claim] = strconv.FormatInt(at.Unix(), 10)
			return f.devKeySign(t, c)
		}
		// Scopes are separated by U+0020 only: "workspaces:list<NBSP>admin" is one unknown scope, not admin.
		nbspScope := f.devKeySign(t, claimsFor(f.adminSub, "workspaces:list\u00a0admin", time.Now().Add(time.Hour)))
		nbspScp := claimsFor(f.adminSub, "", time.Now().Add(time.Hour))
		nbspScp["scp"] = "workspaces:list\u00a0admin"
		// Two different credentials, in two headers or one header twice.
		twoCredentials := with(good, "X-Blaxel-Authorization", "Bearer "+f.adminKey)
		twoAuthorizations := good.Clone()
		twoAuthorizations["Authorization"] = []string{"Bearer " + f.token(f.adminSub, "", "workspaces:invite"), "Bearer " + f.adminKey}
		bearerAndBasic := with(f.bearer(f.adminKey), "X-Blaxel-Authorization", "Basic dTpw")
		long := func(n int) string { return strings.Repeat("a", n) }

		f.checkBadInputs(t, []badInput{
			{"PlainWord", "POST", "/v0/users", good, `{"email":"not-an-email"}`, 400},
			{"HeaderInjection", "POST", "/v0/users", good, `{"email":"a@b.c\r\nBcc: x@y.z"}`, 400},
			{"HeaderInjectionLocalPart", "POST", "/v0/users", good, `{"email":"a\r\nBcc: x@y.z"}`, 400},
			{"DisplayName", "POST", "/v0/users", good, `{"email":"Alice <a@b.c>"}`, 400},
			{"Space", "POST", "/v0/users", good, `{"email":"a b@c.d"}`, 400},
			{"NoLocalPart", "POST", "/v0/users", good, `{"email":"@example.com"}`, 400},
			{"NoDomain", "POST", "/v0/users", good, `{"email":"a@"}`, 400},
			{"TwoAts", "POST", "/v0/users", good, `{"email":"a@@b.c"}`, 400},
			{"TwoAddresses", "POST", "/v0/users", good, `{"email":"a@b.c,d@e.f"}`, 400},
			{"Empty", "POST", "/v0/users", good, `{"email":""}`, 400},
			{"TooLong", "POST", "/v0/users", good, `{"email":"` + strings.Repeat("a", 250) + `@b.co"}`, 400},
			{"NonASCII", "POST", "/v0/users", good, `{"email":"bób@example.com"}`, 400},
			{"Localhost", "POST", "/v0/users", good, `{"email":"user@localhost"}`, 400},
			{"DotLocalhost", "POST", "/v0/users", good, `{"email":"user@app.localhost"}`, 400},
			{"SingleLabelDomain", "POST", "/v0/users", good, `{"email":"user@intranet"}`, 400},
			{"LoopbackIP", "POST", "/v0/users", good, `{"email":"user@127.0.0.1"}`, 400},
			{"NumericDomain", "POST", "/v0/users", good, `{"email":"user@10.1"}`, 400},
			{"IPLiteral", "POST", "/v0/users", good, `{"email":"user@[127.0.0.1]"}`, 400},
			{"LocalPart65", "POST", "/v0/users", good, `{"email":"` + long(65) + `@example.com"}`, 400},
			{"LocalPart200", "POST", "/v0/users", good, `{"email":"` + long(200) + `@example.com"}`, 400},
			{"LocalPartLeadingDot", "POST", "/v0/users", good, `{"email":".a@example.com"}`, 400},
			{"LocalPartDoubleDot", "POST", "/v0/users", good, `{"email":"a..b@example.com"}`, 400},
			{"DuplicateEmailMember", "POST", "/v0/users", good, `{"email":"a@x.test","email":"b@x.test"}`, 400},
			{"DuplicateEscapedMember", "POST", "/v0/users", good, `{"email":"a@x.test","\u0065mail":"b@x.test"}`, 400},
			{"DuplicateNestedMember", "POST", "/v0/users", good, `{"email":"a@x.test","meta":{"k":[{"v":1,"v":2}]}}`, 400},
			// Authentication comes first: scanning bodies is for callers with credentials.
			{"DuplicateMemberNoCredentials", "POST", "/v0/users", with(good, "Authorization", ""), `{"email":"a@x.test","email":"b@x.test"}`, 401},
			{"Number", "POST", "/v0/users", good, `{"email":42}`, 400},
			{"Null", "POST", "/v0/users", good, `{"email":null}`, 400},
			{"MissingEmail", "POST", "/v0/users", good, `{}`, 400},
			{"EmailMisspelledCase", "POST", "/v0/users", good, `{"EMAIL":"a@b.co"}`, 400}, // member names are exact
			{"NotJSON", "POST", "/v0/users", good, `hello`, 400},
			{"TruncatedJSON", "POST", "/v0/users", good, `{"email":`, 400},
			{"TrailingGarbage", "POST", "/v0/users", good, `{"email":"a@b.co"} xyz`, 400},
			{"TwoObjects", "POST", "/v0/users", good, `{"email":"a@b.co"}{"email":"c@d.co"}`, 400},
			{"JSONArray", "POST", "/v0/users", good, `[{"email":"a@b.co"}]`, 400},
			{"NoBody", "POST", "/v0/users", with(good, "Content-Type", ""), ``, 400},
			{"HugeBody", "POST", "/v0/users", good, `{"email":"a@b.co","pad":"` + strings.Repeat("x", 100<<10) + `"}`, 413},
			{"WrongContentType", "POST", "/v0/users", with(good, "Content-Type", "text/plain"), `{"email":"a@b.co"}`, 415},
			{"FormContentType", "POST", "/v0/users", with(good, "Content-Type", "application/x-www-form-urlencoded"), `email=a@b.co`, 415},
			{"NoCredentials", "POST", "/v0/users", with(good, "Authorization", ""), `{"email":"a@b.co"}`, 401},
			{"BasicAuth", "POST", "/v0/users", with(good, "Authorization", "Basic dTpw"), `{"email":"a@b.co"}`, 401},
			{"EmptyBearer", "POST", "/v0/users", with(good, "Authorization", "Bearer "), `{"email":"a@b.co"}`, 401},
			{"GarbageToken", "POST", "/v0/users", f.bearer("abc.def.ghi"), `{"email":"a@b.co"}`, 401},
			{"ExpiredToken", "POST", "/v0/users", f.bearer(expired), `{"email":"a@b.co"}`, 401},
			{"ForgedToken", "POST", "/v0/users", f.bearer(forged), `{"email":"a@b.co"}`, 401},
			{"NoneAlgToken", "POST", "/v0/users", f.bearer(noneAlg), `{"email":"a@b.co"}`, 401},
			{"HMACKeyConfusion", "POST", "/v0/users", f.bearer(hmac), `{"email":"a@b.co"}`, 401},
			{"WrongIssuer", "POST", "/v0/users", f.bearer(wrongIssuer), `{"email":"a@b.co"}`, 401},
			{"NoExpiry", "POST", "/v0/users", f.bearer(noExp), `{"email":"a@b.co"}`, 401},
			{"NoSubject", "POST", "/v0/users", f.bearer(noSub), `{"email":"a@b.co"}`, 401},
			{"ExpAsString", "POST", "/v0/users", f.bearer(dateAsString("exp", time.Now().Add(time.Hour))), `{"email":"a@b.co"}`, 401},
			{"NbfAsString", "POST", "/v0/users", f.bearer(dateAsString("nbf", time.Now().Add(-time.Minute))), `{"email":"a@b.co"}`, 401},
			{"IatAsString", "POST", "/v0/users", f.bearer(dateAsString("iat", time.Now().Add(-time.Minute))), `{"email":"a@b.co"}`, 401},
			{"ScopeNoBreakSpace", "POST", "/v0/users", f.bearer(nbspScope), `{"email":"a@b.co"}`, 403},
			{"ScpNoBreakSpace", "POST", "/v0/users", f.bearer(f.devKeySign(t, nbspScp)), `{"email":"a@b.co"}`, 403},
			{"TwoCredentials", "POST", "/v0/users", twoCredentials, `{"email":"a@b.co"}`, 400},
			{"TwoAuthorizationHeaders", "POST", "/v0/users", twoAuthorizations, `{"email":"a@b.co"}`, 400},
			{"BearerAndBasic", "POST", "/v0/users", bearerAndBasic, `{"email":"a@b.co"}`, 400},
			{"UnknownAPIKey", "POST", "/v0/users", f.bearer(store.APIKeyPrefix + "doesnotexist"), `{"email":"a@b.co"}`, 401},
			{"RevokedAPIKey", "POST", "/v0/users", f.bearer(f.revokedKey), `{"email":"a@b.co"}`, 401},
			{"TokenWithoutScope", "POST", "/v0/users", f.bearer(f.token(f.adminSub, "", "workspaces:list")), `{"email":"a@b.co"}`, 403},
			{"PlainMemberToken", "POST", "/v0/users", f.bearer(f.token(f.memberSub, "", "workspaces:invite")), `{"email":"a@b.co"}`, 403},
			{"PlainMemberKey", "POST", "/v0/users", f.bearer(f.memberKey), `{"email":"a@b.co"}`, 403},
			{"KeyOfAnotherWorkspace", "POST", "/v0/users", f.bearer(f.otherKey), `{"email":"a@b.co"}`, 404},
			{"UnknownWorkspace", "POST", "/v0/users", with(good, server.WorkspaceHeader, f.uniq("nope")), `{"email":"a@b.co"}`, 404},
			{"NotAMember", "POST", "/v0/users", f.bearer(f.token(f.otherSub, "", "workspaces:invite")), `{"email":"a@b.co"}`, 404},
			{"NoWorkspace", "POST", "/v0/users", with(good, server.WorkspaceHeader, ""), `{"email":"a@b.co"}`, 400},
			{"AlreadyMember", "POST", "/v0/users", good, `{"email":"ADMIN@` + f.ws + `.test"}`, 409},
			{"WrongMethod", "PATCH", "/v0/users", good, `{"email":"a@b.co"}`, 405},
			{"UnknownRoute", "POST", "/v0/usersx", good, `{"email":"a@b.co"}`, 404},
			{"NoVersionPrefix", "POST", "/users", good, `{"email":"a@b.co"}`, 404},
		})
		if logs := f.srv.logs.String(); strings.Contains(logs, f.adminKey) || strings.Contains(logs, f.revokedKey) || strings.Contains(logs, "eyJ") {
			t.Errorf("a credential reached the log:\n%s", logs)
		}
	})
}
