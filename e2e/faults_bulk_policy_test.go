package e2e_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
)

// TestFaults_BulkAndDomainPolicy: as TestFaults_BrokenDatabase, for the bulk
// invite and the email-domain policy: with the tables gone behind the
// server's back, each answers the spec's 500 without the database's words.
func TestFaults_BulkAndDomainPolicy(t *testing.T) {
	t.Parallel()
	parallelDialects(t, func(t *testing.T, dialect string) {
		f := newFixture(t, dialect) // its own database: the test drops tables
		admin := f.workspaceToken(f.adminSub, f.adminEmail)
		drop := "DROP TABLE %s"
		if dialect == "postgres" {
			drop = "DROP TABLE %s CASCADE"
		}
		for name, db := range f.store().DBs() {
			if name == "sqlite_read" {
				continue
			}
			for _, table := range []string{"email_domain_rules", "idempotency_keys", "outbox_messages", "api_keys", "invitations", "members", "workspaces"} {
				if _, err := db.ExecContext(context.Background(), strings.Replace(drop, "%s", table, 1)); err != nil {
					t.Fatalf("drop %s: %v", table, err)
				}
			}
			break
		}
		for _, tc := range []struct{ name, method, path, body string }{
			{"BulkInviteWorkspaceUsers", "POST", "/v0/users/bulk", `{"emails":["a@example.com"]}`},
			{"GetEmailDomainPolicy", "GET", "/v0/workspaces/" + f.ws + "/email-domains", ""},
			{"SetEmailDomainPolicy", "PUT", "/v0/workspaces/" + f.ws + "/email-domains", `{"deny":["x.test"]}`},
		} {
			t.Run(tc.name, func(t *testing.T) {
				resp, body := f.do(t, tc.method, tc.path, admin, tc.body)
				if resp.StatusCode != http.StatusInternalServerError {
					t.Errorf("got %d %s, want 500", resp.StatusCode, body)
				}
				if strings.Contains(string(body), "no such table") || strings.Contains(string(body), "does not exist") {
					t.Errorf("the database's own error reached the client: %s", body)
				}
			})
		}
	})
}
