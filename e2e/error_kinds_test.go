package e2e_test

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/membership-api/controlplane/gen"
	"github.com/membership-api/controlplane/store"
)

// TestErrorKinds: each refusal names its kind (the body's `error`), the one a
// client switches on; docs/api/errors.md's table lists them all (checkErrorBody).
func TestErrorKinds(t *testing.T) {
	t.Parallel()
	f := newTenant(t, "sqlite")
	admin := f.bearer(f.userToken(f.adminSub, f.adminEmail))
	member := f.bearer(f.userToken(f.memberSub, f.memberEmail))
	expired := f.bearer(f.devKeySign(t, claimsFor(f.adminSub, "workspaces:invite", time.Now().Add(-time.Hour))))
	twoCredentials := with(admin, "X-Blaxel-Authorization", "Bearer "+f.adminKey)
	for _, tc := range []struct {
		name, method, path string
		header             http.Header
		body               string
		status             int
		kind               string
	}{
		{"BadEmail", "POST", "/v0/users", admin, `{"email":"not an email"}`, 400, store.CodeInvalidEmail},
		{"BadRole", "PUT", "/v0/users/" + f.memberSub, admin, `{"role":"owner"}`, 400, store.CodeInvalidRole},
		{"NotJSON", "POST", "/v0/users", admin, `{"email":`, 400, "invalid_json"},
		{"NoWorkspace", "POST", "/v0/users", with(admin, "X-Blaxel-Workspace", ""), `{"email":"a@b.co"}`, 400, "workspace_required"},
		{"TwoCredentials", "POST", "/v0/users", twoCredentials, `{"email":"a@b.co"}`, 400, "ambiguous_credentials"},
		{"BadCursor", "GET", "/v0/users?limit=1&cursor=abc", admin, "", 400, "invalid_cursor"},
		{"NoCredentials", "POST", "/v0/users", with(admin, "Authorization", ""), `{"email":"a@b.co"}`, 401, "missing_credentials"},
		{"ExpiredToken", "POST", "/v0/users", expired, `{"email":"a@b.co"}`, 401, "expired_token"},
		{"GarbageToken", "POST", "/v0/users", f.bearer("abc.def.ghi"), `{"email":"a@b.co"}`, 401, "invalid_token"},
		{"UnknownKey", "POST", "/v0/users", f.bearer(store.APIKeyPrefix + "doesnotexist"), `{"email":"a@b.co"}`, 401, "invalid_api_key"},
		{"NoScope", "POST", "/v0/users", f.bearer(f.token(f.adminSub, "", "workspaces:list")), `{"email":"a@b.co"}`, 403, "insufficient_scope"},
		{"NotAdmin", "POST", "/v0/users", member, `{"email":"a@b.co"}`, 403, store.CodeNotAdmin},
		{"KeyForAPerson", "GET", "/v0/profile/invitations", f.bearer(f.adminKey), "", 403, "person_required"},
		{"NoEmailClaim", "GET", "/v0/profile/invitations", f.bearer(f.token(f.uniq("u-x"), "", "invitations:list")), "", 403, "email_required"},
		{"UnknownWorkspace", "POST", "/v0/users", with(admin, "X-Blaxel-Workspace", f.uniq("nope")), `{"email":"a@b.co"}`, 404, store.CodeWorkspaceNotFound},
		{"UnknownUser", "DELETE", "/v0/users/nobody", admin, "", 404, store.CodeUserNotFound},
		{"NoInvitation", "POST", "/v0/workspaces/" + f.ws + "/join", f.bearer(f.userToken(f.uniq("u-dave"), "dave@example.com")), "", 404, store.CodeInvitationNotFound},
		{"UnknownRoute", "GET", "/v0/nothing", admin, "", 404, "route_not_found"},
		{"WrongMethod", "PATCH", "/v0/users", admin, `{}`, 405, "method_not_allowed"},
		{"AlreadyMember", "POST", "/v0/users", admin, `{"email":"` + f.memberEmail + `"}`, 409, store.CodeAlreadyMember},
		{"LastAdmin", "DELETE", "/v0/users/" + f.adminSub, admin, "", 409, store.CodeLastAdmin},
		{"WrongContentType", "POST", "/v0/users", with(admin, "Content-Type", "text/plain"), `{"email":"a@b.co"}`, 415, "unsupported_media_type"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := f.do(t, tc.method, tc.path, tc.header, tc.body)
			var e gen.Error
			if resp.StatusCode != tc.status || json.Unmarshal(body, &e) != nil || e.Error != tc.kind {
				t.Errorf("got %d %s, want %d with error %q", resp.StatusCode, body, tc.status, tc.kind)
			}
		})
	}
}
