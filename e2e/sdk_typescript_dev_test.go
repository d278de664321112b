package e2e_test

import (
	"context"
	"os"
	"os/exec"
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
	dir := installSDK(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
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
