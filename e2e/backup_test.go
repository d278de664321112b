package e2e_test

import (
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// parseTableRows reads backup's and restore's stdout: a table and its rows
// a line.
func parseTableRows(t *testing.T, out string) map[string]int64 {
	t.Helper()
	rows := map[string]int64{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(line)
		if len(f) != 2 {
			t.Fatalf("line %q is not TABLE ROWS", line)
		}
		n, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		rows[f[0]] = n
	}
	return rows
}

// A backup taken while the server keeps accepting invitations restores
// into a new data directory that a server answers from; the refusals (a
// backup file that exists, a restore into the data directory the server
// holds) say why and change nothing.
func TestBackup_WhileServingThenRestore(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "sqlite")
	admin := f.bearer(f.adminKey)
	var (
		wg      sync.WaitGroup
		stop    atomic.Bool
		invited atomic.Int64
	)
	started, done := make(chan struct{}), make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(done)
		for i := 0; !stop.Load(); i++ {
			resp, body := f.do(t, "POST", "/v0/users", admin, fmt.Sprintf(`{"email":"load-%d@example.com"}`, i))
			if resp.StatusCode != 200 {
				t.Errorf("invite under backup: %d %s", resp.StatusCode, body)
				return
			}
			if invited.Add(1) == 5 {
				close(started) // the backup starts while the writes go on
			}
		}
	}()
	select {
	case <-started:
	case <-done:
		t.Fatal("the writes stopped before the backup")
	}
	backup := filepath.Join(t.TempDir(), "backup.db")
	r := runCLI(t, f.args("backup", "--to", backup)...)
	stop.Store(true)
	wg.Wait()
	if r.code != 0 {
		t.Fatalf("backup: exit %d: %s", r.code, r.stderr)
	}
	if !strings.Contains(r.stderr, "integrity ok") {
		t.Errorf("backup did not say its check passed: %s", r.stderr)
	}
	backedUp := parseTableRows(t, r.stdout)
	if backedUp["invitations"] < 5 || backedUp["outbox_messages"] != backedUp["invitations"] {
		t.Errorf("backup rows %v: want the invitations made before it, each with its email", backedUp)
	}

	t.Run("backup path exists", func(t *testing.T) {
		before, _ := os.ReadFile(backup)
		r := runCLI(t, f.args("backup", "--to", backup)...)
		if r.code == 0 || !strings.Contains(r.stderr, "exists") {
			t.Fatalf("exit %d: %s", r.code, r.stderr)
		}
		if after, _ := os.ReadFile(backup); string(after) != string(before) {
			t.Error("the existing backup changed")
		}
	})
	t.Run("restore into the live data directory", func(t *testing.T) {
		before := f.countRows(t)
		r := runCLI(t, f.args("restore", "--from", backup)...)
		if r.code == 0 || !strings.Contains(r.stderr, "in use") || !strings.Contains(r.stderr, "nothing was changed") {
			t.Fatalf("exit %d: %s", r.code, r.stderr)
		}
		if after := f.countRows(t); !maps.Equal(before, after) {
			t.Errorf("rows changed: %v → %v", before, after)
		}
		if resp, body := f.do(t, "GET", "/v0/users?limit=1", admin, ""); resp.StatusCode != 200 {
			t.Errorf("the server after the refused restore: %d %s", resp.StatusCode, body)
		}
	})

	restored := &env{t: t, dialect: "sqlite", dataDir: t.TempDir()}
	restored.dsn = filepath.Join(restored.dataDir, "controlplane.db")
	// The secrets key is backed up apart from the database
	// (docs/operations/backup-and-restore.md): the restored directory gets it.
	key, err := os.ReadFile(filepath.Join(f.dataDir, "secrets.key"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(restored.dataDir, "secrets.key"), key, 0o600); err != nil {
		t.Fatal(err)
	}
	r = runCLI(t, restored.args("restore", "--from", backup)...)
	if r.code != 0 {
		t.Fatalf("restore: exit %d: %s", r.code, r.stderr)
	}
	if got := parseTableRows(t, r.stdout); !maps.Equal(got, backedUp) {
		t.Errorf("restored rows %v, backed up %v", got, backedUp)
	}
	g := *f
	g.env = restored
	g.srv = restored.start()
	if got := g.countRows(t); got["invitations"] != backedUp["invitations"] || got["members"] != backedUp["members"] {
		t.Errorf("the restored server's rows %v, backed up %v", got, backedUp)
	}
	if resp, body := g.do(t, "GET", "/v0/users", admin, ""); resp.StatusCode != 200 || strings.Count(string(body), "load-") != int(backedUp["invitations"]) {
		t.Errorf("the restored server lists %d invitations (%d), want the %d backed up", strings.Count(string(body), "load-"), resp.StatusCode, backedUp["invitations"])
	}
}
