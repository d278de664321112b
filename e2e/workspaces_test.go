package e2e_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/membership-api/controlplane/gen"
	"github.com/membership-api/controlplane/store"
	"github.com/membership-api/controlplane/store/storetest"
)

// workspaceScopes are the scopes of the workspace operations.
var workspaceScopes = []string{"workspaces:list", "workspaces:create", "workspaces:get", "workspaces:update", "workspaces:delete", "workspaces:invite"}

func (f *fixture) workspaceToken(sub, email string) http.Header {
	return f.bearer(f.token(sub, email, workspaceScopes...))
}

// decodeWorkspace decodes a Workspace answer (the client already validated it).
func decodeWorkspace(t *testing.T, body []byte) gen.Workspace {
	t.Helper()
	var ws gen.Workspace
	if err := json.Unmarshal(body, &ws); err != nil {
		t.Fatalf("decode %s: %v", body, err)
	}
	return ws
}

func workspaceNames(t *testing.T, body []byte) []string {
	t.Helper()
	var list []gen.Workspace
	if err := json.Unmarshal(body, &list); err != nil {
		t.Fatalf("decode %s: %v", body, err)
	}
	names := []string{}
	for _, ws := range list {
		names = append(names, deref(ws.Name))
	}
	return names
}

// memberCount is the stored member_count of a workspace the sub belongs to.
func (f *fixture) memberCount(t *testing.T, workspace, sub string) int64 {
	t.Helper()
	m, err := f.store().Membership(context.Background(), workspace, sub)
	if err != nil {
		t.Fatalf("membership of %s in %s: %v", sub, workspace, err)
	}
	return m.Workspace.MemberCount
}

// TestWorkspaces_EndToEnd walks the six operations on both databases:
// who may see and change what, the errors, and what a delete takes with it.
func TestWorkspaces_EndToEnd(t *testing.T) {
	t.Parallel()
	parallelDialects(t, func(t *testing.T, dialect string) {
		f := newTenant(t, dialect)
		ctx := context.Background()
		admin := f.workspaceToken(f.adminSub, f.adminEmail)
		member := f.workspaceToken(f.memberSub, f.memberEmail)
		dana := f.workspaceToken(f.uniq("u-dana"), "dana@example.com")
		stranger := f.workspaceToken(f.uniq("u-stranger"), "stranger@example.com")
		keyAdmin := f.bearer(f.adminKey)
		checker := f.bearer(f.token(f.uniq("u-dana"), "dana@example.com", "admin")) // availability needs the global scope

		// List: each caller sees its own workspaces; a key its workspace.
		for _, tc := range []struct {
			name   string
			header http.Header
			want   string
		}{
			{"admin", admin, f.ws},
			{"key", keyAdmin, f.ws},
			{"stranger", stranger, ""},
		} {
			resp, body := f.do(t, "GET", "/v0/workspaces", tc.header, "")
			if got := strings.Join(workspaceNames(t, body), ","); resp.StatusCode != 200 || got != tc.want {
				t.Errorf("list as %s: got %d %s, want %q", tc.name, resp.StatusCode, body, tc.want)
			}
		}

		// Availability before and after creating.
		resp, body := f.do(t, "POST", "/v0/workspaces/availability", checker, `{"name":"`+f.uniq("beta")+`"}`)
		if resp.StatusCode != 200 || string(body) != "true\n" {
			t.Errorf("availability of beta: got %d %q, want true", resp.StatusCode, body)
		}

		// Create: dana becomes beta's first admin.
		resp, body = f.do(t, "POST", "/v0/workspaces", dana, `{"name":"`+f.uniq("beta")+`","displayName":"Beta Team","region":"us-west-2"}`)
		if resp.StatusCode != 200 {
			t.Fatalf("create beta: %d %s", resp.StatusCode, body)
		}
		if ws := decodeWorkspace(t, body); deref(ws.Name) != f.uniq("beta") || deref(ws.DisplayName) != "Beta Team" || deref(ws.CreatedBy) != f.uniq("u-dana") || ws.Region != nil {
			t.Errorf("created: got %s", body)
		}
		if n := f.memberCount(t, f.uniq("beta"), f.uniq("u-dana")); n != 1 {
			t.Errorf("beta's member_count: got %d, want 1", n)
		}
		resp, body = f.do(t, "GET", "/v0/workspaces", dana, "")
		if got := strings.Join(workspaceNames(t, body), ","); resp.StatusCode != 200 || got != f.uniq("beta") {
			t.Errorf("dana's list: got %d %s", resp.StatusCode, body)
		}
		resp, body = f.do(t, "POST", "/v0/workspaces/availability", checker, `{"name":"`+f.uniq("beta")+`"}`)
		if resp.StatusCode != 200 || string(body) != "false\n" {
			t.Errorf("availability of a taken name: got %d %q, want false", resp.StatusCode, body)
		}
		resp, body = f.do(t, "POST", "/v0/workspaces/availability?withReason=true", keyAdmin, `{"name":"`+f.uniq("beta")+`"}`)
		var avail gen.WorkspaceAvailability
		if err := json.Unmarshal(body, &avail); err != nil || resp.StatusCode != 200 || avail.Available == nil || *avail.Available ||
			avail.Reason == nil || *avail.Reason != gen.Taken || deref(avail.Message) == "" {
			t.Errorf("availability with reason: got %d %s (%v)", resp.StatusCode, body, err)
		}
		resp, body = f.do(t, "POST", "/v0/workspaces/availability?withReason=true", keyAdmin, `{"name":"`+f.uniq("gamma")+`"}`)
		avail = gen.WorkspaceAvailability{}
		if err := json.Unmarshal(body, &avail); err != nil || resp.StatusCode != 200 || avail.Available == nil || !*avail.Available || avail.Reason != nil {
			t.Errorf("availability of a free name with reason: got %d %s (%v)", resp.StatusCode, body, err)
		}

		// Get: members only, by name; countResources is accepted.
		for _, tc := range []struct {
			name, path string
			header     http.Header
			status     int
		}{
			{"member", "/v0/workspaces/" + f.uniq("beta"), dana, 200},
			{"count resources", "/v0/workspaces/" + f.uniq("beta") + "?countResources=true", dana, 200},
			{"key of its workspace", "/v0/workspaces/" + f.ws, keyAdmin, 200},
			{"key of another workspace", "/v0/workspaces/" + f.uniq("beta"), keyAdmin, 404},
			{"not a member", "/v0/workspaces/" + f.uniq("beta"), admin, 404},
			{"no such workspace", "/v0/workspaces/" + f.uniq("nowhere"), admin, 404},
		} {
			resp, body := f.do(t, "GET", tc.path, tc.header, "")
			if resp.StatusCode != tc.status {
				t.Errorf("get, %s: got %d %s, want %d", tc.name, resp.StatusCode, body, tc.status)
			}
			if tc.status == 404 && !strings.Contains(string(body), `"workspace_not_found"`) {
				t.Errorf("get, %s: got %s, want workspace_not_found", tc.name, body)
			}
		}

		// Update: admins change the display name, nothing else.
		resp, body = f.do(t, "PUT", "/v0/workspaces/"+f.ws, admin, `{"name":"renamed","displayName":"Acme Corp","region":"eu"}`)
		if ws := decodeWorkspace(t, body); resp.StatusCode != 200 || deref(ws.Name) != f.ws || deref(ws.DisplayName) != "Acme Corp" || deref(ws.UpdatedBy) != f.adminSub {
			t.Errorf("update: got %d %s", resp.StatusCode, body)
		}
		resp, body = f.do(t, "GET", "/v0/workspaces/"+f.ws, member, "")
		if ws := decodeWorkspace(t, body); resp.StatusCode != 200 || deref(ws.DisplayName) != "Acme Corp" {
			t.Errorf("get after update: got %d %s", resp.StatusCode, body)
		}
		resp, body = f.do(t, "PUT", "/v0/workspaces/"+f.ws, keyAdmin, `{"displayName":""}`)
		if ws := decodeWorkspace(t, body); resp.StatusCode != 200 || deref(ws.DisplayName) != f.ws {
			t.Errorf("empty display name: got %d %s, want the name", resp.StatusCode, body)
		}

		huge := `{"displayName":"` + strings.Repeat("x", 100<<10) + `"}`
		f.checkBadInputs(t, []badInput{
			{"CreateTaken", "POST", "/v0/workspaces", stranger, `{"name":"` + f.ws + `"}`, 409},
			{"CreateNoName", "POST", "/v0/workspaces", stranger, `{}`, 400},
			{"CreateBadName", "POST", "/v0/workspaces", stranger, `{"name":"Not_A-Name"}`, 400},
			{"CreateLongDisplayName", "POST", "/v0/workspaces", stranger, `{"name":"` + f.uniq("long") + `","displayName":"` + strings.Repeat("é", 201) + `"}`, 400},
			{"CreateWithKey", "POST", "/v0/workspaces", keyAdmin, `{"name":"` + f.uniq("keyed") + `"}`, 403},
			{"CreateWithoutEmail", "POST", "/v0/workspaces", f.bearer(f.token(f.uniq("u-noemail"), "", workspaceScopes...)), `{"name":"` + f.uniq("noemail") + `"}`, 403},
			{"CreateHuge", "POST", "/v0/workspaces", stranger, `{"name":"` + f.uniq("huge") + `","displayName":"` + strings.Repeat("x", 100<<10) + `"}`, 413},
			{"CreateWrongType", "POST", "/v0/workspaces", with(stranger, "Content-Type", "text/plain"), `{"name":"` + f.uniq("plain") + `"}`, 415},
			{"UpdateByMember", "PUT", "/v0/workspaces/" + f.ws, member, `{"displayName":"Mine"}`, 403},
			{"UpdateByStranger", "PUT", "/v0/workspaces/" + f.ws, stranger, `{"displayName":"Mine"}`, 404},
			{"UpdateMissing", "PUT", "/v0/workspaces/" + f.uniq("nowhere"), admin, `{"displayName":"X"}`, 404},
			{"UpdateLongDisplayName", "PUT", "/v0/workspaces/" + f.ws, admin, `{"displayName":"` + strings.Repeat("x", 201) + `"}`, 400},
			{"UpdateHuge", "PUT", "/v0/workspaces/" + f.ws, admin, huge, 413},
			{"UpdateWrongType", "PUT", "/v0/workspaces/" + f.ws, with(admin, "Content-Type", "text/plain"), `{"displayName":"X"}`, 415},
			{"DeleteByMember", "DELETE", "/v0/workspaces/" + f.ws, member, "", 403},
			{"DeleteByStranger", "DELETE", "/v0/workspaces/" + f.ws, stranger, "", 404},
			{"DeleteOtherWithKey", "DELETE", "/v0/workspaces/" + f.uniq("beta"), keyAdmin, "", 404},
			{"AvailabilityBadName", "POST", "/v0/workspaces/availability", checker, `{"name":"-bad-"}`, 400},
			{"AvailabilityNoName", "POST", "/v0/workspaces/availability", checker, `{}`, 400},
			{"AvailabilityHuge", "POST", "/v0/workspaces/availability", checker, `{"name":"x","pad":"` + strings.Repeat("x", 100<<10) + `"}`, 413},
			{"AvailabilityWrongType", "POST", "/v0/workspaces/availability", with(checker, "Content-Type", "text/plain"), `{"name":"x"}`, 415},
		})
		if _, body := f.do(t, "POST", "/v0/workspaces", keyAdmin, `{"name":"`+f.uniq("keyed")+`"}`); !strings.Contains(string(body), `"person_required"`) {
			t.Errorf("create with a key: got %s, want person_required", body)
		}
		if _, body := f.do(t, "PUT", "/v0/workspaces/"+f.ws, member, `{"displayName":"Mine"}`); !strings.Contains(string(body), `"not_admin"`) {
			t.Errorf("update by a member: got %s, want not_admin", body)
		}

		// Delete takes the members, invitations, queued emails and API
		// keys with it, in one go.
		if resp, body := f.do(t, "POST", "/v0/users", with(dana, "X-Blaxel-Workspace", f.uniq("beta")), `{"email":"erin@example.com"}`); resp.StatusCode != 200 {
			t.Fatalf("invite to beta: %d %s", resp.StatusCode, body)
		}
		if _, err := storetest.AddMember(ctx, f.store(), f.uniq("beta"), "test", storetest.NewMember{Sub: f.uniq("u-fred"), Email: "fred@example.com", Role: store.RoleMember}); err != nil {
			t.Fatal(err)
		}
		before := f.countRows(t)
		resp, body = f.do(t, "DELETE", "/v0/workspaces/"+f.uniq("beta"), dana, "")
		if ws := decodeWorkspace(t, body); resp.StatusCode != 200 || deref(ws.Name) != f.uniq("beta") || deref(ws.DisplayName) != "Beta Team" {
			t.Fatalf("delete beta: got %d %s", resp.StatusCode, body)
		}
		after := f.countRows(t)
		for table, gone := range map[string]int64{"workspaces": 1, "members": 2, "invitations": 1, "outbox_messages": 1, "api_keys": 0} {
			if before[table]-after[table] != gone {
				t.Errorf("%s: %d rows before the delete, %d after, want %d fewer", table, before[table], after[table], gone)
			}
		}
		for _, h := range []http.Header{dana, f.bearer(f.token(f.uniq("u-fred"), "fred@example.com", workspaceScopes...))} {
			if resp, body := f.do(t, "GET", "/v0/workspaces/"+f.uniq("beta"), h, ""); resp.StatusCode != 404 {
				t.Errorf("get after delete: got %d %s, want 404", resp.StatusCode, body)
			}
		}
		if resp, body := f.do(t, "DELETE", "/v0/workspaces/"+f.uniq("beta"), dana, ""); resp.StatusCode != 404 {
			t.Errorf("delete twice: got %d %s, want 404", resp.StatusCode, body)
		}

		// An admin's key may delete its own workspace; its keys go with it.
		resp, body = f.do(t, "DELETE", "/v0/workspaces/"+f.ws, keyAdmin, "")
		if resp.StatusCode != 200 {
			t.Fatalf("delete acme with its admin's key: %d %s", resp.StatusCode, body)
		}
		for _, key := range []string{f.adminKey, f.memberKey} {
			if resp, body := f.do(t, "GET", "/v0/workspaces", f.bearer(key), ""); resp.StatusCode != 401 {
				t.Errorf("a key of the deleted workspace: got %d %s, want 401", resp.StatusCode, body)
			}
		}
		if resp, body := f.do(t, "GET", "/v0/workspaces", f.bearer(f.otherKey), ""); resp.StatusCode != 200 || strings.Join(workspaceNames(t, body), ",") != f.otherWS {
			t.Errorf("another workspace's key: got %d %s", resp.StatusCode, body)
		}
	})
}

// TestWorkspaces_CreateRace: two people creating the same name at once get
// one 200 and one 409, and the workspace has exactly one member, the winner.
func TestWorkspaces_CreateRace(t *testing.T) {
	t.Parallel()
	parallelDialects(t, func(t *testing.T, dialect string) {
		f := newTenant(t, dialect)
		one := f.workspaceToken(f.uniq("u-one"), "one@example.com")
		two := f.workspaceToken(f.uniq("u-two"), "two@example.com")
		for round := range 5 {
			name := f.uniq("race-" + string(rune('a'+round)))
			body := `{"name":"` + name + `"}`
			statuses := make([]int, 2)
			var wg sync.WaitGroup
			for i, h := range []http.Header{one, two} {
				wg.Go(func() {
					resp, _ := f.do(t, "POST", "/v0/workspaces", h, body)
					statuses[i] = resp.StatusCode
				})
			}
			wg.Wait()
			if statuses[0]+statuses[1] != 200+409 {
				t.Errorf("%s: got %v, want one 200 and one 409", name, statuses)
				continue
			}
			winner := f.uniq("u-one")
			if statuses[1] == 200 {
				winner = f.uniq("u-two")
			}
			if n := f.memberCount(t, name, winner); n != 1 {
				t.Errorf("%s: member_count %d, want 1", name, n)
			}
		}
	})
}

// TestWorkspaces_AvailabilityRoute: the router sends POST
// /workspaces/availability to CheckWorkspaceAvailability, not to the
// {workspaceName} template; the static path shadows the template for the
// other methods too (405), which is why "availability" is a reserved name.
func TestWorkspaces_AvailabilityRoute(t *testing.T) {
	t.Parallel()
	f := newTenant(t, "sqlite")
	dana := f.workspaceToken(f.uniq("u-dana"), "dana@example.com")
	resp, body := f.do(t, "POST", "/v0/workspaces/availability", f.bearer(f.adminKey), `{"name":"`+f.ws+`"}`)
	if resp.StatusCode != 200 || string(body) != "false\n" {
		t.Errorf("POST availability: got %d %q, want false", resp.StatusCode, body)
	}
	if logs := f.srv.logs.String(); !strings.Contains(logs, "operation=CheckWorkspaceAvailability") {
		t.Errorf("the access log names no CheckWorkspaceAvailability:\n%s", logs)
	}
	resp, body = f.do(t, "GET", "/v0/workspaces/availability", dana, "")
	if resp.StatusCode != 405 || resp.Header.Get("Allow") != "POST, OPTIONS" {
		t.Errorf("GET /workspaces/availability: got %d (Allow %q) %s, want 405", resp.StatusCode, resp.Header.Get("Allow"), body)
	}
	f.checkBadInputs(t, []badInput{
		{"CreateReserved", "POST", "/v0/workspaces", dana, `{"name":"availability"}`, 400},
	})
	resp, body = f.do(t, "POST", "/v0/workspaces/availability?withReason=true", f.bearer(f.adminKey), `{"name":"availability"}`)
	var avail gen.WorkspaceAvailability
	if err := json.Unmarshal(body, &avail); err != nil || resp.StatusCode != 200 || avail.Available == nil || *avail.Available ||
		avail.Reason == nil || *avail.Reason != gen.ForbiddenReserved {
		t.Errorf("availability of the reserved name: got %d %s (%v)", resp.StatusCode, body, err)
	}
}

// TestCLI_WorkspaceList: `workspace list` prints every workspace, by name,
// with its member count (people: a service account is not counted).
func TestCLI_WorkspaceList(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "sqlite")
	mustCLI(t, e.args("workspace", "create", "zeta", "--admin-sub", "u-z", "--admin-email", "z@zeta.test")...)
	mustCLI(t, e.args("workspace", "create", "acme", "--admin-sub", "u-a", "--admin-email", "a@acme.test", "--display-name", "Acme Inc")...)
	if _, _, err := e.store().CreateServiceAccount(context.Background(), "acme", "u-a", store.NewServiceAccount{Name: "ci", Role: store.RoleMember}); err != nil {
		t.Fatal(err)
	}
	out := mustCLI(t, e.args("workspace", "list")...)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "NAME") {
		t.Fatalf("workspace list:\n%s", out)
	}
	for i, want := range [][]string{{"acme", "Acme Inc", "1"}, {"zeta", "zeta", "1"}} {
		got := strings.Join(strings.Fields(lines[i+1]), " ")
		if !strings.HasPrefix(got, strings.Join(want, " ")+" ") {
			t.Errorf("line %d: %q, want it to start with %v", i+1, lines[i+1], want)
		}
	}
	if r := runCLI(t, e.args("workspace", "list", "extra")...); r.code == 0 {
		t.Errorf("workspace list with an argument succeeded")
	}
}
