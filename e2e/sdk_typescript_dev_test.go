package e2e_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestSDK_TypeScriptDevWalk: the invitation walk of docs/api/testing.md in
// TypeScript, against `serve --dev` configured only from what it prints:
// Blaxel's SDK invites and lists (BL_API_URL, BL_WORKSPACE, BL_API_KEY),
// the mailbox, tokens and the clock are read over HTTP
// (testdata/sdk-typescript/dev-walk.mjs). Needs Node.js and npm and the
// npm registry; skipped without npm unless CI=true.
func TestSDK_TypeScriptDevWalk(t *testing.T) {
	t.Parallel()
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
	for _, name := range []string{"package.json", "package-lock.json", "dev-walk.mjs"} {
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
	s := startDev(t)
	var env []string
	for _, name := range []string{"BL_API_URL", "BL_WORKSPACE", "BL_API_KEY", "CONTROLPLANE_DEV_URL"} {
		env = append(env, name+"="+s.vars[name])
	}
	cmd := exec.CommandContext(ctx, "node", "dev-walk.mjs")
	cmd.Dir = dir
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "BL_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(append(cmd.Env, "HOME="+t.TempDir()), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("dev-walk.mjs: %v\n%s\nserver logs:\n%s", err, out, s.logs.String())
	}
	if !strings.Contains(string(out), `"step":"reset","ok":true`) {
		t.Errorf("the walk did not reach its end:\n%s", out)
	}
}
