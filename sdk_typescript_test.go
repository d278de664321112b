package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"controlplane/store/storetest"
)

// TestSDK_TypeScript: Blaxel's official TypeScript SDK (@blaxel/core,
// pinned in testdata/sdk-typescript) works against this server unchanged,
// configured as its users configure it (BL_API_URL, BL_WORKSPACE,
// BL_API_KEY), for every membership operation it has: invite, list, update
// role, remove (with an API key), leave (with a person's token), and a bad
// invite whose Error body it reads. testdata/sdk-typescript/check.mjs makes
// the calls and checks each answer. Needs Node.js and npm and the npm
// registry (npm ci); skipped without node unless CI=true.
func TestSDK_TypeScript(t *testing.T) {
	if testing.Short() {
		t.Skip("installs an npm package (-short)")
	}
	npm, err := exec.LookPath("npm")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("npm not found: .ci/run installs Node.js and npm")
		}
		t.Skip("no npm on PATH: install Node.js and npm to run Blaxel's TypeScript SDK against the server")
	}
	dir := t.TempDir()
	for _, name := range []string{"package.json", "package-lock.json", "check.mjs"} {
		raw, err := os.ReadFile(filepath.Join("testdata", "sdk-typescript", name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), raw, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	install := exec.CommandContext(ctx, npm, "ci", "--no-audit", "--no-fund")
	install.Dir = dir
	if out, err := install.CombinedOutput(); err != nil {
		t.Fatalf("npm ci: %v\n%s", err, out)
	}

	f := newFixture(t, "sqlite", "--mail-dispatcher=false")
	node := func(credential, mode string) string {
		t.Helper()
		cmd := exec.CommandContext(ctx, "node", "check.mjs", mode)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "BL_API_URL="+f.srv.URL+"/v0", "BL_WORKSPACE=acme",
			"BL_API_KEY="+credential, "SDK_INVITEE=sdk-user@example.com")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("the SDK (%s): %v\n%s", mode, err, out)
		}
		return string(out)
	}
	out := node(f.adminKey, "admin")
	for _, op := range []string{"inviteWorkspaceUser", "listWorkspaceUsers", "updateWorkspaceUserRole", "removeWorkspaceUser", `"error":"invalid_email"`} {
		if !strings.Contains(out, op) {
			t.Errorf("the SDK's output lacks %s:\n%s", op, out)
		}
	}
	node(f.userToken("u-member", "member@acme.test"), "leave")
	rows, err := storetest.CountRows(context.Background(), f.store())
	if err != nil {
		t.Fatal(err)
	}
	// The fixture has acme's admin and member and other's admin.
	if rows["members"] != 2 {
		t.Errorf("after the member left through the SDK: %d members, want 2 (the two admins)", rows["members"])
	}
}
