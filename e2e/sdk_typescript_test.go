package e2e_test

import (
	"context"
	"encoding/base64"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestSDK_TypeScript: Blaxel's official TypeScript SDK (@blaxel/core,
// pinned in testdata/sdk-typescript) works against this server unchanged,
// configured as its users configure it (BL_API_URL, BL_WORKSPACE,
// BL_API_KEY), for every membership operation it has: invite, list, update
// role, remove (with an API key), leave (with a person's token), and a bad
// invite whose Error body it reads; and with BL_CLIENT_CREDENTIALS (a
// service account's, OAuth client credentials through /v0/oauth/token) it
// lists the workspace's users, and reads invalid_client when they are wrong. testdata/sdk-typescript/check.mjs makes
// the calls and checks each answer. Needs Node.js and npm and the npm
// registry (npm ci); skipped without node unless CI=true.
func TestSDK_TypeScript(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("installs an npm package (-short)")
	}
	dir := installSDK(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	f := newFixture(t, "sqlite", "--mail-dispatcher=false")
	node := func(credential, mode string) string {
		t.Helper()
		return runSDK(ctx, t, dir, mode, "BL_API_URL="+f.srv.URL+"/v0", "BL_WORKSPACE="+f.ws,
			"BL_API_KEY="+credential, "SDK_INVITEE=sdk-user@example.com")
	}
	out := node(f.adminKey, "admin")
	for _, op := range []string{"inviteWorkspaceUser", "listWorkspaceUsers", "updateWorkspaceUserRole", "removeWorkspaceUser", `"error":"invalid_email"`} {
		if !strings.Contains(out, op) {
			t.Errorf("the SDK's output lacks %s:\n%s", op, out)
		}
	}
	// OAuth client credentials: a service account's, as BL_CLIENT_CREDENTIALS
	// (base64 of client_id:client_secret), no API key.
	sa := f.oauthClient(t, "sdk", "member")
	credentials := func(sa serviceAccount) string {
		return "BL_CLIENT_CREDENTIALS=" + base64.StdEncoding.EncodeToString([]byte(sa.clientID+":"+sa.secret))
	}
	out = runSDK(ctx, t, dir, "client-credentials", "BL_API_URL="+f.srv.URL+"/v0", "BL_WORKSPACE="+f.ws,
		credentials(sa), "SDK_EXPECT_EMAIL="+f.memberEmail)
	if !strings.Contains(out, `"op":"listWorkspaceUsers (client credentials)","status":200`) {
		t.Errorf("the SDK's output with client credentials:\n%s", out)
	}
	// One token for both calls: the SDK reuses it until half of exp − iat
	// has passed, which needs both claims (it asks on every call without).
	if n := strings.Count(f.srv.logs.String(), "operation=OauthToken"); n != 1 {
		t.Errorf("the SDK asked for %d tokens for two calls, want 1", n)
	}
	out = runSDK(ctx, t, dir, "client-credentials-refused", "BL_API_URL="+f.srv.URL+"/v0", "BL_WORKSPACE="+f.ws,
		credentials(serviceAccount{clientID: sa.clientID, secret: "bls_wrong"}))
	if !strings.Contains(out, `"thrown":"invalid_client"`) {
		t.Errorf("the SDK's output with wrong client credentials:\n%s", out)
	}
	node(f.userToken(f.memberSub, f.memberEmail), "leave")
	rows := f.countRows(t)
	// The fixture has acme's admin and member and other's admin, and the
	// service account's member row.
	if rows["members"] != 3 {
		t.Errorf("after the member left through the SDK: %d members, want 3 (the two admins, the service account)", rows["members"])
	}
}

// runSDK runs check.mjs in mode with env added to this process's (with no
// Blaxel credentials of its own: only those given count).
func runSDK(ctx context.Context, t *testing.T, dir, mode string, env ...string) string {
	t.Helper()
	cmd := exec.CommandContext(ctx, "node", "check.mjs", mode)
	cmd.Dir = dir
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "BL_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	// HOME without ~/.blaxel/config.yaml: the SDK would read credentials there.
	cmd.Env = append(append(cmd.Env, "HOME="+t.TempDir()), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("the SDK (%s): %v\n%s", mode, err, out)
	}
	return string(out)
}

// sdkInstall is the one `npm ci` of testdata/sdk-typescript that every
// TypeScript test runs its scripts in (the install is most of their time).
var sdkInstall struct {
	once sync.Once
	dir  string
	err  error
}

// installSDK returns a directory holding testdata/sdk-typescript with its
// packages installed (npm ci, once per test binary; TestMain removes the
// directory when the tests end). It skips without npm, and fails without it under
// CI=true.
func installSDK(t *testing.T) string {
	t.Helper()
	npm, err := exec.LookPath("npm")
	if err != nil {
		skipUnlessCI(t, "no npm on PATH: install Node.js and npm to run Blaxel's TypeScript SDK against the server")
	}
	sdkInstall.once.Do(func() {
		sdkInstall.dir, sdkInstall.err = npmCI(npm)
	})
	if sdkInstall.err != nil {
		t.Fatal(sdkInstall.err)
	}
	return sdkInstall.dir
}

func npmCI(npm string) (string, error) {
	dir, err := os.MkdirTemp("", "sdk-typescript-")
	if err != nil {
		return "", err
	}
	entries, err := os.ReadDir(filepath.Join("testdata", "sdk-typescript"))
	if err != nil {
		return dir, err
	}
	for _, e := range entries {
		if e.IsDir() {
			continue
		}
		raw, err := os.ReadFile(filepath.Join("testdata", "sdk-typescript", e.Name()))
		if err != nil {
			return dir, err
		}
		if err := os.WriteFile(filepath.Join(dir, e.Name()), raw, 0o644); err != nil { //nolint:gosec // G306: test scripts, read by node
			return dir, err
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	install := exec.CommandContext(ctx, npm, "ci", "--no-audit", "--no-fund")
	install.Dir = dir
	if out, err := install.CombinedOutput(); err != nil {
		return dir, fmt.Errorf("npm ci: %w\n%s", err, out)
	}
	return dir, nil
}
