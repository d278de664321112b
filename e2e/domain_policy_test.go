package e2e_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/membership-api/controlplane/gen"
	"github.com/membership-api/controlplane/store/storetest"
)

// TestDomainPolicy_EndToEnd: an admin sets the policy, any member reads
// it, single and bulk invites are refused with 403 domain_not_allowed
// (subdomains covered, deny wins), and clearing it lifts the refusal.
func TestDomainPolicy_EndToEnd(t *testing.T) {
	t.Parallel()
	parallelDialects(t, func(t *testing.T, dialect string) {
		f := newTenant(t, dialect)
		admin := f.workspaceToken(f.adminSub, f.adminEmail)
		member := f.workspaceToken(f.memberSub, f.memberEmail)

		resp, body := f.do(t, "GET", "/v0/workspaces/"+f.ws+"/email-domains", member, "")
		if resp.StatusCode != 200 || string(body) != `{"allow":[],"deny":[]}`+"\n" {
			t.Errorf("no policy yet: %d %s", resp.StatusCode, body)
		}
		resp, body = f.do(t, "PUT", "/v0/workspaces/"+f.ws+"/email-domains", admin, `{"allow":["Example.com","*.corp.test","example.com"],"deny":["ext.example.com"]}`)
		if resp.StatusCode != 200 || string(body) != `{"allow":["corp.test","example.com"],"deny":["ext.example.com"]}`+"\n" {
			t.Fatalf("set: %d %s", resp.StatusCode, body)
		}
		if resp, got := f.do(t, "GET", "/v0/workspaces/"+f.ws+"/email-domains", f.bearer(f.memberKey), ""); resp.StatusCode != 200 || string(got) != string(body) {
			t.Errorf("read back by a member's API key: %d %s, want %s", resp.StatusCode, got, body)
		}

		invite := f.bearer(f.userToken(f.adminSub, f.adminEmail))
		for email, allowed := range map[string]bool{"a@example.com": true, "a@eu.example.com": true, "a@corp.test": true,
			"a@ext.example.com": false, "a@x.ext.example.com": false, "a@gmail.com": false, "a@myexample.com": false} {
			a := f.inviteOne(t, invite, email)
			if allowed && a.status != 200 || !allowed && (a.status != 403 || a.kind != "domain_not_allowed") {
				t.Errorf("%s: %+v, want allowed=%v", email, a, allowed)
			}
		}
		rows := f.bulkInvite(t, invite, `{"emails":["b@example.com","b@gmail.com","b@x.ext.example.com"]}`)
		for i, want := range []int{200, 403, 403} {
			if rows[i].Status != want || (want == 403 && rows[i].Error.Error != "domain_not_allowed") {
				t.Errorf("bulk row %d: %+v, want %d", i, rows[i], want)
			}
		}
		// Refused invites wrote nothing.
		f.checkBadInputs(t, []badInput{{"Refused", "POST", "/v0/users", invite, `{"email":"c@gmail.com"}`, 403}})

		if resp, body := f.do(t, "PUT", "/v0/workspaces/"+f.ws+"/email-domains", admin, `{}`); resp.StatusCode != 200 || string(body) != `{"allow":[],"deny":[]}`+"\n" {
			t.Errorf("clear: %d %s", resp.StatusCode, body)
		}
		if a := f.inviteOne(t, invite, "c@gmail.com"); a.status != 200 {
			t.Errorf("after clearing: %+v", a)
		}
	})
}

// TestDomainPolicy_Errors: who may read and change it, and what is refused.
func TestDomainPolicy_Errors(t *testing.T) {
	t.Parallel()
	parallelDialects(t, func(t *testing.T, dialect string) {
		f := newTenant(t, dialect)
		admin := f.workspaceToken(f.adminSub, f.adminEmail)
		member := f.workspaceToken(f.memberSub, f.memberEmail)
		path := "/v0/workspaces/" + f.ws + "/email-domains"
		tooMany := make([]string, 101)
		for i := range tooMany {
			tooMany[i] = fmt.Sprintf("d%d.test", i)
		}
		tooManyBody, err := json.Marshal(gen.EmailDomainPolicy{Deny: &tooMany})
		if err != nil {
			t.Fatal(err)
		}
		f.checkBadInputs(t, []badInput{
			{"NotADomain", "PUT", path, admin, `{"allow":["not a domain"]}`, 400},
			{"Percent", "PUT", path, admin, `{"deny":["%.com"]}`, 400},
			{"OnBoth", "PUT", path, admin, `{"allow":["x.test"],"deny":["X.test"]}`, 400},
			{"TooMany", "PUT", path, admin, string(tooManyBody), 400},
			{"NotAList", "PUT", path, admin, `{"allow":"x.test"}`, 400},
			{"AmbiguousGet", "GET", path, with(admin, "X-Blaxel-Authorization", "Bearer "+f.memberKey), "", 400},
			{"NoCredentialsGet", "GET", path, with(admin, "Authorization", ""), "", 401},
			{"NoCredentialsPut", "PUT", path, with(admin, "Authorization", ""), `{}`, 401},
			{"MemberPut", "PUT", path, member, `{"deny":["x.test"]}`, 403},
			{"NoScopeGet", "GET", path, f.bearer(f.token(f.adminSub, f.adminEmail, "workspaces:list")), "", 403},
			{"NoScopePut", "PUT", path, f.bearer(f.token(f.adminSub, f.adminEmail, "workspaces:get")), `{}`, 403},
			{"OtherWorkspaceGet", "GET", "/v0/workspaces/" + f.otherWS + "/email-domains", admin, "", 404},
			{"OtherWorkspacePut", "PUT", "/v0/workspaces/" + f.otherWS + "/email-domains", admin, `{}`, 404},
			{"KeyOfOtherWorkspace", "GET", path, f.bearer(f.otherKey), "", 404},
			{"TooLarge", "PUT", path, admin, `{"allow":["` + strings.Repeat("a", 70000) + `"]}`, 413},
			{"NotJSON", "PUT", path, with(admin, "Content-Type", "text/plain"), `x`, 415},
		})
		g := newFixture(t, dialect, "--rate-limit-caller", "1/h")
		h := g.workspaceToken(g.adminSub, g.adminEmail)
		gPath := "/v0/workspaces/" + g.ws + "/email-domains"
		for _, m := range []string{"GET", "PUT"} {
			body := ""
			if m == "PUT" {
				body = `{}`
			}
			g.do(t, m, gPath, h, body) // spends the hour's one request, or is refused
			if resp, got := g.do(t, m, gPath, h, body); resp.StatusCode != 429 {
				t.Errorf("%s over the caller quota: %d %s, want 429", m, resp.StatusCode, got)
			}
		}
	})
}

// TestDomainPolicy_RaceWithInvites: single and bulk invites racing an admin
// who denies their domain: every answer is what the database holds (a 200
// has its pending invitation, a 403 domain_not_allowed has none), and after
// the change every invite of the domain is refused.
func TestDomainPolicy_RaceWithInvites(t *testing.T) {
	t.Parallel()
	parallelDialects(t, func(t *testing.T, dialect string) {
		f := newFixture(t, dialect, "--rate-limits=false") // many requests at once: not a rate-limit test
		ctx := context.Background()
		st := f.store()
		m, err := st.Membership(ctx, f.ws, f.adminSub)
		if err != nil {
			t.Fatal(err)
		}
		ws := m.Workspace
		admin := f.workspaceToken(f.adminSub, f.adminEmail)
		invite := f.bearer(f.userToken(f.adminSub, f.adminEmail))
		for round := range 5 {
			if resp, body := f.do(t, "PUT", "/v0/workspaces/"+f.ws+"/email-domains", admin, `{}`); resp.StatusCode != 200 {
				t.Fatalf("clear: %d %s", resp.StatusCode, body)
			}
			const n = 12
			answers := make(map[string]int)
			var mu sync.Mutex
			var wg sync.WaitGroup
			for i := range n {
				wg.Go(func() {
					email := fmt.Sprintf("s%d-%d@race.test", round, i)
					a := f.inviteOne(t, invite, email)
					mu.Lock()
					answers[email] = a.status
					mu.Unlock()
				})
				wg.Go(func() {
					email := fmt.Sprintf("b%d-%d@race.test", round, i)
					rows := f.bulkInvite(t, invite, `{"emails":["`+email+`"]}`)
					mu.Lock()
					answers[email] = rows[0].Status
					mu.Unlock()
				})
			}
			wg.Go(func() {
				if resp, body := f.do(t, "PUT", "/v0/workspaces/"+f.ws+"/email-domains", admin, `{"deny":["race.test"]}`); resp.StatusCode != 200 {
					t.Errorf("deny: %d %s", resp.StatusCode, body)
				}
			})
			wg.Wait()
			for email, status := range answers {
				_, lookup := storetest.PendingInvitation(ctx, st, ws.Name, email)
				if status == 200 && lookup != nil || status == 403 && lookup == nil || status != 200 && status != 403 {
					t.Errorf("%s: answered %d, pending invitation lookup: %v", email, status, lookup)
				}
			}
			if a := f.inviteOne(t, invite, fmt.Sprintf("after%d@race.test", round)); a.status != 403 {
				t.Errorf("after the change: %+v, want 403", a)
			}
		}
	})
}
