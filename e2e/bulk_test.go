package e2e_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/routers/gorillamux"

	"github.com/membership-api/controlplane/gen"
	"github.com/membership-api/controlplane/store"
	"github.com/membership-api/controlplane/store/storetest"
)

// TestBulkInvite_Route: kin-openapi's router (the validator's) takes
// POST /users/bulk to the bulk operation, not to the /users/{subOrEmail}
// template, and leaves every other /users/... path to the template.
func TestBulkInvite_Route(t *testing.T) {
	t.Parallel()
	router, err := gorillamux.NewRouter(loadSpec(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ method, path, want string }{
		{"POST", "/users/bulk", "BulkInviteWorkspaceUsers"},
		{"PUT", "/users/bulky", "UpdateWorkspaceUserRole"},
		{"DELETE", "/users/bob@example.com", "RemoveWorkspaceUser"},
		{"POST", "/users", "InviteWorkspaceUser"},
	} {
		req, err := http.NewRequestWithContext(context.Background(), tc.method, "https://api.blaxel.ai/v0"+tc.path, nil)
		if err != nil {
			t.Fatal(err)
		}
		route, _, err := router.FindRoute(req)
		if err != nil {
			t.Errorf("%s %s: %v", tc.method, tc.path, err)
			continue
		}
		if route.Operation.OperationID != tc.want {
			t.Errorf("%s %s: routed to %s, want %s", tc.method, tc.path, route.Operation.OperationID, tc.want)
		}
	}
}

// TestBulkInvite_Served: the running server routes the bulk path the same
// way (an invitation comes back), and the static path shadows the template
// for its other methods, as /workspaces/availability does (docs/api/bulk-invitations.md).
func TestBulkInvite_Served(t *testing.T) {
	t.Parallel()
	f := newTenant(t, "sqlite")
	admin := f.bearer(f.userToken(f.adminSub, f.adminEmail))
	resp, body := f.do(t, "POST", "/v0/users/bulk", admin, `{"emails":["bulk@example.com"]}`)
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"invitation"`) {
		t.Fatalf("POST /v0/users/bulk: %d %s", resp.StatusCode, body)
	}
	for _, m := range []string{"PUT", "DELETE"} {
		resp, _ := f.do(t, m, "/v0/users/bulk", admin, `{"role":"admin"}`)
		if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != "POST, OPTIONS" {
			t.Errorf("%s /v0/users/bulk: %d Allow %q, want 405 Allow POST, OPTIONS", m, resp.StatusCode, resp.Header.Get("Allow"))
		}
	}
}

// singleAnswer is what one invite of email answered, as a bulk row shows it.
type rowAnswer struct {
	status     int
	kind       string
	invitation *gen.PendingInvitation
}

func (f *fixture) inviteOne(t *testing.T, h http.Header, email string) rowAnswer {
	t.Helper()
	body, err := json.Marshal(map[string]string{"email": email})
	if err != nil {
		t.Fatal(err)
	}
	resp, raw := f.do(t, "POST", "/v0/users", h, string(body))
	a := rowAnswer{status: resp.StatusCode}
	if resp.StatusCode == http.StatusOK {
		a.invitation = &gen.PendingInvitation{}
		if err := json.Unmarshal(raw, a.invitation); err != nil {
			t.Fatal(err)
		}
		return a
	}
	var e gen.Error
	if err := json.Unmarshal(raw, &e); err != nil {
		t.Fatal(err)
	}
	a.kind = e.Error
	return a
}

func (f *fixture) bulkInvite(t *testing.T, h http.Header, body string) []gen.BulkInviteResult {
	t.Helper()
	resp, raw := f.do(t, "POST", "/v0/users/bulk", h, body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("bulk invite: %d %s", resp.StatusCode, raw)
	}
	var out gen.BulkInviteResponse
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatal(err)
	}
	return out.Results
}

// TestBulkInvite_SameAsSingleInvites: two workspaces in the same state (a
// member, a pending invitation, a denied domain); one gets a bulk invite of
// a mix of rows (fresh, malformed, repeated in other case, a member's, a
// denied domain's, one already pending), the other the same emails one
// POST /users at a time. Row by row, the bulk answer is the single one:
// status, error kind, and the invitation's fields.
func TestBulkInvite_SameAsSingleInvites(t *testing.T) {
	t.Parallel()
	parallelDialects(t, func(t *testing.T, dialect string) {
		f := newTenant(t, dialect)
		ctx := context.Background()
		st := f.store()
		creator := f.workspaceToken(f.uniq("u-boss"), "boss@corp.test")
		for _, ws := range []string{f.uniq("bulk-a"), f.uniq("bulk-b")} {
			if resp, body := f.do(t, "POST", "/v0/workspaces", creator, `{"name":"`+ws+`"}`); resp.StatusCode != 200 {
				t.Fatalf("create %s: %d %s", ws, resp.StatusCode, body)
			}
			if _, err := storetest.AddMember(ctx, st, ws, "test", storetest.NewMember{Sub: f.uniq("u-plain"), Email: "plain@example.com", Role: store.RoleMember}); err != nil {
				t.Fatal(err)
			}
			h := with(f.workspaceToken(f.uniq("u-boss"), "boss@corp.test"), "X-Blaxel-Workspace", ws)
			if resp, body := f.do(t, "PUT", "/v0/workspaces/"+ws+"/email-domains", h, `{"deny":["blocked.test"]}`); resp.StatusCode != 200 {
				t.Fatalf("policy %s: %d %s", ws, resp.StatusCode, body)
			}
			if a := f.inviteOne(t, h, "pending@example.com"); a.status != 200 {
				t.Fatalf("setup invite in %s: %+v", ws, a)
			}
		}
		emails := []string{"fresh@example.com", "not-an-email", "Fresh@Example.com", "plain@example.com", "x@blocked.test",
			"x@sub.blocked.test", "pending@example.com", "user@localhost", "boss@corp.test", " spaced@example.com"}
		for i := range 20 {
			emails = append(emails, fmt.Sprintf("many%d@example.com", i))
		}
		body, err := json.Marshal(gen.BulkInviteRequest{Emails: emails})
		if err != nil {
			t.Fatal(err)
		}
		rows := f.bulkInvite(t, with(f.workspaceToken(f.uniq("u-boss"), "boss@corp.test"), "X-Blaxel-Workspace", f.uniq("bulk-a")), string(body))
		if len(rows) != len(emails) {
			t.Fatalf("%d rows answered for %d sent", len(rows), len(emails))
		}
		seen := map[string]bool{}
		hb := with(f.workspaceToken(f.uniq("u-boss"), "boss@corp.test"), "X-Blaxel-Workspace", f.uniq("bulk-b"))
		for i, email := range emails {
			row := rows[i]
			if row.Email != email {
				t.Errorf("row %d: email %q, want %q (rows in input order)", i, row.Email, email)
			}
			normal := strings.ToLower(email)
			if seen[normal] {
				// A repeat is reported, not invited again.
				if row.Status != 400 || row.Error == nil || row.Error.Error != "duplicate_email" {
					t.Errorf("row %d %q repeated: %+v, want 400 duplicate_email", i, email, row)
				}
				continue
			}
			seen[normal] = true
			single := f.inviteOne(t, hb, email)
			if row.Status != single.status {
				t.Errorf("row %d %q: status %d, single invite %d", i, email, row.Status, single.status)
				continue
			}
			if single.invitation == nil {
				if row.Error == nil || row.Error.Error != single.kind || row.Invitation != nil {
					t.Errorf("row %d %q: %+v, single invite's kind %s", i, email, row, single.kind)
				}
				continue
			}
			got, want := row.Invitation, single.invitation
			if got == nil || row.Error != nil {
				t.Errorf("row %d %q: no invitation: %+v", i, email, row)
				continue
			}
			if deref(got.Email) != deref(want.Email) || deref(got.Role) != deref(want.Role) || deref(got.InvitedBy) != deref(want.InvitedBy) ||
				deref(got.Workspace) != f.uniq("bulk-a") || deref(want.Workspace) != f.uniq("bulk-b") {
				t.Errorf("row %d %q: invitation %+v, single %+v", i, email, got, want)
			}
		}
		// The rows refused wrote nothing: one pending invitation per
		// distinct email invited in each workspace.
		for _, ws := range []string{f.uniq("bulk-a"), f.uniq("bulk-b")} {
			m, err := st.Membership(ctx, ws, f.uniq("u-boss"))
			if err != nil {
				t.Fatal(err)
			}
			for _, email := range []string{"x@blocked.test", "plain@example.com"} {
				if _, err := storetest.PendingInvitation(ctx, st, m.Workspace.Name, email); err == nil {
					t.Errorf("%s: a refused row left an invitation for %s", ws, email)
				}
			}
		}
	})
}

// TestBulkInvite_RateLimitedRows: rows over the workspace's invitation
// quota are answered 429 one by one, as single invites over it would be;
// the rows before them are invited.
func TestBulkInvite_RateLimitedRows(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "sqlite", "--rate-limit-workspace-invites", "3/h")
	admin := f.bearer(f.userToken(f.adminSub, f.adminEmail))
	rows := f.bulkInvite(t, admin, `{"emails":["r1@example.com","r2@example.com","bad","r3@example.com","r4@example.com","r5@example.com"]}`)
	want := []int{200, 200, 400, 200, 429, 429}
	for i, row := range rows {
		if row.Status != want[i] {
			t.Errorf("row %d: %d, want %d", i, row.Status, want[i])
		}
		if row.Status == 429 && (row.Error == nil || row.Error.Error != "too_many_requests") {
			t.Errorf("row %d: %+v, want too_many_requests", i, row.Error)
		}
	}
	if a := f.inviteOne(t, admin, "single@example.com"); a.status != 429 {
		t.Errorf("a single invite after the quota was spent by bulk rows: %d, want 429", a.status)
	}
}

// TestBulkInvite_Errors: the answers for the whole request.
func TestBulkInvite_Errors(t *testing.T) {
	t.Parallel()
	parallelDialects(t, func(t *testing.T, dialect string) {
		f := newTenant(t, dialect)
		admin := f.bearer(f.userToken(f.adminSub, f.adminEmail))
		tooMany := make([]string, store.MaxBulkInvites+1)
		for i := range tooMany {
			tooMany[i] = fmt.Sprintf("u%d@x.test", i)
		}
		tooManyBody, err := json.Marshal(gen.BulkInviteRequest{Emails: tooMany})
		if err != nil {
			t.Fatal(err)
		}
		huge := `{"emails":["` + strings.Repeat("a", 71000) + `@x.test"]}`
		f.checkBadInputs(t, []badInput{
			{"NoEmails", "POST", "/v0/users/bulk", admin, `{}`, 400},
			{"Empty", "POST", "/v0/users/bulk", admin, `{"emails":[]}`, 400},
			{"TooMany", "POST", "/v0/users/bulk", admin, string(tooManyBody), 400},
			{"BadRole", "POST", "/v0/users/bulk", admin, `{"emails":["a@x.test"],"role":"owner"}`, 400},
			{"NoCredentials", "POST", "/v0/users/bulk", with(admin, "Authorization", ""), `{"emails":["a@x.test"]}`, 401},
			{"Member", "POST", "/v0/users/bulk", f.bearer(f.userToken(f.memberSub, f.memberEmail)), `{"emails":["a@x.test"]}`, 403},
			{"NoScope", "POST", "/v0/users/bulk", f.bearer(f.token(f.adminSub, f.adminEmail, "workspaces:list")), `{"emails":["a@x.test"]}`, 403},
			{"OtherWorkspace", "POST", "/v0/users/bulk", f.bearer(f.otherKey), `{"emails":["a@x.test"]}`, 404},
			{"TooLarge", "POST", "/v0/users/bulk", admin, huge, 413},
			{"NotJSON", "POST", "/v0/users/bulk", with(admin, "Content-Type", "text/plain"), `emails`, 415},
		})
		// The whole request is over the caller's quota: 429.
		g := newFixture(t, dialect, "--rate-limit-caller", "1/h")
		h := g.bearer(g.userToken(g.adminSub, g.adminEmail))
		if resp, body := g.do(t, "POST", "/v0/users/bulk", h, `{"emails":["q1@x.test"]}`); resp.StatusCode != 200 {
			t.Fatalf("first: %d %s", resp.StatusCode, body)
		}
		if resp, body := g.do(t, "POST", "/v0/users/bulk", h, `{"emails":["q2@x.test"]}`); resp.StatusCode != 429 {
			t.Errorf("over the caller quota: %d %s, want 429", resp.StatusCode, body)
		}
	})
}
