package e2e_test

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/membership-api/controlplane/store"
	"github.com/membership-api/controlplane/store/storetest"
)

// TestFaults_BrokenDatabase: with its tables gone (dropped behind the
// server's back, a real fault and not a fake handler), every operation that
// reaches the database answers the spec's 500 with an Error body, and the
// server logs the cause; nothing panics and the server keeps serving.
func TestFaults_BrokenDatabase(t *testing.T) {
	t.Parallel()
	parallelDialects(t, func(t *testing.T, dialect string) {
		f := newFixture(t, dialect) // its own database: the test drops tables
		admin := f.bearer(f.userToken(f.adminSub, f.adminEmail))
		invitee := f.bearer(f.userToken(f.uniq("u-carol"), "carol@example.com"))
		everything := f.bearer(f.token(f.adminSub, f.adminEmail, "admin")) // the scope that implies all
		if resp, body := f.do(t, "POST", "/v0/users", admin, `{"email":"carol@example.com"}`); resp.StatusCode != 200 {
			t.Fatalf("setup invite: %d %s", resp.StatusCode, body)
		}

		st := f.store()
		drop := "DROP TABLE %s"
		if dialect == "postgres" {
			drop = "DROP TABLE %s CASCADE"
		}
		for name, db := range st.DBs() {
			if name == "sqlite_read" {
				continue
			}
			for _, table := range []string{"outbox_messages", "api_keys", "invitations", "service_accounts", "members", "workspaces"} {
				if _, err := db.ExecContext(context.Background(), strings.Replace(drop, "%s", table, 1)); err != nil {
					t.Fatalf("drop %s: %v", table, err)
				}
			}
			break
		}

		for _, tc := range []struct {
			name, method, path string
			header             http.Header
			body               string
		}{
			{"InviteWorkspaceUser", "POST", "/v0/users", admin, `{"email":"dave@example.com"}`},
			{"ListWorkspaceUsers", "GET", "/v0/users", admin, ""},
			{"UpdateWorkspaceUserRole", "PUT", "/v0/users/" + f.memberSub, admin, `{"role":"admin"}`},
			{"RemoveWorkspaceUser", "DELETE", "/v0/users/" + f.memberSub, admin, ""},
			{"ListAllPendingInvitations", "GET", "/v0/profile/invitations", invitee, ""},
			{"AcceptWorkspaceInvitation", "POST", "/v0/workspaces/" + f.ws + "/join", invitee, ""},
			{"DeclineWorkspaceInvitation", "POST", "/v0/workspaces/" + f.ws + "/decline", invitee, ""},
			{"LeaveWorkspace", "DELETE", "/v0/workspaces/" + f.ws + "/leave", f.bearer(f.userToken(f.memberSub, f.memberEmail)), ""},
			{"ListWorkspaces", "GET", "/v0/workspaces", admin, ""},
			{"CreateWorkspace", "POST", "/v0/workspaces", everything, `{"name":"beta"}`},
			{"GetWorkspace", "GET", "/v0/workspaces/" + f.ws, everything, ""},
			{"UpdateWorkspace", "PUT", "/v0/workspaces/" + f.ws, admin, `{"displayName":"X"}`},
			{"DeleteWorkspace", "DELETE", "/v0/workspaces/" + f.ws, everything, ""},
			{"CheckWorkspaceAvailability", "POST", "/v0/workspaces/availability", everything, `{"name":"beta"}`},
			{"GetWorkspaceServiceAccounts", "GET", "/v0/service_accounts", everything, ""},
			{"CreateWorkspaceServiceAccount", "POST", "/v0/service_accounts", everything, `{"name":"ci"}`},
			{"UpdateWorkspaceServiceAccount", "PUT", "/v0/service_accounts/sa_x", everything, `{"name":"ci"}`},
			{"DeleteWorkspaceServiceAccount", "DELETE", "/v0/service_accounts/sa_x", everything, ""},
			{"ListApiKeysForServiceAccount", "GET", "/v0/service_accounts/sa_x/api_keys", everything, ""},
			{"CreateApiKeyForServiceAccount", "POST", "/v0/service_accounts/sa_x/api_keys", everything, `{}`},
			{"DeleteApiKeyForServiceAccount", "DELETE", "/v0/service_accounts/sa_x/api_keys/ak_x", everything, ""},
			// Client credentials sa_x:bls_x (HTTP Basic): the account lookup fails.
			{"OauthToken", "POST", "/v0/oauth/token", http.Header{"Authorization": {"Basic c2FfeDpibHNfeA=="}, "Content-Type": {"application/json"}}, `{"grant_type":"client_credentials"}`},
		} {
			t.Run(tc.name, func(t *testing.T) {
				resp, body := f.do(t, tc.method, tc.path, tc.header, tc.body)
				if resp.StatusCode != http.StatusInternalServerError {
					t.Errorf("got %d %s, want 500", resp.StatusCode, body)
				}
				if strings.Contains(string(body), "no such table") || strings.Contains(string(body), "does not exist") {
					t.Errorf("the database's own error reached the client: %s", body)
				}
			})
		}
		if resp, err := httpGet(f.srv.URL + "/healthz"); err != nil || resp.StatusCode != 200 {
			t.Errorf("after the faults /healthz answered %v %v: the server should still serve", resp, err)
		} else {
			resp.Body.Close()
		}
		if logs := f.srv.logs.String(); !strings.Contains(logs, "level=ERROR") {
			t.Errorf("no ERROR logged for the 500s:\n%s", logs)
		}
	})
}

// TestAccept_EmailOfAnotherMember: an invitation pending for an address
// that meanwhile belongs to another member (a member added by another path:
// the CLI, an older version) cannot be accepted by a second person with that
// address: 409, and nothing changes.
func TestAccept_EmailOfAnotherMember(t *testing.T) {
	t.Parallel()
	parallelDialects(t, func(t *testing.T, dialect string) {
		f := newTenant(t, dialect)
		admin := f.bearer(f.userToken(f.adminSub, f.adminEmail))
		if resp, body := f.do(t, "POST", "/v0/users", admin, `{"email":"dora@example.com"}`); resp.StatusCode != 200 {
			t.Fatalf("setup invite: %d %s", resp.StatusCode, body)
		}
		if _, err := storetest.AddMember(context.Background(), f.store(), f.ws, "test", storetest.NewMember{Sub: f.uniq("u-dora-first"), Email: "dora@example.com", Role: store.RoleMember}); err != nil {
			t.Fatal(err)
		}
		f.checkBadInputs(t, []badInput{
			{"AcceptTakenEmail", "POST", "/v0/workspaces/" + f.ws + "/join", f.bearer(f.userToken(f.uniq("u-dora-second"), "dora@example.com")), "", 409},
		})
	})
}
