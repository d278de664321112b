package e2e_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/membership-api/controlplane/gen"
	"github.com/membership-api/controlplane/store"
)

func TestCLI(t *testing.T) {
	parallelDialects(t, func(t *testing.T, dialect string) {
		e := newEnv(t, dialect)
		if r := runCLI(t, e.args("migrate")...); r.code != 0 || !strings.Contains(r.stderr, "schema up to date") {
			t.Fatalf("migrate: %+v", r)
		}
		if got := mustCLI(t, e.args("workspace", "create", "acme", "--admin-sub", "u1", "--admin-email", "a@acme.test", "--display-name", "Acme Inc")...); got != "acme" {
			t.Errorf("workspace create printed %q, want the name", got)
		}
		r := runCLI(t, e.args("workspace", "create", "acme", "--admin-sub", "u1", "--admin-email", "a@acme.test")...)
		if r.code == 0 || !strings.Contains(r.stderr, "already exists") || strings.Count(r.stderr, "\n") != 1 {
			t.Errorf("duplicate workspace: got %+v, want one-line error", r)
		}
		key := mustCLI(t, e.args("apikey", "create", "--workspace", "acme", "--sub", "u1")...)
		if !strings.HasPrefix(key, store.APIKeyPrefix) || strings.ContainsAny(key, " \n") {
			t.Errorf("apikey create printed %q, want the key alone", key)
		}
		tok := mustCLI(t, "token", "--data-dir", e.dataDir, "--sub", "u1", "--email", "a@acme.test", "--scope", "workspaces:invite", "--ttl", "5m")
		if strings.Count(tok, ".") != 2 {
			t.Errorf("token printed %q, want a JWT alone", tok)
		}

		s := e.start()
		resp, err := s.client(t).InviteWorkspaceUserWithResponse(context.Background(), nil,
			gen.InviteWorkspaceUserJSONRequestBody{Email: ptr("x@y.test")}, withAuth("Authorization", tok, "acme"))
		if err != nil || resp.StatusCode() != 200 {
			t.Fatalf("invite with CLI token: %v %d %s", err, resp.StatusCode(), resp.Body)
		}
		resp, err = s.client(t).InviteWorkspaceUserWithResponse(context.Background(), nil,
			gen.InviteWorkspaceUserJSONRequestBody{Email: ptr("y@y.test")}, withAuth("X-Blaxel-Authorization", key, ""))
		if err != nil || resp.StatusCode() != 200 {
			t.Fatalf("invite with CLI key: %v %d %s", err, resp.StatusCode(), resp.Body)
		}
		mustCLI(t, e.args("apikey", "revoke", key)...)
		resp, _ = s.client(t).InviteWorkspaceUserWithResponse(context.Background(), nil,
			gen.InviteWorkspaceUserJSONRequestBody{Email: ptr("z@y.test")}, withAuth("X-Blaxel-Authorization", key, ""))
		if resp.StatusCode() != 401 {
			t.Errorf("revoked key: got %d, want 401", resp.StatusCode())
		}
	})
	t.Run("Errors", func(t *testing.T) {
		for _, args := range [][]string{
			{"serve", "--no-such-flag"},
			{"serve", "--db", "postgres://nobody@127.0.0.1:1/x?connect_timeout=2", "--data-dir", t.TempDir()},
			{"serve", "--log-level", "loud", "--data-dir", t.TempDir()},
			{"workspace", "create", "--data-dir", t.TempDir()},
			{"apikey", "create", "--data-dir", t.TempDir()},
			{"token"},
			{"nonsense"},
		} {
			r := runCLI(t, args...)
			lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
			if last := lines[len(lines)-1]; r.code == 0 || !strings.HasPrefix(last, "error: ") || strings.Count(r.stderr, "\nerror: ")+strings.Count(r.stderr[:min(len(r.stderr), 7)], "error: ") != 1 || strings.Contains(r.stderr, "goroutine") {
				t.Errorf("%v: got exit %d, stderr %q; want non-zero and a one-line error", args, r.code, r.stderr)
			}
		}
	})
	t.Run("Env", func(t *testing.T) {
		dir := t.TempDir()
		t.Setenv("CONTROLPLANE_DATA_DIR", dir)
		mustCLI(t, "workspace", "create", "envws", "--admin-sub", "u", "--admin-email", "u@e.test")
		if _, err := os.Stat(filepath.Join(dir, "controlplane.db")); err != nil {
			t.Errorf("CONTROLPLANE_DATA_DIR not honoured: %v", err)
		}
	})
}
