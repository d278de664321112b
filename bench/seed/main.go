// Command seed loads the large workspaces `make bench` measures
// into a controlplane database with set-based SQL: one INSERT … SELECT per
// table and kind of row, all in one transaction, so 200,000 rows take seconds
// instead of the minutes the API would need. It migrates the schema first
// (store.Migrate), then writes rows shaped like the app's own: lower-cased
// emails, the store's status and role values, created/updated times and
// audit subs, members who joined through an accepted invitation.
//
//	go run ./bench/seed --db DSN
//
// DSN is what `controlplane serve --db` takes (a SQLite file path or a
// postgres:// URL). Every seeded workspace has the admin bench-admin
// (admin@bench.test), so one token serves every case; the workspaces are:
//
//	small      1 member                                (invite baseline)
//	big        20,000 members, 100,000 invitations     (invite at scale)
//	list100    100 entries: 50 members, 50 pending     (GET /v0/users)
//	list10k    10,000 entries: 5,000 members, 5,000 pending
//	inv-1 … inv-1000  100 members each, and a pending invitation for
//	           invitee@bench.test                      (GET /v0/profile/invitations)
//
// Seeded invitations have no outbox rows: their emails count as sent.
package main

import (
	"context"
	"database/sql"
	"errors"
	"flag"
	"fmt"
	"os"
	"regexp"
	"strings"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx"
	"github.com/libtnb/sqlite"         // the project's SQLite driver, registered as sqlite.DriverName

	"github.com/membership-api/controlplane/store"
)

// workspaceSet is one or more workspaces seeded alike. A set of one is named
// prefix; a larger set prefix-1 … prefix-count.
type workspaceSet struct {
	prefix  string
	count   int
	members int // including the admin
	pending int // pending, unexpired invitations to other emails
	closed  int // declined and revoked invitations (history)
	invitee string
}

// sets are the workspaces of the package comment. big's invitations:
// 19,999 accepted (its members) + 70,001 pending + 10,000 closed = 100,000.
var sets = []workspaceSet{
	{prefix: "small", count: 1, members: 1},
	{prefix: "big", count: 1, members: 20000, pending: 70001, closed: 10000},
	{prefix: "list100", count: 1, members: 50, pending: 50},
	{prefix: "list10k", count: 1, members: 5000, pending: 5000},
	{prefix: "inv", count: 1000, members: 100, invitee: "invitee@bench.test"},
}

const (
	adminSub   = "bench-admin"
	adminEmail = "admin@bench.test"
	inviteTTL  = 7 * 24 * time.Hour // serve's default --invite-ttl
)

func main() {
	dsn := flag.String("db", "", "database: a SQLite file path or a postgres:// URL (as serve --db)")
	flag.Parse()
	if *dsn == "" || flag.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "usage: seed --db DSN")
		os.Exit(2)
	}
	start := time.Now()
	n, err := run(context.Background(), *dsn, sets)
	if err != nil {
		fmt.Fprintln(os.Stderr, "seed:", err)
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr, "seed: %d rows in %.1fs\n", n, time.Since(start).Seconds())
}

// run migrates the database at dsn and seeds the given workspace sets in one
// transaction, returning the number of rows written.
func run(ctx context.Context, dsn string, sets []workspaceSet) (int64, error) {
	s, err := store.Open(ctx, dsn, store.Options{MaxOpenConns: 1})
	if err != nil {
		return 0, err
	}
	err = errors.Join(s.Migrate(ctx), s.Close())
	if err != nil {
		return 0, err
	}

	postgres := store.IsPostgresDSN(dsn)
	var db *sql.DB
	if postgres {
		db, err = sql.Open("pgx", dsn)
	} else {
		// The time parameters must be store.Open's, so seeded times are
		// stored in the same text format as the app's own.
		path := strings.TrimPrefix(strings.TrimPrefix(strings.TrimPrefix(dsn, "sqlite://"), "sqlite:"), "file:")
		db, err = sql.Open(sqlite.DriverName, path+"?_txlock=immediate&_texttotime=1&_inttotime=1&_time_format=sqlite"+
			"&_pragma=journal_mode(WAL)&_pragma=busy_timeout(10000)&_pragma=foreign_keys(1)")
	}
	if err != nil {
		return 0, err
	}
	defer db.Close() //nolint:errcheck // the seed is committed (or failed) before: closing changes neither

	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback() //nolint:errcheck // a no-op after Commit; on an error path the first error is returned
	// Row N of a statement was created N seconds after base: distinct
	// times, as rows made one by one have, so keyset pages do not all tie
	// on created_at. base is two days ago (the largest N is under a day), so
	// whatever the benchmark adds sorts after the seeded rows.
	base := time.Now().UTC().Truncate(time.Second).Add(-48 * time.Hour)
	expires := time.Now().UTC().Truncate(time.Microsecond).Add(inviteTTL)
	var total int64
	for _, set := range sets {
		for _, q := range set.statements() {
			// @T(N) is base + N seconds. PostgreSQL cannot infer a
			// parameter's type in a SELECT list, hence the casts. SQLite
			// gets the text the driver writes for a whole-second UTC time
			// (store.Open's _time_format=sqlite: "2006-01-02 15:04:05+00:00"),
			// and $2 bare (a CAST would turn the time text into a number).
			args := []any{base}
			needExpiry := strings.Contains(q, "$2")
			if postgres {
				q = atMacro.ReplaceAllString(q, "($$1::timestamptz + ($1) * interval '1 second')")
				q = strings.ReplaceAll(q, "$2", "$2::timestamptz")
			} else {
				args[0] = base.Unix()
				q = atMacro.ReplaceAllString(q, "(strftime('%Y-%m-%d %H:%M:%S', ?1 + ($1), 'unixepoch') || '+00:00')")
				q = strings.ReplaceAll(q, "$2", "?2")
			}
			if needExpiry {
				args = append(args, expires)
			}
			res, err := tx.ExecContext(ctx, q, args...)
			if err != nil {
				return 0, fmt.Errorf("seed %s: %w\n%s", set.prefix, err, q)
			}
			n, _ := res.RowsAffected()
			total += n
		}
	}
	if err := tx.Commit(); err != nil {
		return 0, err
	}
	if postgres {
		// What autovacuum would do within a minute of the load anyway; done
		// now so plans do not change in the middle of a measured round.
		if _, err := db.ExecContext(ctx, "ANALYZE"); err != nil {
			return 0, err
		}
	}
	return total, nil
}

// rows is how many rows of each table seeding the sets writes: per
// workspace, the admin and members-1 members who joined through an accepted
// invitation, plus the pending, closed and invitee invitations.
func rows(sets []workspaceSet) map[string]int64 {
	n := map[string]int64{}
	for _, set := range sets {
		c := int64(set.count)
		n["workspaces"] += c
		n["members"] += c * int64(set.members)
		inv := int64(set.members - 1 + set.pending + set.closed)
		if set.invitee != "" {
			inv++
		}
		n["invitations"] += c * inv
	}
	return n
}

// atMacro matches @T(N) in statements: the time N seconds after the base.
var atMacro = regexp.MustCompile(`@T\(([^)]*)\)`)

// statements returns the INSERTs that seed set, with @T(N) standing for a
// creation time (see run) and $2 for the expiry of pending invitations.
// Names and numbers are this file's constants, never input.
func (set workspaceSet) statements() []string {
	rows := max(set.count, set.members, set.pending, set.closed)
	seq := fmt.Sprintf("WITH RECURSIVE seq(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM seq WHERE i < %d) ", rows)
	name, ours := "'"+set.prefix+"'", "w.name = '"+set.prefix+"'"
	if set.count > 1 {
		name, ours = "'"+set.prefix+"-' || i", "w.name LIKE '"+set.prefix+"-%'"
	}
	// Every email is user-N@<workspace>.test and the like: lower case, valid.
	email := func(local string) string { return "'" + local + "-' || s.i || '@' || w.name || '.test'" }
	// created_at, updated_at, created_by: the admin and the workspaces are
	// the oldest rows, then members and invitations in the order of s.i.
	audit := func(n string) string { return "@T(" + n + "), @T(" + n + "), '" + adminSub + "', " }
	qs := []string{
		seq + `INSERT INTO workspaces (name, display_name, created_at, updated_at, created_by, updated_by)
			SELECT ` + name + `, ` + name + `, ` + audit("0") + `'` + adminSub + `' FROM seq WHERE i <= ` + fmt.Sprint(set.count),
		`INSERT INTO members (workspace_id, sub, email, role, source, created_at, updated_at, created_by, updated_by)
			SELECT w.id, '` + adminSub + `', '` + adminEmail + `', '` + store.RoleAdmin + `', '', ` + audit("0") + `'` + adminSub + `'
			FROM workspaces w WHERE ` + ours,
	}
	if set.members > 1 {
		// Members who accepted an invitation: the member row and the
		// accepted invitation, as AcceptInvitation leaves them.
		qs = append(qs,
			seq+`INSERT INTO members (workspace_id, sub, email, role, source, created_at, updated_at, created_by, updated_by)
			SELECT w.id, 'user-' || s.i, `+email("user")+`, '`+store.RoleMember+`', '`+store.SourceInvitation+`', `+audit("s.i")+`'user-' || s.i
			FROM workspaces w JOIN seq s ON s.i < `+fmt.Sprint(set.members)+` WHERE `+ours,
			seq+`INSERT INTO invitations (workspace_id, email, role, status, invited_by, expires_at, created_at, updated_at, created_by, updated_by)
			SELECT w.id, `+email("user")+`, '`+store.RoleMember+`', '`+store.InvitationAccepted+`', '`+adminSub+`', $2, `+audit("s.i")+`'user-' || s.i
			FROM workspaces w JOIN seq s ON s.i < `+fmt.Sprint(set.members)+` WHERE `+ours)
	}
	if set.pending > 0 {
		qs = append(qs, seq+`INSERT INTO invitations (workspace_id, email, role, status, invited_by, expires_at, created_at, updated_at, created_by, updated_by)
			SELECT w.id, `+email("invitee")+`, '`+store.RoleMember+`', '`+store.InvitationPending+`', '`+adminSub+`', $2, `+audit("s.i")+`'`+adminSub+`'
			FROM workspaces w JOIN seq s ON s.i <= `+fmt.Sprint(set.pending)+` WHERE `+ours)
	}
	if set.closed > 0 {
		qs = append(qs, seq+`INSERT INTO invitations (workspace_id, email, role, status, invited_by, expires_at, created_at, updated_at, created_by, updated_by)
			SELECT w.id, `+email("former")+`, '`+store.RoleMember+`',
				CASE WHEN s.i % 2 = 0 THEN '`+store.InvitationDeclined+`' ELSE '`+store.InvitationRevoked+`' END,
				'`+adminSub+`', $2, `+audit("s.i")+`'`+adminSub+`'
			FROM workspaces w JOIN seq s ON s.i <= `+fmt.Sprint(set.closed)+` WHERE `+ours)
	}
	if set.invitee != "" {
		qs = append(qs, `INSERT INTO invitations (workspace_id, email, role, status, invited_by, expires_at, created_at, updated_at, created_by, updated_by)
			SELECT w.id, '`+set.invitee+`', '`+store.RoleMember+`', '`+store.InvitationPending+`', '`+adminSub+`', $2, `+audit("0")+`'`+adminSub+`'
			FROM workspaces w WHERE `+ours)
	}
	return qs
}
