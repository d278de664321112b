package e2e_test

// Mistakes an operator or a developer makes with the CLI get an error that
// names the flag or value at fault and what to do, instead of silence or a
// bare refusal.

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// failCLI runs a command that must fail and returns its stderr.
func failCLI(t *testing.T, args ...string) string {
	t.Helper()
	r := runCLI(t, args...)
	if r.code == 0 {
		t.Fatalf("%v: exit 0, want an error (stdout %q)", args, r.stdout)
	}
	return r.stderr
}

func wantIn(t *testing.T, what, got string, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(got, w) {
			t.Errorf("%s: %q does not say %q", what, got, w)
		}
	}
}

func TestCLIErrors_UnknownFlagPointsAtHelp(t *testing.T) {
	wantIn(t, "serve --bogus", failCLI(t, "serve", "--bogus"), "unknown flag --bogus", "controlplane serve --help")
	// Parsed after the positional NAME, by the command itself.
	wantIn(t, "workspace create acme --bogus", failCLI(t, "workspace", "create", "acme", "--bogus", "--data-dir", t.TempDir()),
		"unknown flag --bogus", "controlplane workspace create --help")
	wantIn(t, "token --ttl soon", failCLI(t, "token", "--ttl", "soon"), "--ttl", "controlplane token --help")
}

func TestCLIErrors_MistypedDatabaseURL(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir) // a DSN taken for a path would be created here
	for _, db := range []string{"postgres//127.0.0.1/test", "postgresql:/127.0.0.1/test", "127.0.0.1:5432/test", "postgres"} {
		wantIn(t, "--db "+db, failCLI(t, "migrate", "--db", db, "--data-dir", dir), "mistyped URL", "postgres://")
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("files created for a refused --db: %v", entries)
	}
	// The SQLite forms still work.
	mustCLI(t, "migrate", "--db", "sqlite:"+filepath.Join(dir, "a.db"))
	mustCLI(t, "migrate", "--db", filepath.Join(dir, "b.db"))
}

func TestCLIErrors_TokenNeedsScope(t *testing.T) {
	dir := t.TempDir()
	wantIn(t, "token without --scope", failCLI(t, "token", "--data-dir", dir, "--sub", "alice"), "--scope is required", "--scope admin")
	if tok := mustCLI(t, "token", "--data-dir", dir, "--sub", "alice", "--scope", "admin"); strings.Count(tok, ".") != 2 {
		t.Errorf("token --scope admin printed %q, want a JWT", tok)
	}
}

func TestCLIErrors_TokenFromAnotherDataDir(t *testing.T) {
	f := newTenant(t, "sqlite")
	tok := mustCLI(t, "token", "--data-dir", t.TempDir(), "--sub", f.adminSub, "--scope", "workspaces:list")
	resp, body := f.do(t, "GET", "/v0/workspaces", f.bearer(tok), "")
	if resp.StatusCode != 401 {
		t.Fatalf("token of another data dir: got %d %s, want 401", resp.StatusCode, body)
	}
	wantIn(t, "401 body", string(body), "signature not verifiable", "--data-dir")
}

func TestCLIErrors_LocalEmailDomainNamesTheFlag(t *testing.T) {
	e := newEnv(t, "sqlite")
	stderr := failCLI(t, e.args("workspace", "create", "acme", "--admin-sub", "z", "--admin-email", "z@localhost")...)
	wantIn(t, "z@localhost", stderr, "--allow-local-email-domains")
	mustCLI(t, e.args("workspace", "create", "acme", "--admin-sub", "z", "--admin-email", "z@localhost", "--allow-local-email-domains")...)
}

func TestCLIErrors_LoopbackWebhookNamesTheFlag(t *testing.T) {
	f := newTenant(t, "sqlite")
	h := f.bearer(f.auditToken(f.adminSub, f.adminEmail))
	for _, url := range []string{"http://127.0.0.1:9/hook", "https://127.0.0.1:9/hook", "http://[::1]:9/hook", "https://localhost/hook"} {
		resp, body := f.do(t, "POST", "/v0/webhooks", h, `{"url":"`+url+`"}`)
		if resp.StatusCode != 400 {
			t.Errorf("%s: got %d %s, want 400", url, resp.StatusCode, body)
			continue
		}
		wantIn(t, url, string(body), "--webhooks-allow-loopback")
	}
}

func TestCLIErrors_ServeAddressCheckedFirst(t *testing.T) {
	var lc net.ListenConfig
	busy, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	dir := t.TempDir()
	db := filepath.Join(dir, "controlplane.db")
	stderr := failCLI(t, "serve", "--addr", busy.Addr().String(), "--data-dir", dir, "--db", db)
	wantIn(t, "busy port", stderr, "is another server running?")
	if _, err := os.Stat(db); err == nil {
		t.Errorf("serve created (migrated) the database before finding its port busy")
	}
	stderr = failCLI(t, "serve", "--addr", "127.0.0.1:99999", "--data-dir", dir, "--db", db)
	wantIn(t, "port 99999", stderr, "invalid address")
	if strings.Contains(stderr, "another server") {
		t.Errorf("port 99999: %q suggests another server", stderr)
	}
}
