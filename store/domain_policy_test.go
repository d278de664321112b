package store_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/membership-api/controlplane/store"
	"github.com/membership-api/controlplane/store/storetest"
)

// TestDomainPolicy_Invite: a policy decides single and batched invites
// alike, in the batch statement and on the slow path: subdomains are
// covered, deny wins over allow, an empty allowlist allows what is not
// denied, and a refused invite writes nothing.
func TestDomainPolicy_Invite(t *testing.T) {
	eachDialect(t, func(t *testing.T, st *store.Store, _ *clock) {
		ctx := context.Background()
		mustWorkspace(t, st, "acme")
		got, err := st.SetDomainPolicy(ctx, "acme", "admin-acme", store.EmailDomainPolicy{
			Allow: []string{"Example.COM", " *.corp.test", "@example.com"}, Deny: []string{"contractors.example.com"}})
		if err != nil {
			t.Fatal(err)
		}
		if want := []string{"corp.test", "example.com"}; !slices.Equal(got.Allow, want) {
			t.Errorf("allow stored as %v, want %v", got.Allow, want)
		}
		cases := []struct {
			email   string
			allowed bool
		}{
			{"a@example.com", true},
			{"b@eu.example.com", true},
			{"c@x.contractors.example.com", false}, // deny wins
			{"d@contractors.example.com", false},
			{"e@notexample.com", false}, // a suffix that is not a subdomain
			{"f@example.com.evil.test", false},
			{"g@corp.test", true},
			{"h@other.test", false},
		}
		// Once alone (each invite its own batch or the slow path), once all
		// at once (shared batches): the same answers.
		for _, together := range []bool{false, true} {
			t.Run(fmt.Sprintf("together=%v", together), func(t *testing.T) {
				errs := make([]error, len(cases))
				var wg sync.WaitGroup
				for i, tc := range cases {
					invite := func() {
						_, errs[i] = st.Invite(ctx, store.InviteParams{Workspace: "acme", Caller: "admin-acme", Email: tc.email, TTL: time.Hour})
					}
					if together {
						wg.Go(invite)
					} else {
						invite()
					}
				}
				wg.Wait()
				for i, tc := range cases {
					var se *store.Error
					switch {
					case tc.allowed && errs[i] != nil:
						t.Errorf("%s: %v, want invited", tc.email, errs[i])
					case !tc.allowed && (!errors.As(errs[i], &se) || se.Code != store.CodeDomainNotAllowed || !errors.Is(errs[i], store.ErrForbidden)):
						t.Errorf("%s: got %v, want domain_not_allowed", tc.email, errs[i])
					}
				}
			})
		}
		ws, err := st.WorkspaceForTest(ctx, "acme")
		if err != nil {
			t.Fatal(err)
		}
		for _, tc := range cases {
			_, err := storetest.PendingInvitation(ctx, st, ws.Name, tc.email)
			if tc.allowed != (err == nil) {
				t.Errorf("%s: pending invitation lookup %v, want present=%v", tc.email, err, tc.allowed)
			}
		}

		// The policy is checked before membership.
		if _, err := storetest.AddMember(ctx, st, "acme", "admin-acme", storetest.NewMember{Sub: "m-other", Email: "m@other.test", Role: store.RoleMember}); err != nil {
			t.Fatal(err)
		}
		var se *store.Error
		if _, err := st.Invite(ctx, store.InviteParams{Workspace: "acme", Caller: "admin-acme", Email: "m@other.test", TTL: time.Hour}); !errors.As(err, &se) || se.Code != store.CodeDomainNotAllowed {
			t.Errorf("a member's email at a refused domain: %v, want domain_not_allowed", err)
		}

		// Only a denylist: everything else is allowed.
		if _, err := st.SetDomainPolicy(ctx, "acme", "admin-acme", store.EmailDomainPolicy{Deny: []string{"spam.test"}}); err != nil {
			t.Fatal(err)
		}
		if _, err := st.Invite(ctx, store.InviteParams{Workspace: "acme", Caller: "admin-acme", Email: "x@other.test", TTL: time.Hour}); err != nil {
			t.Errorf("denylist only: %v, want invited", err)
		}
		if _, err := st.Invite(ctx, store.InviteParams{Workspace: "acme", Caller: "admin-acme", Email: "x@a.spam.test", TTL: time.Hour}); !errors.Is(err, store.ErrForbidden) {
			t.Errorf("denylist only, denied subdomain: %v, want domain_not_allowed", err)
		}
		// Cleared: anything goes.
		policy, err := st.SetDomainPolicy(ctx, "acme", "admin-acme", store.EmailDomainPolicy{})
		if err != nil || len(policy.Allow)+len(policy.Deny) != 0 {
			t.Fatalf("clear: %v %+v", err, policy)
		}
		if _, err := st.Invite(ctx, store.InviteParams{Workspace: "acme", Caller: "admin-acme", Email: "y@spam.test", TTL: time.Hour}); err != nil {
			t.Errorf("no policy: %v", err)
		}
	})
}

// TestDomainPolicy_Set: who may set it, and what a policy may hold.
func TestDomainPolicy_Set(t *testing.T) {
	eachDialect(t, func(t *testing.T, st *store.Store, _ *clock) {
		ctx := context.Background()
		mustWorkspace(t, st, "acme")
		if _, err := storetest.AddMember(ctx, st, "acme", "admin-acme", storetest.NewMember{Sub: "plain", Email: "plain@example.com", Role: store.RoleMember}); err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct {
			name   string
			by     string
			policy store.EmailDomainPolicy
			want   error
		}{
			{"NotAdmin", "plain", store.EmailDomainPolicy{Allow: []string{"example.com"}}, store.ErrForbidden},
			{"Stranger", "nobody", store.EmailDomainPolicy{Allow: []string{"example.com"}}, store.ErrNotFound},
			{"NotADomain", "admin-acme", store.EmailDomainPolicy{Allow: []string{"exa mple.com"}}, store.ErrInvalid},
			{"Wildcard", "admin-acme", store.EmailDomainPolicy{Deny: []string{"%.com"}}, store.ErrInvalid},
			{"Both", "admin-acme", store.EmailDomainPolicy{Allow: []string{"example.com"}, Deny: []string{"EXAMPLE.com"}}, store.ErrInvalid},
			{"TooMany", "admin-acme", store.EmailDomainPolicy{Deny: manyDomains(store.MaxDomainRules + 1)}, store.ErrInvalid},
		} {
			if _, err := st.SetDomainPolicy(ctx, "acme", tc.by, tc.policy); !errors.Is(err, tc.want) {
				t.Errorf("%s: got %v, want %v", tc.name, err, tc.want)
			}
		}
		policy, err := st.DomainPolicy(ctx, "acme", "plain")
		if err != nil || len(policy.Allow)+len(policy.Deny) != 0 {
			t.Errorf("after refused changes: %+v %v, want an empty policy", policy, err)
		}
		if _, err := st.DomainPolicy(ctx, "acme", "nobody"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("a stranger reads the policy: %v, want not found", err)
		}
	})
}

func manyDomains(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("d%d.test", i)
	}
	return out
}

// TestDomainPolicy_RaceWithInvites: invites racing a policy change that
// denies their domain (10 rounds of 24 invites and one change, on both
// databases): each answer is what the database holds (invited: a pending
// invitation; refused: none, and refused only as domain_not_allowed), and
// once the change has returned the domain is refused.
func TestDomainPolicy_RaceWithInvites(t *testing.T) {
	eachDialect(t, func(t *testing.T, st *store.Store, _ *clock) {
		ctx := context.Background()
		ws := mustWorkspace(t, st, "acme")
		for round := range 10 {
			if _, err := st.SetDomainPolicy(ctx, "acme", "admin-acme", store.EmailDomainPolicy{}); err != nil {
				t.Fatal(err)
			}
			const n = 24
			var wg sync.WaitGroup
			errs := make([]error, n)
			for i := range n {
				wg.Go(func() {
					email := fmt.Sprintf("r%d-%d@blocked.test", round, i)
					_, errs[i] = st.Invite(ctx, store.InviteParams{Workspace: "acme", Caller: "admin-acme", Email: email, TTL: time.Hour})
				})
			}
			wg.Go(func() {
				if _, err := st.SetDomainPolicy(ctx, "acme", "admin-acme", store.EmailDomainPolicy{Deny: []string{"blocked.test"}}); err != nil {
					t.Error(err)
				}
			})
			wg.Wait()
			for i, err := range errs {
				email := fmt.Sprintf("r%d-%d@blocked.test", round, i)
				inv, lookup := storetest.PendingInvitation(ctx, st, ws.Name, email)
				switch {
				case err == nil && lookup != nil:
					t.Errorf("%s: invited, but no pending invitation: %v", email, lookup)
				case err != nil && !errors.Is(err, store.ErrForbidden):
					t.Errorf("%s: %v, want invited or domain_not_allowed", email, err)
				case err != nil && lookup == nil:
					t.Errorf("%s: refused, but an invitation exists: %+v", email, inv)
				}
			}
			if st.Dialect() == "postgres" {
				// Serialisation itself: every invitation written must have
				// committed before the change took the workspace lock. A
				// transaction gets its ID when it first locks or writes a
				// row (the invites' FOR SHARE, the change's FOR UPDATE), so
				// an invitation of the domain written after the change
				// (a check made outside the invite's transaction) would
				// carry a newer ID than the policy's rows.
				var late int
				err := st.DBs()["postgres"].QueryRowContext(ctx, `SELECT count(*) FROM invitations i
WHERE i.workspace_id = $1 AND i.email LIKE $2
  AND i.xmin::text::bigint > (SELECT min(r.xmin::text::bigint) FROM email_domain_rules r WHERE r.workspace_id = $1)`,
					ws.ID, fmt.Sprintf("r%d-%%", round)).Scan(&late)
				if err != nil {
					t.Fatal(err)
				}
				if late > 0 {
					t.Errorf("round %d: %d invitations of the denied domain written after the policy change", round, late)
				}
			}
			// After the change, the domain is refused.
			if _, err := st.Invite(ctx, store.InviteParams{Workspace: "acme", Caller: "admin-acme", Email: fmt.Sprintf("after%d@blocked.test", round), TTL: time.Hour}); !errors.Is(err, store.ErrForbidden) {
				t.Errorf("after the policy: %v, want domain_not_allowed", err)
			}
		}
	})
}

// TestDomainPolicy_BatchStatement: the batch statement alone (no slow path
// behind it) writes exactly the rows the policy allows, so the common case
// stays one statement and a refused email is never written by it.
func TestDomainPolicy_BatchStatement(t *testing.T) {
	eachDialect(t, func(t *testing.T, st *store.Store, _ *clock) {
		ctx := context.Background()
		ws := mustWorkspace(t, st, "acme")
		if _, err := st.SetDomainPolicy(ctx, "acme", "admin-acme", store.EmailDomainPolicy{
			Allow: []string{"example.com"}, Deny: []string{"no.example.com"}}); err != nil {
			t.Fatal(err)
		}
		emails := map[string]bool{"a@example.com": true, "b@sub.example.com": true, "c@no.example.com": false, "d@x.no.example.com": false,
			"e@other.test": false, "f@myexample.com": false}
		var ps []store.InviteParams
		for email := range emails {
			ps = append(ps, store.InviteParams{Workspace: "acme", Caller: "admin-acme", Email: email, TTL: time.Hour})
		}
		if err := st.InviteBatchForTest(ctx, ps); err != nil {
			t.Fatal(err)
		}
		for email, allowed := range emails {
			_, err := storetest.PendingInvitation(ctx, st, ws.Name, email)
			if allowed != (err == nil) {
				t.Errorf("%s: written by the batch = %v, want %v", email, err == nil, allowed)
			}
		}
	})
}
