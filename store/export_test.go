package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/membership-api/controlplane/store/internal/commit"
	"gorm.io/gorm"
)

// InviteBatchForTest runs ps as one batch statement, as the batcher would,
// so tests can race batches with chosen contents.
func (s *Store) InviteBatchForTest(ctx context.Context, ps []InviteParams) error {
	jobs := make([]*inviteJob, len(ps))
	for i, p := range ps {
		p.Email = NormalizeEmail(p.Email)
		if p.Role == "" {
			p.Role = RoleMember
		}
		jobs[i] = &inviteJob{p: p}
	}
	if s.committer == nil {
		return s.runPostgresBatch(ctx, s.now(), jobs)
	}
	return s.committer.Do(ctx, func(tx *gorm.DB) error { return runSQLiteBatch(ctx, tx, nil, s.now(), jobs) })
}

// ExecForTest runs one SQL statement on the writer (test setup: bulk seeding
// by SQL, settings). On SQLite it goes through the group committer, which
// owns the one writer connection.
func (s *Store) ExecForTest(ctx context.Context, sql string, args ...any) error {
	if s.committer == nil {
		return s.write.WithContext(ctx).Exec(sql, args...).Error
	}
	return s.committer.Do(ctx, func(tx *gorm.DB) error { return tx.Exec(sql, args...).Error })
}

// CapturedStatement is one SQL statement GORM ran, with its arguments.
type CapturedStatement struct {
	SQL  string
	Vars []any
}

// CaptureStatementsForTest records every statement the store runs through
// GORM from now on (queries, raw reads, writes). Statements sent past GORM
// (the batch statements) are in RawStatementsForTest.
func (s *Store) CaptureStatementsForTest() func() []CapturedStatement {
	var mu sync.Mutex
	var got []CapturedStatement
	record := func(tx *gorm.DB) {
		if sql := tx.Statement.SQL.String(); sql != "" {
			mu.Lock()
			got = append(got, CapturedStatement{SQL: sql, Vars: append([]any(nil), tx.Statement.Vars...)})
			mu.Unlock()
		}
	}
	dbs := []*gorm.DB{s.read} // on PostgreSQL also s.write
	if s.committer != nil {
		dbs = append(dbs, s.committer.DB()) // SQLite's writes run on the committer's own handle
	}
	for _, db := range dbs {
		cb := db.Callback()
		for _, err := range []error{
			cb.Query().After("gorm:query").Register("plantest:query", record),
			cb.Row().After("gorm:row").Register("plantest:row", record),
			cb.Raw().After("gorm:raw").Register("plantest:raw", record),
			cb.Create().After("gorm:create").Register("plantest:create", record),
			cb.Update().After("gorm:update").Register("plantest:update", record),
			cb.Delete().After("gorm:delete").Register("plantest:delete", record),
		} {
			if err != nil {
				panic(err)
			}
		}
	}
	return func() []CapturedStatement {
		mu.Lock()
		defer mu.Unlock()
		return append([]CapturedStatement(nil), got...)
	}
}

// RawStatementsForTest are the per-request statements the store sends past
// GORM, for this store's dialect.
func (s *Store) RawStatementsForTest() []string {
	if s.dialect == Postgres {
		return []string{lockWorkspacesShared, inviteBatchPostgres}
	}
	stmts := []string{readBackInvitationSQLite}
	for i := range inviteBatchSQLite {
		stmts = append(stmts, inviteBatchSQLite[i], enqueueBatchSQLite[i])
	}
	return stmts
}

// ExplainForTest returns the plan of sql, one line per node: on SQLite
// EXPLAIN QUERY PLAN's details; on PostgreSQL the generic plan (what a
// prepared statement gets once its plan is cached, as pgx prepares every
// statement) with sequential scans disabled, so that a table small enough to
// read whole still shows which index the planner can use.
func (s *Store) ExplainForTest(ctx context.Context, sql string, vars []any) (string, error) {
	if s.dialect != Postgres {
		if vars == nil {
			vars = make([]any, strings.Count(sql, "?"))
		}
		var lines []string
		// Foreign keys off: SQLite plans list the scan of outbox_messages
		// that checking its foreign key to invitations would take, but runs
		// it only while a statement has a violation outstanding (OP_FkIfZero
		// skips it otherwise), never in a write that succeeds.
		err := s.read.WithContext(ctx).Connection(func(conn *gorm.DB) error {
			if err := conn.Exec("PRAGMA foreign_keys = OFF").Error; err != nil {
				return err
			}
			defer conn.Exec("PRAGMA foreign_keys = ON")
			rows, err := conn.Raw("EXPLAIN QUERY PLAN "+sql, vars...).Rows()
			if err != nil {
				return err
			}
			defer rows.Close()
			for rows.Next() {
				var id, parent, notUsed int
				var detail string
				if err := rows.Scan(&id, &parent, &notUsed, &detail); err != nil {
					return err
				}
				lines = append(lines, detail)
			}
			return rows.Err()
		})
		return strings.Join(lines, "\n"), err
	}
	var plan []string
	err := s.write.WithContext(ctx).Connection(func(conn *gorm.DB) error {
		for _, set := range []string{"SET plan_cache_mode = force_generic_plan", "SET enable_seqscan = off", "PREPARE plantest AS " + sql} {
			if err := conn.Exec(set).Error; err != nil {
				return fmt.Errorf("%s: %w", set, err)
			}
		}
		defer conn.Exec("DEALLOCATE plantest")
		defer conn.Exec("RESET ALL")
		var n int
		if err := conn.Raw("SELECT cardinality(parameter_types) FROM pg_prepared_statements WHERE name = 'plantest'").Scan(&n).Error; err != nil {
			return err
		}
		// A generic plan does not depend on the values: NULLs will do.
		nulls := strings.TrimSuffix(strings.Repeat("NULL, ", n), ", ")
		explain := "EXPLAIN EXECUTE plantest"
		if n > 0 {
			explain += "(" + nulls + ")"
		}
		return conn.Raw(explain).Scan(&plan).Error
	})
	return strings.Join(plan, "\n"), err
}

// HasIndexForTest tells whether the table of model (an empty model value,
// such as &OutboxMessage{}) has an index called name.
func (s *Store) HasIndexForTest(model any, name string) bool {
	return s.read.Migrator().HasIndex(model, name)
}

// WorkspaceForTest reads the workspace called name as stored.
func (s *Store) WorkspaceForTest(ctx context.Context, name string) (Workspace, error) {
	var ws Workspace
	err := s.read.WithContext(ctx).Where("name = ?", name).Take(&ws).Error
	return ws, err
}

// ErrClosedForTest is what writes get once the store is closed.
var ErrClosedForTest = commit.ErrClosed

// WriteForTest runs fn as a job of the SQLite group committer.
func (s *Store) WriteForTest(ctx context.Context, fn func(tx *gorm.DB) error) error {
	return s.committer.Do(ctx, fn)
}

// brokenWAL is the WAL file of a disk that stops taking writes.
type brokenWAL struct {
	commit.WALFile
	syncs atomic.Int32
}

func (w *brokenWAL) Sync() error {
	w.syncs.Add(1)
	return errors.New("input/output error")
}

// BreakWALForTest makes every fsync of the SQLite WAL fail until repair;
// syncs counts those tried. Call it while no write is in flight (the next
// write's hand-offs to the writer and the syncer order it before their reads).
func (s *Store) BreakWALForTest() (syncs func() int, repair func()) {
	var broken *brokenWAL
	repair = s.committer.ReplaceWALForTest(func(wal commit.WALFile) commit.WALFile {
		broken = &brokenWAL{WALFile: wal}
		return broken
	})
	return func() int { return int(broken.syncs.Load()) }, repair
}

// FailInviteBatchesForTest makes every invite batch run fail instead of its
// statement (return an error or panic). Call it before the first invite.
func (s *Store) FailInviteBatchesForTest(fail func() error) {
	switch b := s.invites.(type) {
	case *sqliteInvites:
		b.run = func(context.Context, *gorm.DB, *commit.Memo, time.Time, []*inviteJob) error { return fail() }
	case *postgresInvites:
		b.run = func(context.Context, time.Time, []*inviteJob) error { return fail() }
	}
}

// SetBatchTimeoutForTest shortens the bound of s's PostgreSQL invite
// batches until the returned function restores it. Call it while none of
// s's invites is in flight.
func (s *Store) SetBatchTimeoutForTest(d time.Duration) (restore func()) {
	b := s.invites.(*postgresInvites)
	old := b.timeout
	b.timeout = d
	return func() { b.timeout = old }
}

// HoldWorkspaceLockForTest holds the workspace's row FOR UPDATE (as accept
// and removal do) on a PostgreSQL connection of its own for hold; wait
// returns once it is released.
func (s *Store) HoldWorkspaceLockForTest(name string, hold time.Duration) (wait func() error, err error) {
	locked := make(chan error, 1)
	done := make(chan error, 1)
	go func() {
		done <- s.write.Transaction(func(tx *gorm.DB) error {
			err := tx.Exec("SELECT 1 FROM workspaces WHERE name = ? FOR UPDATE", name).Error
			locked <- err
			if err == nil {
				time.Sleep(hold)
			}
			return err
		})
	}()
	if err := <-locked; err != nil {
		return nil, err
	}
	return func() error { return <-done }, nil
}

// InviteByBatchForTest runs p alone as one batch statement (no slow path
// behind it): found tells whether the statement settled it, as the
// batchers would answer. The actor is ctx's.
func (s *Store) InviteByBatchForTest(ctx context.Context, p InviteParams) (found bool, inv Invitation, err error) {
	p, err = p.prepare()
	if err != nil {
		return false, Invitation{}, err
	}
	p.actor = ActorFrom(ctx)
	jobs := []*inviteJob{{p: p}}
	if s.committer == nil {
		err = s.runPostgresBatch(ctx, s.now(), jobs)
	} else {
		err = s.committer.Do(ctx, func(tx *gorm.DB) error { return runSQLiteBatch(ctx, tx, nil, s.now(), jobs) })
	}
	return jobs[0].found, jobs[0].inv, err
}

// InviteBySlowPathForTest decides p with the slow path alone (inviteSlow,
// every rule in Go), in a transaction of its own.
func (s *Store) InviteBySlowPathForTest(ctx context.Context, p InviteParams) (Invitation, error) {
	p, err := p.prepare()
	if err != nil {
		return Invitation{}, err
	}
	p.actor = ActorFrom(ctx)
	var inv Invitation
	err = s.inTx(ctx, func(tx *gorm.DB) error { return s.inviteSlow(tx, p, s.now(), &inv) })
	return inv, err
}

// InviteActionForTest is inviteAction: the event an invite that left inv writes.
func InviteActionForTest(inv Invitation) string { return inviteAction(inv) }

// InviteStaleForTest is inviteStale: whether an invite must not refresh pending.
func InviteStaleForTest(pending Invitation, now time.Time) bool { return inviteStale(pending, now) }

// InviteAfterForTest is inviteAfter: an invite's audited fields.
func InviteAfterForTest(role string, expires time.Time) string { return inviteAfter(role, expires) }
