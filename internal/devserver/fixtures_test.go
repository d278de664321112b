package devserver_test

import (
	"strings"
	"testing"
	"time"

	"github.com/membership-api/controlplane/internal/devserver"
	"github.com/membership-api/controlplane/store"
)

// TestParseFixtures: the YAML form reaches every field, and each refusal
// names the line of the item or key at fault.
func TestParseFixtures(t *testing.T) {
	t.Parallel()
	good := `workspaces:
  - name: acme
    admin: {sub: alice, email: alice@acme.test}
    invitations:
      - {email: carol@example.com, expiresIn: 2d}
    serviceAccounts:
      - name: ci
        clientId: sa_ci_fixture_01
        clientSecret: bls_ci_fixture_secret_01
        apiKeys: [{key: bl_ci_fixture_key_000001}]
`
	f, err := devserver.ParseFixtures([]byte(good), store.EmailOptions{})
	if err != nil {
		t.Fatal(err)
	}
	w := f.Workspaces[0]
	if w.Line != 2 || w.Admin.Sub != "alice" || w.Invitations[0].TTL != 48*time.Hour || w.Invitations[0].Line != 5 ||
		w.ServiceAccounts[0].APIKeys[0].Key != "bl_ci_fixture_key_000001" {
		t.Fatalf("parsed %+v", w)
	}
	for _, c := range []struct{ name, yaml, want string }{
		{"unknown top key", "workspace: []\n", `line 1: unknown key "workspace"`},
		{"nested unknown key", strings.Replace(good, "clientSecret:", "secret:", 1), `line 9: unknown key "secret"`},
		{"not a list", "workspaces: acme\n", "line 1: expected a list"},
		{"no admin", "workspaces:\n  - name: acme\n", `line 2: workspace "acme" needs an admin`},
		{"bad expiry", strings.Replace(good, "2d", "2 days", 1), "line 5: "},
		{"service account key with a sub", strings.Replace(good, "[{key:", "[{sub: alice, key:", 1), `line 10: unknown key "sub"`},
		{"not YAML", "workspaces: [\n", "yaml:"},
	} {
		if _, err := devserver.ParseFixtures([]byte(c.yaml), store.EmailOptions{}); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want %q", c.name, err, c.want)
		}
	}
}
