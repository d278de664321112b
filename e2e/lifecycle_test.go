package e2e_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/membership-api/controlplane/gen"
)

// userToken is a token for a person with every lifecycle scope.
func (f *fixture) userToken(sub, email string) string {
	return f.token(sub, email, "workspaces:invite", "workspaces:list", "workspaces:remove", "workspaces:update",
		"invitations:list", "workspaces:accept", "workspaces:decline", "workspaces:leave")
}

func findUser(users []gen.WorkspaceUser, email string) *gen.WorkspaceUser {
	for i := range users {
		if deref(users[i].Email) == email {
			return &users[i]
		}
	}
	return nil
}

func TestLifecycle_EndToEnd(t *testing.T) {
	t.Parallel()
	parallelDialects(t, func(t *testing.T, dialect string) {
		f := newTenant(t, dialect)
		ctx := context.Background()
		c := f.srv.client(t)
		admin := withAuth("Authorization", f.userToken(f.adminSub, f.adminEmail), f.ws)
		bob := withAuth("Authorization", f.userToken(f.uniq("u-bob"), f.mail("bob")), "")

		t.Run("InviteListAcceptChangeRemove", func(t *testing.T) {
			if r, err := c.InviteWorkspaceUserWithResponse(ctx, nil, gen.InviteWorkspaceUserJSONRequestBody{Email: ptr("Bob@" + strings.ToUpper(f.ws) + ".test")}, admin); err != nil || r.StatusCode() != 200 {
				t.Fatalf("invite: %v %d", err, r.StatusCode())
			}
			users, err := c.ListWorkspaceUsersWithResponse(ctx, nil, admin)
			if err != nil || users.StatusCode() != 200 {
				t.Fatalf("list users: %v %d", err, users.StatusCode())
			}
			if u := findUser(*users.JSON200, f.mail("bob")); u == nil || *u.Accepted || *u.Expired || u.Sub != nil || string(*u.Source) != "invitation" {
				t.Fatalf("pending bob in GET /users: got %+v", u)
			}

			mine, err := c.ListAllPendingInvitationsWithResponse(ctx, nil, bob)
			if err != nil || mine.StatusCode() != 200 || len(*mine.JSON200) != 1 {
				t.Fatalf("bob's invitations: %v %d %s", err, mine.StatusCode(), mine.Body)
			}
			inv := (*mine.JSON200)[0]
			if deref(inv.Workspace.Name) != f.ws || deref(inv.Workspace.DisplayName) != "Acme" || deref(inv.InvitedBy.Sub) != f.adminSub ||
				deref(inv.InvitedBy.Email) != f.adminEmail || *inv.WorkspaceDetails.UserNumber != 2 || deref(inv.Role) != "member" || deref(inv.Type) != "workspace" {
				t.Errorf("render: got %s", mine.Body)
			}

			acc, err := c.AcceptWorkspaceInvitationWithResponse(ctx, f.ws, bob)
			if err != nil || acc.StatusCode() != 200 || deref(acc.JSON200.Workspace.Name) != f.ws || deref(acc.JSON200.Email) != f.mail("bob") {
				t.Fatalf("accept: %v %d %s", err, acc.StatusCode(), acc.Body)
			}
			again, _ := c.AcceptWorkspaceInvitationWithResponse(ctx, f.ws, bob)
			if again.StatusCode() != 200 {
				t.Errorf("second accept: got %d, want 200 (idempotent)", again.StatusCode())
			}
			users, _ = c.ListWorkspaceUsersWithResponse(ctx, nil, admin)
			u := findUser(*users.JSON200, f.mail("bob"))
			if u == nil || !*u.Accepted || deref(u.Sub) != f.uniq("u-bob") || deref(u.Role) != "member" {
				t.Fatalf("accepted bob in GET /users: got %+v", u)
			}
			if n := strings.Count(string(users.Body), f.mail("bob")); n != 1 {
				t.Errorf("bob listed %d times, want once", n)
			}

			role, err := c.UpdateWorkspaceUserRoleWithResponse(ctx, f.uniq("u-bob"), nil, gen.UpdateWorkspaceUserRoleJSONRequestBody{Role: "admin"}, admin)
			if err != nil || role.StatusCode() != 200 || deref(role.JSON200.Role) != "admin" {
				t.Fatalf("role change: %v %d %s", err, role.StatusCode(), role.Body)
			}
			rm, err := c.RemoveWorkspaceUserWithResponse(ctx, "BOB@"+f.ws+".test", nil, admin)
			if err != nil || rm.StatusCode() != 200 {
				t.Fatalf("remove: %v %d %s", err, rm.StatusCode(), rm.Body)
			}
			users, _ = c.ListWorkspaceUsersWithResponse(ctx, nil, admin)
			if u := findUser(*users.JSON200, f.mail("bob")); u != nil {
				t.Errorf("bob still listed after removal: %+v", u)
			}
		})

		t.Run("Decline", func(t *testing.T) {
			inviteBob(ctx, t, c, admin, f.mail("bob"))
			dec, err := c.DeclineWorkspaceInvitationWithResponse(ctx, f.ws, bob)
			if err != nil || dec.StatusCode() != 200 || deref(dec.JSON200.Email) != f.mail("bob") || deref(dec.JSON200.UpdatedBy) != f.uniq("u-bob") {
				t.Fatalf("decline: %v %d %s", err, dec.StatusCode(), dec.Body)
			}
			if acc, _ := c.AcceptWorkspaceInvitationWithResponse(ctx, f.ws, bob); acc.StatusCode() != 404 {
				t.Errorf("accept after decline: got %d, want 404", acc.StatusCode())
			}
			if dec, _ := c.DeclineWorkspaceInvitationWithResponse(ctx, f.ws, bob); dec.StatusCode() != 404 {
				t.Errorf("decline twice: got %d, want 404", dec.StatusCode())
			}
		})

		t.Run("RevokeThenReinvite", func(t *testing.T) {
			inviteBob(ctx, t, c, admin, f.mail("bob"))
			if rm, _ := c.RemoveWorkspaceUserWithResponse(ctx, f.mail("bob"), nil, admin); rm.StatusCode() != 200 {
				t.Fatalf("revoke: got %d", rm.StatusCode())
			}
			if acc, _ := c.AcceptWorkspaceInvitationWithResponse(ctx, f.ws, bob); acc.StatusCode() != 404 {
				t.Errorf("accept after revoke: got %d, want 404", acc.StatusCode())
			}
			inviteBob(ctx, t, c, admin, f.mail("bob"))
			if acc, _ := c.AcceptWorkspaceInvitationWithResponse(ctx, f.ws, bob); acc.StatusCode() != 200 {
				t.Errorf("accept a fresh invitation after revoke: got %d, want 200", acc.StatusCode())
			}
			// Leave: bob goes, the last admin cannot.
			if l, _ := c.LeaveWorkspaceWithResponse(ctx, f.ws, bob); l.StatusCode() != 200 || deref(l.JSON200.Name) != f.ws {
				t.Errorf("leave: got %d %s", l.StatusCode(), l.Body)
			}
			if l, _ := c.LeaveWorkspaceWithResponse(ctx, f.ws, bob); l.StatusCode() != 404 {
				t.Errorf("leave twice: got %d, want 404", l.StatusCode())
			}
			if l, _ := c.LeaveWorkspaceWithResponse(ctx, f.ws, admin); l.StatusCode() != 409 {
				t.Errorf("last admin leaves: got %d, want 409", l.StatusCode())
			}
		})

		t.Run("History", func(t *testing.T) {
			counts := f.countRows(t)
			// accepted, declined, revoked, accepted: every invitation is kept.
			if counts["invitations"] != 4 {
				t.Errorf("invitations: got %d rows, want 4 kept as history", counts["invitations"])
			}
		})
	})
}

func TestLifecycle_Expiry(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "sqlite", "--invite-ttl", "1ms")
	ctx := context.Background()
	c := f.srv.client(t)
	admin := withAuth("Authorization", f.userToken(f.adminSub, f.adminEmail), f.ws)
	bob := withAuth("Authorization", f.userToken("u-bob", "bob@example.com"), "")
	inviteBob(ctx, t, c, admin, "bob@example.com")
	time.Sleep(20 * time.Millisecond) // let the 1 ms invitation lapse (no timing assertion)
	users, _ := c.ListWorkspaceUsersWithResponse(ctx, nil, admin)
	if u := findUser(*users.JSON200, "bob@example.com"); u == nil || !*u.Expired {
		t.Errorf("expired invitation in GET /users: got %+v, want expired true", u)
	}
	if mine, _ := c.ListAllPendingInvitationsWithResponse(ctx, nil, bob); mine.StatusCode() != 200 || len(*mine.JSON200) != 0 {
		t.Errorf("my invitations: got %d %s, want an empty list", mine.StatusCode(), mine.Body)
	}
	if acc, _ := c.AcceptWorkspaceInvitationWithResponse(ctx, f.ws, bob); acc.StatusCode() != 404 {
		t.Errorf("accept expired: got %d, want 404", acc.StatusCode())
	}
	if dec, _ := c.DeclineWorkspaceInvitationWithResponse(ctx, f.ws, bob); dec.StatusCode() != 404 {
		t.Errorf("decline expired: got %d, want 404", dec.StatusCode())
	}
	inviteBob(ctx, t, c, admin, "bob@example.com")
	counts := f.countRows(t)
	if counts["invitations"] != 2 {
		t.Errorf("re-invite after expiry: got %d invitation rows, want 2 (a fresh one)", counts["invitations"])
	}
}

// TestLifecycle_BadInputs: documented 4xx, an Error body, nothing changed.
func TestLifecycle_BadInputs(t *testing.T) {
	t.Parallel()
	parallelDialects(t, func(t *testing.T, dialect string) {
		f := newTenant(t, dialect)
		admin := f.bearer(f.userToken(f.adminSub, f.adminEmail))
		member := f.bearer(f.userToken(f.memberSub, f.memberEmail))
		noEmail := f.bearer(f.userToken(f.adminSub, ""))
		expired := f.bearer(f.devKeySign(t, claimsFor(f.adminSub, "workspaces:list workspaces:remove workspaces:accept", time.Now().Add(-time.Minute))))
		// A pending invitation for carol, so that "someone else's" cases exist.
		if resp, body := f.do(t, "POST", "/v0/users", admin, `{"email":"carol@example.com"}`); resp.StatusCode != 200 {
			t.Fatalf("setup invite: %d %s", resp.StatusCode, body)
		}
		role := func(r string) string { b, _ := json.Marshal(map[string]any{"role": r}); return string(b) }
		f.checkBadInputs(t, []badInput{
			{"RemoveUnknownSub", "DELETE", "/v0/users/nobody", admin, "", 404},
			{"RemoveUnknownEmail", "DELETE", "/v0/users/nobody@example.com", admin, "", 404},
			{"RemoveEncodedUnknown", "DELETE", "/v0/users/nobody%40example.com", admin, "", 404},
			{"RemoveNUL", "DELETE", "/v0/users/%00", admin, "", 404},
			{"RemoveBadEscape", "DELETE", "/v0/users/%ZZ", admin, "", 400},
			{"RemoveSlashEncoded", "DELETE", "/v0/users/a%2Fb", admin, "", 404},
			{"RemoveDotDot", "DELETE", "/v0/users/..%2F..%2Fworkspaces", admin, "", 404},
			{"RemoveLongValue", "DELETE", "/v0/users/" + strings.Repeat("x", 4000), admin, "", 404},
			{"RemoveLastAdmin", "DELETE", "/v0/users/" + f.adminSub, admin, "", 409},
			{"RemoveAsMember", "DELETE", "/v0/users/carol@example.com", member, "", 403},
			{"RemoveExpiredToken", "DELETE", "/v0/users/carol@example.com", expired, "", 401},
			{"RoleCapitalised", "PUT", "/v0/users/" + f.memberSub, admin, role("Admin"), 400},
			{"RoleUpperCase", "PUT", "/v0/users/" + f.memberSub, admin, role("MEMBER"), 400},
			{"RoleUnknown", "PUT", "/v0/users/" + f.memberSub, admin, role("owner"), 400},
			{"RoleEmpty", "PUT", "/v0/users/" + f.memberSub, admin, role(""), 400},
			{"RoleMissing", "PUT", "/v0/users/" + f.memberSub, admin, `{}`, 400},
			{"RoleNumber", "PUT", "/v0/users/" + f.memberSub, admin, `{"role":1}`, 400},
			{"RoleNotJSON", "PUT", "/v0/users/" + f.memberSub, admin, `role=admin`, 400},
			{"RoleHugeBody", "PUT", "/v0/users/" + f.memberSub, admin, `{"role":"admin","pad":"` + strings.Repeat("x", 100<<10) + `"}`, 413},
			{"RoleWrongContentType", "PUT", "/v0/users/" + f.memberSub, with(admin, "Content-Type", "text/plain"), role("admin"), 415},
			{"RoleUnknownUser", "PUT", "/v0/users/nobody", admin, role("admin"), 404},
			{"RoleDemoteLastAdmin", "PUT", "/v0/users/" + f.adminSub, admin, role("member"), 409},
			{"RoleAsMember", "PUT", "/v0/users/" + f.memberSub, member, role("admin"), 403},
			{"ListExpiredToken", "GET", "/v0/users", expired, "", 401},
			{"ListOtherWorkspace", "GET", "/v0/users", with(admin, "X-Blaxel-Workspace", f.otherWS), "", 404},
			{"MyInvitationsNoEmail", "GET", "/v0/profile/invitations", noEmail, "", 403},
			{"MyInvitationsAPIKey", "GET", "/v0/profile/invitations", f.bearer(f.adminKey), "", 403},
			{"AcceptSomeoneElses", "POST", "/v0/workspaces/" + f.ws + "/join", f.bearer(f.userToken(f.uniq("u-dave"), "dave@example.com")), "", 404},
			{"AcceptUnknownWorkspace", "POST", "/v0/workspaces/" + f.uniq("nope") + "/join", f.bearer(f.userToken(f.uniq("u-carol"), "carol@example.com")), "", 404},
			{"AcceptNoEmail", "POST", "/v0/workspaces/" + f.ws + "/join", noEmail, "", 403},
			{"AcceptAPIKey", "POST", "/v0/workspaces/" + f.ws + "/join", f.bearer(f.adminKey), "", 403},
			{"AcceptExpiredToken", "POST", "/v0/workspaces/" + f.ws + "/join", expired, "", 401},
			{"AcceptEncodedName", "POST", "/v0/workspaces/ac%6De%2F/join", f.bearer(f.userToken(f.uniq("u-carol"), "carol@example.com")), "", 404},
			{"DeclineNothing", "POST", "/v0/workspaces/" + f.ws + "/decline", member, "", 404},
			{"DeclineAPIKey", "POST", "/v0/workspaces/" + f.ws + "/decline", f.bearer(f.adminKey), "", 403},
			{"LeaveNotMember", "DELETE", "/v0/workspaces/" + f.otherWS + "/leave", admin, "", 404},
			{"LeaveUnknown", "DELETE", "/v0/workspaces/" + f.uniq("nope") + "/leave", admin, "", 404},
			{"LeaveLastAdmin", "DELETE", "/v0/workspaces/" + f.ws + "/leave", admin, "", 409},
			{"LeaveAPIKey", "DELETE", "/v0/workspaces/" + f.ws + "/leave", f.bearer(f.memberKey), "", 403},
			{"JoinWrongMethod", "GET", "/v0/workspaces/" + f.ws + "/join", admin, "", 405},
		})
		// Nothing above changed carol's invitation or anyone's role.
		resp, body := f.do(t, "GET", "/v0/users", admin, "")
		var users []gen.WorkspaceUser
		if err := json.Unmarshal(body, &users); err != nil {
			t.Fatalf("GET /v0/users: %v: %s", err, body)
		}
		if resp.StatusCode != 200 || len(users) != 3 || deref(findUser(users, f.memberEmail).Role) != "member" || findUser(users, "carol@example.com") == nil {
			t.Errorf("state after bad inputs: %d %s", resp.StatusCode, body)
		}
	})
}

// inviteBob invites bob's email as admin: a step the tests build on, so
// it must succeed.
func inviteBob(ctx context.Context, t *testing.T, c *gen.ClientWithResponses, admin gen.RequestEditorFn, email string) {
	t.Helper()
	r, err := c.InviteWorkspaceUserWithResponse(ctx, nil, gen.InviteWorkspaceUserJSONRequestBody{Email: ptr(email)}, admin)
	if err != nil {
		t.Fatalf("invite bob: %v", err)
	}
	if r.StatusCode() != 200 {
		t.Fatalf("invite bob: got %d, want 200: %s", r.StatusCode(), r.Body)
	}
}
