package e2e_test

import (
	"os"
	"strings"
	"testing"
)

// TestCLI_UnknownDatabaseScheme: --db naming another database fails with one
// line naming the accepted forms and exit 1, and makes no SQLite file (issue
// 9: it made one at "mysql:/foo").
func TestCLI_UnknownDatabaseScheme(t *testing.T) {
	t.Chdir(t.TempDir())
	for _, cmd := range [][]string{
		{"migrate", "--db", "mysql://foo", "--data-dir", "data"},
		{"migrate", "--db", "mysql://root:secret@db/cp", "--data-dir", "data"},
	} {
		r := runCLI(t, cmd...)
		lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
		last := lines[len(lines)-1]
		if r.code != 1 || !strings.HasPrefix(last, "error: ") || strings.Count(r.stderr, "error: ") != 1 {
			t.Errorf("%v: got exit %d, stderr %q; want 1 and a one-line error", cmd, r.code, r.stderr)
		}
		for _, want := range []string{`"mysql://…"`, "postgres://", "postgresql://", "file path"} {
			if !strings.Contains(r.stderr, want) {
				t.Errorf("%v: error %q does not name %s", cmd, r.stderr, want)
			}
		}
		if strings.Contains(r.stderr, "secret") {
			t.Errorf("%v: the password reached stderr: %q", cmd, r.stderr)
		}
	}
	if _, err := os.Stat("mysql:"); !os.IsNotExist(err) {
		t.Errorf("a refused --db made the SQLite directory mysql: (%v)", err)
	}
}
