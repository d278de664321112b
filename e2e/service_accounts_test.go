package e2e_test

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/membership-api/controlplane/gen"
	"github.com/membership-api/controlplane/server"
	"github.com/membership-api/controlplane/store"
)

// serviceAccountScopes are the scopes of the /service_accounts operations.
var serviceAccountScopes = []string{"workspaces:get", "workspaces:update", "apiKey:list", "apiKey:write"}

// saEditor is the generated client's editor for sub, with those scopes, in acme.
func (f *fixture) saEditor(sub, email string) gen.RequestEditorFn {
	return withAuth("Authorization", f.token(sub, email, serviceAccountScopes...), f.ws)
}

// createServiceAccount creates one through the generated client and returns
// its client ID and secret.
func (f *fixture) createServiceAccount(t *testing.T, c *gen.ClientWithResponses, as gen.RequestEditorFn, name, role string) (string, string) {
	t.Helper()
	body := gen.CreateWorkspaceServiceAccountJSONRequestBody{Name: name}
	if role != "" {
		r := gen.ServiceAccountRole(role)
		body.Role = &r
	}
	resp, err := c.CreateWorkspaceServiceAccountWithResponse(context.Background(), nil, body, as)
	if err != nil {
		t.Fatal(err)
	}
	if resp.JSON200 == nil {
		t.Fatalf("create service account %s: %d %s", name, resp.StatusCode(), resp.Body)
	}
	return deref(resp.JSON200.ClientId), deref(resp.JSON200.ClientSecret)
}

// createServiceAccountKey issues a key through the generated client.
func (f *fixture) createServiceAccountKey(t *testing.T, c *gen.ClientWithResponses, as gen.RequestEditorFn, clientID, expiresIn string) gen.ApiKey {
	t.Helper()
	body := gen.CreateApiKeyForServiceAccountJSONRequestBody{Name: ptr("ci")}
	if expiresIn != "" {
		body.ExpiresIn = &expiresIn
	}
	resp, err := c.CreateApiKeyForServiceAccountWithResponse(context.Background(), clientID, nil, body, as)
	if err != nil {
		t.Fatal(err)
	}
	if resp.JSON200 == nil {
		t.Fatalf("create key for %s: %d %s", clientID, resp.StatusCode(), resp.Body)
	}
	return *resp.JSON200
}

// TestServiceAccounts_EndToEnd walks the seven operations through the
// generated client on both databases: what an account may do with its keys,
// that it is never shown as a person, and that deleting it or a key stops
// its credentials at once.
func TestServiceAccounts_EndToEnd(t *testing.T) {
	t.Parallel()
	parallelDialects(t, func(t *testing.T, dialect string) {
		f := newTenant(t, dialect)
		ctx := context.Background()
		c := f.srv.client(t)
		admin := f.saEditor(f.adminSub, f.adminEmail)
		member := f.saEditor(f.memberSub, f.memberEmail)
		membersBefore := f.memberCount(t, f.ws, f.adminSub)

		// Create: the secret once, role member unless asked.
		readerID, readerSecret := f.createServiceAccount(t, c, admin, "reader", "")
		if !strings.HasPrefix(readerID, store.ServiceAccountPrefix) || !strings.HasPrefix(readerSecret, store.ClientSecretPrefix) {
			t.Fatalf("client ID %q / secret %q lack their prefixes", readerID, readerSecret)
		}
		botID, _ := f.createServiceAccount(t, c, admin, "bot", "admin")
		if got := f.memberCount(t, f.ws, f.adminSub); got != membersBefore {
			t.Errorf("member_count %d after creating service accounts, want %d (people only)", got, membersBefore)
		}

		// List: any member may; roles shown, no secret.
		list, err := c.GetWorkspaceServiceAccountsWithResponse(ctx, nil, member)
		if err != nil || list.JSON200 == nil {
			t.Fatalf("list: %v %s", err, list.Body)
		}
		var roles []string
		for _, sa := range *list.JSON200 {
			roles = append(roles, deref(sa.Name)+"="+string(*sa.Role))
		}
		if got := strings.Join(roles, ","); got != "bot=admin,reader=member" {
			t.Errorf("list: got %s", got)
		}
		if strings.Contains(string(list.Body), "secret") {
			t.Errorf("the list shows a secret: %s", list.Body)
		}

		// Update: rename and promote, by an admin.
		upd, err := c.UpdateWorkspaceServiceAccountWithResponse(ctx, readerID, nil,
			gen.UpdateWorkspaceServiceAccountJSONRequestBody{Name: ptr("reader-2"), Description: ptr("reads")}, admin)
		if err != nil || upd.JSON200 == nil || deref(upd.JSON200.Name) != "reader-2" || deref(upd.JSON200.Description) != "reads" {
			t.Fatalf("update: %v %s", err, upd.Body)
		}

		// Keys: issued once, listed without the key, acting as the account.
		readerKey := f.createServiceAccountKey(t, c, admin, readerID, "30d")
		if !strings.HasPrefix(deref(readerKey.ApiKey), store.APIKeyPrefix) || !strings.HasPrefix(deref(readerKey.Id), store.APIKeyIDPrefix) ||
			deref(readerKey.SubType) != "service_account" || deref(readerKey.Sub) != readerID || deref(readerKey.ExpiresIn) != "30d" {
			t.Fatalf("key: %+v", readerKey)
		}
		botKey := f.createServiceAccountKey(t, c, admin, botID, "")
		keys, err := c.ListApiKeysForServiceAccountWithResponse(ctx, readerID, nil, member)
		if err != nil || keys.JSON200 == nil || len(*keys.JSON200) != 1 || (*keys.JSON200)[0].ApiKey != nil {
			t.Fatalf("list keys: %v %s", err, keys.Body)
		}

		// A reader's key lists users; the accounts are not among them.
		asReader := withAuth("Authorization", deref(readerKey.ApiKey), "")
		users, err := c.ListWorkspaceUsersWithResponse(ctx, nil, asReader)
		if err != nil || users.JSON200 == nil {
			t.Fatalf("list users with the account's key: %v %s", err, users.Body)
		}
		for _, u := range *users.JSON200 {
			if deref(u.Email) == "" {
				t.Errorf("a user without an email (a service account?) is listed: %s", users.Body)
			}
		}
		// A member account may not invite; an admin account may.
		if r, _ := c.InviteWorkspaceUserWithResponse(ctx, nil, gen.InviteWorkspaceUserJSONRequestBody{Email: ptr("x@example.com")}, asReader); r.StatusCode() != 403 {
			t.Errorf("a member account invited: %d %s", r.StatusCode(), r.Body)
		}
		inv, err := c.InviteWorkspaceUserWithResponse(ctx, nil, gen.InviteWorkspaceUserJSONRequestBody{Email: ptr("y@example.com")},
			withAuth("Authorization", deref(botKey.ApiKey), ""))
		if err != nil || inv.JSON200 == nil || deref(inv.JSON200.InvitedBy) != botID {
			t.Fatalf("an admin account's invite: %v %s", err, inv.Body)
		}

		// Revoke a key: refused at once, and a second revoke is a 404.
		if r, err := c.DeleteApiKeyForServiceAccountWithResponse(ctx, readerID, deref(readerKey.Id), nil, admin); err != nil || r.StatusCode() != 200 {
			t.Fatalf("revoke key: %v %d %s", err, r.StatusCode(), r.Body)
		}
		f.checkBadInputs(t, []badInput{
			{"RevokedKey", "GET", "/v0/users", with(f.bearer(deref(readerKey.ApiKey)), server.WorkspaceHeader, ""), "", 401},
			{"RevokeTwice", "DELETE", "/v0/service_accounts/" + readerID + "/api_keys/" + deref(readerKey.Id), f.bearer(f.token(f.adminSub, f.adminEmail, serviceAccountScopes...)), "", 404},
		})

		// Delete the admin account: its key stops at once, its member row goes.
		del, err := c.DeleteWorkspaceServiceAccountWithResponse(ctx, botID, nil, admin)
		if err != nil || del.JSON200 == nil || deref(del.JSON200.ClientId) != botID {
			t.Fatalf("delete: %v %s", err, del.Body)
		}
		f.checkBadInputs(t, []badInput{
			{"DeletedAccountKey", "GET", "/v0/users", with(f.bearer(deref(botKey.ApiKey)), server.WorkspaceHeader, ""), "", 401},
			{"DeleteTwice", "DELETE", "/v0/service_accounts/" + botID, f.bearer(f.token(f.adminSub, f.adminEmail, serviceAccountScopes...)), "", 404},
		})
		if _, err := f.store().Membership(ctx, f.ws, botID); err == nil {
			t.Errorf("the deleted account is still a member")
		}
		if got := f.memberCount(t, f.ws, f.adminSub); got != membersBefore {
			t.Errorf("member_count %d after deleting, want %d", got, membersBefore)
		}
	})
}

// TestServiceAccounts_Refusals: every refusal of the service-account
// operations and of what an account may not do, with its status, its kind
// (checked by the validating client against docs/api/errors.md's table) and no row
// changed.
func TestServiceAccounts_Refusals(t *testing.T) {
	t.Parallel()
	parallelDialects(t, func(t *testing.T, dialect string) {
		f := newTenant(t, dialect)
		c := f.srv.client(t)
		adminEd := f.saEditor(f.adminSub, f.adminEmail)
		id, _ := f.createServiceAccount(t, c, adminEd, "ci", "")
		key := deref(f.createServiceAccountKey(t, c, adminEd, id, "").ApiKey)
		id2, _ := f.createServiceAccount(t, c, adminEd, "ci-2", "")
		otherID, _ := f.createServiceAccount(t, c, withAuth("Authorization", f.token(f.otherSub, f.otherEmail, serviceAccountScopes...), f.otherWS), "theirs", "")

		admin := f.bearer(f.token(f.adminSub, f.adminEmail, serviceAccountScopes...))
		member := f.bearer(f.token(f.memberSub, f.memberEmail, serviceAccountScopes...))
		asAccount := with(f.bearer(key), server.WorkspaceHeader, "")
		sa := "/v0/service_accounts/" + id
		stranger := f.bearer(f.token(f.uniq("u-stranger"), "s@example.com", serviceAccountScopes...))
		huge := `{"name":"x","pad":"` + strings.Repeat("x", 100<<10) + `"}`
		f.checkBadInputs(t, []badInput{
			{"NoName", "POST", "/v0/service_accounts", admin, `{"description":"x"}`, 400},
			{"BlankName", "POST", "/v0/service_accounts", admin, `{"name":"  "}`, 400},
			{"BadRole", "POST", "/v0/service_accounts", admin, `{"name":"x","role":"owner"}`, 400},
			{"NameTaken", "POST", "/v0/service_accounts", admin, `{"name":"ci"}`, 409},
			{"MemberCreates", "POST", "/v0/service_accounts", member, `{"name":"mine"}`, 403},
			{"MemberUpdates", "PUT", sa, member, `{"role":"admin"}`, 403},
			{"MemberDeletes", "DELETE", sa, member, "", 403},
			{"MemberIssuesKey", "POST", sa + "/api_keys", member, `{}`, 403},
			{"UnknownAccount", "PUT", "/v0/service_accounts/sa_nothere", admin, `{"name":"y"}`, 404},
			{"OtherWorkspacesAccount", "DELETE", "/v0/service_accounts/" + otherID, admin, "", 404},
			{"KeysOfUnknown", "GET", "/v0/service_accounts/sa_nothere/api_keys", admin, "", 404},
			{"BadExpiresIn", "POST", sa + "/api_keys", admin, `{"expires_in":"0d"}`, 400},
			{"FractionExpiresIn", "POST", sa + "/api_keys", admin, `{"expires_in":"1.5d"}`, 400},
			{"TooLongExpiresIn", "POST", sa + "/api_keys", admin, `{"expires_in":"522w"}`, 400},
			{"UnknownKey", "DELETE", sa + "/api_keys/ak_nothere", admin, "", 404},
			{"NoWorkspace", "GET", "/v0/service_accounts", with(admin, server.WorkspaceHeader, ""), "", 400},
			{"CreateHuge", "POST", "/v0/service_accounts", admin, huge, 413},
			{"CreateWrongType", "POST", "/v0/service_accounts", with(admin, "Content-Type", "text/plain"), `{"name":"x"}`, 415},
			{"UpdateHuge", "PUT", sa, admin, huge, 413},
			{"UpdateWrongType", "PUT", sa, with(admin, "Content-Type", "text/plain"), `{"name":"x"}`, 415},
			{"KeyHuge", "POST", sa + "/api_keys", admin, huge, 413},
			{"KeyWrongType", "POST", sa + "/api_keys", with(admin, "Content-Type", "text/plain"), `{}`, 415},
			{"StrangerCreates", "POST", "/v0/service_accounts", stranger, `{"name":"x"}`, 404},
			{"StrangerUpdates", "PUT", sa, stranger, `{"name":"x"}`, 404},
			{"StrangerDeletes", "DELETE", sa, stranger, "", 404},
			{"StrangerIssuesKey", "POST", sa + "/api_keys", stranger, `{}`, 404},
			{"StrangerListsKeys", "GET", sa + "/api_keys", stranger, "", 404},
			{"StrangerRevokesKey", "DELETE", sa + "/api_keys/ak_x", stranger, "", 404},
			{"NoWorkspaceKeys", "GET", sa + "/api_keys", with(admin, server.WorkspaceHeader, ""), "", 400},
			{"NoWorkspaceCreate", "POST", "/v0/service_accounts", with(admin, server.WorkspaceHeader, ""), `{"name":"x"}`, 400},
			{"NoWorkspaceUpdate", "PUT", sa, with(admin, server.WorkspaceHeader, ""), `{"name":"x"}`, 400},
			{"NoWorkspaceDelete", "DELETE", sa, with(admin, server.WorkspaceHeader, ""), "", 400},
			{"NoWorkspaceIssueKey", "POST", sa + "/api_keys", with(admin, server.WorkspaceHeader, ""), `{}`, 400},
			{"NoWorkspaceRevokeKey", "DELETE", sa + "/api_keys/ak_x", with(admin, server.WorkspaceHeader, ""), "", 400},
			{"RenameToTaken", "PUT", "/v0/service_accounts/" + id2, admin, `{"name":"ci"}`, 409},
			{"Stranger", "GET", "/v0/service_accounts", stranger, "", 404},
			// An account's member row is not a user's: the user operations refuse it.
			{"RemoveAccountAsUser", "DELETE", "/v0/users/" + id, f.bearer(f.userToken(f.adminSub, f.adminEmail)), "", 404},
			{"PromoteAccountAsUser", "PUT", "/v0/users/" + id, f.bearer(f.userToken(f.adminSub, f.adminEmail)), `{"role":"admin"}`, 404},
			// An account acts inside its workspace only, and never as a person.
			{"AccountInAnotherWorkspace", "GET", "/v0/users", with(asAccount, server.WorkspaceHeader, f.otherWS), "", 404},
			{"AccountLeaves", "DELETE", "/v0/workspaces/" + f.ws + "/leave", asAccount, "", 403},
			{"AccountsInvitations", "GET", "/v0/profile/invitations", asAccount, "", 403},
			{"AccountCreatesWorkspace", "POST", "/v0/workspaces", asAccount, `{"name":"` + f.uniq("machines") + `"}`, 403},
			{"MemberAccountCreatesAccount", "POST", "/v0/service_accounts", asAccount, `{"name":"child"}`, 403},
		})
		// The only admin may not be removed by demoting or deleting it: an
		// admin account of a workspace whose person admin left.
		botID, _ := f.createServiceAccount(t, c, adminEd, "bot", "admin")
		ctx := context.Background()
		if _, err := f.store().UpdateRole(ctx, f.ws, f.adminSub, f.adminSub, store.RoleMember); err != nil {
			t.Fatalf("demote the person admin (the account is an admin too): %v", err)
		}
		botAdmin := f.bearer(f.createServiceAccountKeyRaw(t, botID))
		f.checkBadInputs(t, []badInput{
			{"DemoteLastAdminAccount", "PUT", "/v0/service_accounts/" + botID, with(botAdmin, server.WorkspaceHeader, ""), `{"role":"member"}`, 409},
			{"DeleteLastAdminAccount", "DELETE", "/v0/service_accounts/" + botID, with(botAdmin, server.WorkspaceHeader, ""), "", 409},
		})
	})
}

// createServiceAccountKeyRaw issues a key with the store (the caller being
// whoever is admin now is beside the point of the test using it).
func (f *fixture) createServiceAccountKeyRaw(t *testing.T, clientID string) string {
	t.Helper()
	key, _, err := f.store().CreateServiceAccountKey(context.Background(), f.ws, clientID, clientID, store.NewServiceAccountKey{})
	if err != nil {
		t.Fatal(err)
	}
	return key
}

// TestServiceAccounts_ExpiredKey: a key past its expiry is refused like a
// revoked one (its expiry moved into the past in the database: no waiting).
func TestServiceAccounts_ExpiredKey(t *testing.T) {
	t.Parallel()
	parallelDialects(t, func(t *testing.T, dialect string) {
		f := newTenant(t, dialect)
		c := f.srv.client(t)
		adminEd := f.saEditor(f.adminSub, f.adminEmail)
		id, _ := f.createServiceAccount(t, c, adminEd, "ci", "")
		k := f.createServiceAccountKey(t, c, adminEd, id, "1h")
		h := with(f.bearer(deref(k.ApiKey)), server.WorkspaceHeader, "")
		if resp, body := f.do(t, "GET", "/v0/users", h, ""); resp.StatusCode != 200 {
			t.Fatalf("fresh key: %d %s", resp.StatusCode, body)
		}
		for name, db := range f.store().DBs() {
			if name == "sqlite_read" {
				continue
			}
			query := "UPDATE api_keys SET expires_at = ? WHERE public_id = ?"
			if dialect == "postgres" {
				query = "UPDATE api_keys SET expires_at = $1 WHERE public_id = $2"
			}
			if _, err := db.ExecContext(context.Background(), query, time.Now().Add(-time.Minute), deref(k.Id)); err != nil {
				t.Fatal(err)
			}
			break
		}
		resp, body := f.do(t, "GET", "/v0/users", h, "")
		var e gen.Error
		_ = json.Unmarshal(body, &e)
		if resp.StatusCode != 401 || e.Error != server.KindInvalidAPIKey {
			t.Errorf("expired key: %d %s, want 401 %s", resp.StatusCode, body, server.KindInvalidAPIKey)
		}
	})
}

// TestServiceAccounts_RaceSameName: concurrent creations of one name make
// exactly one account; the others get 409 (the unique index decides).
func TestServiceAccounts_RaceSameName(t *testing.T) {
	t.Parallel()
	parallelDialects(t, func(t *testing.T, dialect string) {
		f := newTenant(t, dialect)
		admin := f.bearer(f.token(f.adminSub, f.adminEmail, serviceAccountScopes...))
		const n = 12
		codes := make(chan int, n)
		var wg sync.WaitGroup
		for range n {
			wg.Go(func() {
				resp, _ := f.do(t, "POST", "/v0/service_accounts", admin, `{"name":"racer"}`)
				codes <- resp.StatusCode
			})
		}
		wg.Wait()
		close(codes)
		count := map[int]int{}
		for c := range codes {
			count[c]++
		}
		if count[200] != 1 || count[409] != n-1 {
			t.Errorf("statuses %v, want one 200 and %d 409", count, n-1)
		}
		rows := f.countRows(t)
		if rows["service_accounts"] != 1 {
			t.Errorf("%d service accounts, want 1", rows["service_accounts"])
		}
	})
}

// TestServiceAccounts_DeletedWithWorkspace: deleting a workspace takes its
// service accounts, their member rows and keys with it, in one transaction.
func TestServiceAccounts_DeletedWithWorkspace(t *testing.T) {
	t.Parallel()
	parallelDialects(t, func(t *testing.T, dialect string) {
		f := newTenant(t, dialect)
		ctx := context.Background()
		st := f.store()
		if _, err := st.CreateWorkspace(ctx, store.NewWorkspace{Name: f.uniq("doomed"), AdminSub: f.adminSub, AdminEmail: f.adminEmail}); err != nil {
			t.Fatal(err)
		}
		_, v, err := st.CreateServiceAccount(ctx, f.uniq("doomed"), f.adminSub, store.NewServiceAccount{Name: "ci", Role: store.RoleAdmin})
		if err != nil {
			t.Fatal(err)
		}
		key, _, err := st.CreateServiceAccountKey(ctx, f.uniq("doomed"), f.adminSub, v.ClientID, store.NewServiceAccountKey{})
		if err != nil {
			t.Fatal(err)
		}
		before := f.countRows(t)
		resp, body := f.do(t, "DELETE", "/v0/workspaces/"+f.uniq("doomed"), f.bearer(f.token(f.adminSub, f.adminEmail, "workspaces:delete")), "")
		if resp.StatusCode != 200 {
			t.Fatalf("delete workspace: %d %s", resp.StatusCode, body)
		}
		after := f.countRows(t)
		if before["service_accounts"]-after["service_accounts"] != 1 || before["api_keys"]-after["api_keys"] != 1 || before["members"]-after["members"] != 2 {
			t.Errorf("rows before %v, after %v: want the account, its key and both member rows gone", before, after)
		}
		if resp, body := f.do(t, "GET", "/v0/users", with(f.bearer(key), server.WorkspaceHeader, ""), ""); resp.StatusCode != 401 {
			t.Errorf("the gone workspace's account key: %d %s, want 401", resp.StatusCode, body)
		}
	})
}
