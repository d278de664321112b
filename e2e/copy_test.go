package e2e_test

import (
	"bytes"
	"context"
	"database/sql"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/libtnb/sqlite"

	"github.com/membership-api/controlplane/store/storetest"
)

// seedBulk adds about 100,000 rows to the SQLite database at dsn in one
// transaction of set-based INSERTs, shaped as bench/seed's (lower-case
// emails, the store's states, one admin per workspace, members who joined
// by an accepted invitation, pending invitations), plus audit events:
// 100 workspaces × (600 members + 300 invitations + 100 events). It
// returns how many rows it wrote.
func seedBulk(t *testing.T, dsn, suffix string) int64 {
	t.Helper()
	db, err := sql.Open(sqlite.DriverName, dsn+"?_txlock=immediate&_texttotime=1&_inttotime=1&_time_format=sqlite"+
		"&_pragma=busy_timeout(10000)&_pragma=foreign_keys(1)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback() //nolint:errcheck // a no-op after Commit
	base := time.Now().UTC().Truncate(time.Second).Add(-48 * time.Hour).Unix()
	at := func(n string) string {
		return "(strftime('%Y-%m-%d %H:%M:%S', " + "?1 + " + n + ", 'unixepoch') || '+00:00')"
	}
	seq := func(n int) string {
		return "WITH RECURSIVE seq(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM seq WHERE i < " + strconv.Itoa(n) + ") "
	}
	ours := "w.name LIKE 'bulk-%" + suffix + "'"
	statements := []string{
		seq(100) + `INSERT INTO workspaces (name, display_name, member_count, created_at, updated_at, created_by, updated_by)
			SELECT 'bulk-' || i || '` + suffix + `', 'Bulk ' || i, 599, ` + at("0") + `, ` + at("0") + `, 'bulk-admin', 'bulk-admin' FROM seq`,
		`INSERT INTO members (workspace_id, sub, email, role, source, created_at, updated_at, created_by, updated_by)
			SELECT w.id, 'bulk-admin', 'admin@bulk.test', 'admin', '', ` + at("0") + `, ` + at("0") + `, 'bulk-admin', 'bulk-admin' FROM workspaces w WHERE ` + ours,
		seq(599) + `INSERT INTO members (workspace_id, sub, email, role, source, created_at, updated_at, created_by, updated_by)
			SELECT w.id, 'user-' || s.i, 'user-' || s.i || '@' || w.name || '.test', 'member', 'invitation', ` + at("s.i") + `, ` + at("s.i") + `, 'user-' || s.i, 'user-' || s.i
			FROM workspaces w JOIN seq s WHERE ` + ours,
		seq(300) + `INSERT INTO invitations (workspace_id, email, role, status, invited_by, expires_at, created_at, updated_at, created_by, updated_by)
			SELECT w.id, 'invitee-' || s.i || '@' || w.name || '.test', 'member', 'pending', 'bulk-admin', ` + at("864000") + `, ` + at("s.i") + `, ` + at("s.i") + `, 'bulk-admin', 'bulk-admin'
			FROM workspaces w JOIN seq s WHERE ` + ours,
		seq(100) + `INSERT INTO audit_events (workspace_id, workspace, at, actor_kind, actor_sub, action, target_type, target_id, before, after, request_id)
			SELECT w.id, w.name, ` + at("s.i") + `, 'user', 'bulk-admin', 'invitation.created', 'invitation', 'invitee-' || s.i || '@' || w.name || '.test',
				'', '{"role":"member"}', 'req-' || s.i
			FROM workspaces w JOIN seq s WHERE ` + ours,
	}
	var total int64
	for _, q := range statements {
		res, err := tx.ExecContext(ctx, q, base)
		if err != nil {
			t.Fatalf("seed: %v\n%s", err, q)
		}
		n, _ := res.RowsAffected()
		total += n
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	return total
}

// answer is one request's status and body.
type answer struct {
	status int
	body   string
	next   string // the Link header's next page, if any
}

func (f *fixture) answer(t *testing.T, path string, h http.Header) answer {
	t.Helper()
	resp, body := f.do(t, http.MethodGet, path, h, "")
	a := answer{status: resp.StatusCode, body: string(body)}
	if m := nextLink.FindStringSubmatch(resp.Header.Get("Link")); m != nil {
		a.next = m[1]
	}
	return a
}

// copyCheck is one table's line of copy's stdout.
type copyCheck struct {
	sourceRows, targetRows string
	sourceSum, targetSum   string
}

// copyChecks reads copy's stdout: a header, then TABLE SOURCE-ROWS
// TARGET-ROWS SOURCE-SUM TARGET-SUM ok.
func copyChecks(t *testing.T, out string) map[string]copyCheck {
	t.Helper()
	checks := map[string]copyCheck{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) != 6 || f[5] != "ok" {
			t.Fatalf("copy's check line %q", line)
		}
		checks[f[0]] = copyCheck{sourceRows: f[1], targetRows: f[2], sourceSum: f[3], targetSum: f[4]}
	}
	if len(checks) < 14 {
		t.Fatalf("copy checked %d tables: %s", len(checks), out)
	}
	return checks
}

var emlRecipient = regexp.MustCompile(`(?m)^To: <([^>]+)>`)

// A deployment moved from SQLite to PostgreSQL with `copy` answers as it
// did: an API key made on the source, a service account's secret (a new
// token) and a token the source issued, a list page and the page its
// cursor (taken from the source) points to. Its queued email is sent once,
// by the target (the source ran without a dispatcher, then stopped). The
// copy carries about 100,000 rows (its time is logged), and copied back to
// SQLite every table's checksum is the one it started with.
func TestCopy_SQLiteToPostgresAnswersTheSame(t *testing.T) {
	t.Parallel()
	pg := storetest.DSN(t, "postgres") // skips without PostgreSQL
	src := newFixture(t, "sqlite", "--mail-dispatcher=false", "--webhook-dispatcher=false")
	sa := src.oauthClient(t, "mover", "admin")
	srcToken := src.mustToken(t, sa, "")
	admin := src.bearer(src.adminKey)
	if resp, body := src.do(t, "POST", "/v0/users", admin, `{"email":"`+src.mail("newbie")+`"}`); resp.StatusCode != 200 {
		t.Fatalf("invite: %d %s", resp.StatusCode, body)
	}
	seeded := seedBulk(t, src.dsn, src.suffix)
	if seeded < 100_000 {
		t.Fatalf("seeded %d rows, want at least 100,000", seeded)
	}
	requests := []struct {
		name, path string
		header     http.Header
	}{
		{"API key: members, first page", "/v0/users?limit=1", admin},
		{"API key: service accounts", "/v0/service_accounts", admin},
		{"API key: pending invitations", "/v0/users?limit=5", admin},
		{"source's token", "/v0/users", saHeaders(srcToken)},
	}
	before := make([]answer, len(requests))
	for i, r := range requests {
		before[i] = src.answer(t, r.path, r.header)
		if before[i].status != 200 {
			t.Fatalf("%s on the source: %d %s", r.name, before[i].status, before[i].body)
		}
	}
	if before[0].next == "" {
		t.Fatal("no next page on the source")
	}
	srcNext := src.answer(t, before[0].next, admin)
	src.srv.stop()
	// The test's own handle on the source holds it too (copy refuses a
	// SQLite database a process has open).
	if err := src.store().Close(); err != nil {
		t.Fatal(err)
	}

	mustCLI(t, "migrate", "--db", pg)
	start := time.Now()
	r := runCLI(t, "copy", "--from", src.dsn, "--to", pg)
	took := time.Since(start)
	if r.code != 0 {
		t.Fatalf("copy: exit %d\n%s\n%s", r.code, r.stderr, r.stdout)
	}
	t.Logf("copy of %d seeded rows (and the fixture's) SQLite → PostgreSQL: %s\n%s", seeded, took.Round(time.Millisecond), r.stderr)
	// And back, into a new SQLite file, before any server runs on the
	// PostgreSQL copy: every table ends as it started.
	back := filepath.Join(t.TempDir(), "back.db")
	mustCLI(t, "migrate", "--db", back)
	start = time.Now()
	r2 := runCLI(t, "copy", "--from", pg, "--to", back)
	if r2.code != 0 {
		t.Fatalf("copy back: exit %d\n%s\n%s", r2.code, r2.stderr, r2.stdout)
	}
	t.Logf("and back, PostgreSQL → SQLite: %s", time.Since(start).Round(time.Millisecond))
	there, home := copyChecks(t, r.stdout), copyChecks(t, r2.stdout)
	for table, c := range there {
		if home[table].targetSum != c.sourceSum || home[table].targetRows != c.sourceRows {
			t.Errorf("%s after SQLite → PostgreSQL → SQLite: %+v, it started as %+v", table, home[table], c)
		}
	}
	// The copy refuses to run again: the target is no longer empty.
	if again := runCLI(t, "copy", "--from", src.dsn, "--to", pg); again.code == 0 || !strings.Contains(again.stderr, "not empty") {
		t.Errorf("a second copy: exit %d, %s", again.code, again.stderr)
	}

	dst := *src
	dst.env = &env{t: t, dialect: "postgres", dataDir: src.dataDir, dsn: pg}
	// The same --public-url (the OAuth issuer): as a deployment keeps its
	// address when its database moves, so tokens the source issued verify.
	// And the source's secrets key (SQLite made it in its data directory):
	// copy moves the encrypted values as they are.
	dst.srv = dst.start("--mail-poll-interval", "20ms", "--public-url", src.srv.URL,
		"--secrets-key-file", filepath.Join(src.dataDir, "secrets.key"))
	for i, r := range requests {
		if got := dst.answer(t, r.path, r.header); got != before[i] {
			t.Errorf("%s: the target answers %d %s (next %q), the source answered %d %s (next %q)", r.name, got.status, got.body, got.next,
				before[i].status, before[i].body, before[i].next)
		}
	}
	if got := dst.answer(t, before[0].next, admin); got != srcNext {
		t.Errorf("the source's cursor on the target: %d %s, the source answered %d %s", got.status, got.body, srcNext.status, srcNext.body)
	}
	if got := dst.answer(t, "/v0/users", saHeaders(dst.mustToken(t, sa, ""))); got != before[3] {
		t.Errorf("a token the target issued for the service account: %d %s, want %s", got.status, got.body, before[3].body)
	}
	// The queued email: sent by the target, once.
	var sent []string
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		files, _ := filepath.Glob(filepath.Join(dst.dataDir, "mail", "*.eml"))
		sent = sent[:0]
		for _, f := range files {
			raw, _ := os.ReadFile(f)
			if m := emlRecipient.FindSubmatch(raw); m != nil && bytes.Equal(m[1], []byte(src.mail("newbie"))) {
				sent = append(sent, f)
			}
		}
		if len(sent) > 0 {
			break
		}
	}
	dst.srv.stop() // what it had to send is sent: count again, with nothing running
	files, _ := filepath.Glob(filepath.Join(dst.dataDir, "mail", "*.eml"))
	if len(sent) != 1 || len(files) != 1 {
		t.Errorf("the queued invitation email was sent %d times (%d emails in all), want once, by the target", len(sent), len(files))
	}
}
