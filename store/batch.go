package store

import (
	"context"
	"errors"
	"fmt"
	"math/bits"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"gorm.io/gorm"
)

// inviteBatcher runs the common case of concurrent invites together: one
// multi-row statement and one commit for a whole batch, instead of a
// statement, a savepoint and a share of a commit each (SQLite), or a
// transaction, a round trip and a WAL flush each (PostgreSQL). Per invite
// that is the difference between the database's per-statement overhead and
// its per-row cost, which is what let the invite path scale (issue 5).
//
// There is no waiting window: a worker takes the first invite that comes,
// adds those already waiting (up to maxBatch) and runs them. A lone invite
// is a batch of one. Every caller is answered only after the commit that
// holds its rows. What the batch statement does not return (unknown
// workspace, caller not an admin, a member's email, an expired pending
// invitation, an email twice in one batch) or any batch that fails is
// answered "not found" and the caller takes the slow path on its own, which
// decides with the full checks; so a batch changes cost, never outcomes.
type inviteBatcher struct {
	jobs     chan *inviteJob
	closed   chan struct{}
	close    sync.Once
	workers  sync.WaitGroup
	maxBatch int
	run      func(ctx context.Context, now time.Time, batch []*inviteJob) error
	now      func() time.Time
	hooks    Hooks // set before the first invite
}

// batchTimeout bounds one PostgreSQL batch (lock waits included).
const batchTimeout = 10 * time.Second

type inviteJob struct {
	p     InviteParams
	inv   Invitation
	found bool
	done  chan struct{}
}

func newInviteBatcher(workers, maxBatch int, now func() time.Time,
	run func(ctx context.Context, now time.Time, batch []*inviteJob) error) *inviteBatcher {
	b := &inviteBatcher{jobs: make(chan *inviteJob), closed: make(chan struct{}), maxBatch: maxBatch, run: run, now: now}
	b.workers.Add(workers)
	for range workers {
		go b.work()
	}
	return b
}

// invite submits p and waits for its batch. found is false when the slow
// path must decide.
func (b *inviteBatcher) invite(ctx context.Context, p InviteParams, inv *Invitation) (found bool, err error) {
	job := &inviteJob{p: p, done: make(chan struct{})}
	select {
	case b.jobs <- job:
	case <-b.closed:
		return false, errClosed
	case <-ctx.Done():
		return false, ctx.Err()
	}
	// Once taken, the batch runs to its commit whatever this caller does:
	// waiting for it keeps the answer true to what was stored.
	<-job.done
	*inv = job.inv
	return job.found, nil
}

func (b *inviteBatcher) work() {
	defer b.workers.Done()
	batch := make([]*inviteJob, 0, b.maxBatch)
	for {
		select {
		case job := <-b.jobs:
			batch = append(batch[:0], job)
		case <-b.closed:
			return
		}
	collect:
		for len(batch) < b.maxBatch {
			select {
			case job := <-b.jobs:
				batch = append(batch, job)
			default:
				break collect
			}
		}
		b.runBatch(batch)
	}
}

func (b *inviteBatcher) runBatch(batch []*inviteJob) {
	defer func() {
		// A panic must not take the worker (and every later invite) down:
		// the callers fall back to the slow path, which reports it properly.
		recover()
		for _, job := range batch {
			close(job.done)
		}
	}()
	picked := pickBatch(batch)
	b.hooks.inviteBatch(len(picked))
	// Not the callers' contexts (a batch serves many), but bounded: a batch
	// stuck behind a lock or a dead connection fails, and its callers take
	// the slow path under their own contexts.
	ctx, cancel := context.WithTimeout(context.Background(), batchTimeout)
	defer cancel()
	if err := b.run(ctx, b.now(), picked); err != nil {
		notFound(picked)
	}
}

// pickBatch returns the jobs one batch statement can settle. Rows are told
// apart by email, and the batch shares one expiry, so each email and each
// TTL is in a batch once; the others take the slow path.
func pickBatch(batch []*inviteJob) []*inviteJob {
	ttl := batch[0].p.TTL
	seen := make(map[string]struct{}, len(batch))
	picked := make([]*inviteJob, 0, len(batch))
	for _, job := range batch {
		if _, dup := seen[job.p.Email]; dup || job.p.TTL != ttl {
			continue
		}
		seen[job.p.Email] = struct{}{}
		picked = append(picked, job)
	}
	return picked
}

// notFound sends every job of a failed batch to the slow path.
func notFound(batch []*inviteJob) {
	for _, job := range batch {
		job.inv, job.found = Invitation{}, false
	}
}

// Close stops the workers after their current batch; later invites get errClosed.
func (b *inviteBatcher) Close() {
	b.close.Do(func() { close(b.closed) })
	b.workers.Wait()
}

// batchColumns are the per-invite inputs of the batch statements, in order.
func batchColumns(batch []*inviteJob) (workspaces, callers, emails, roles []string) {
	n := len(batch)
	workspaces, callers, emails, roles = make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	for i, job := range batch {
		workspaces[i], callers[i], emails[i], roles[i] = job.p.Workspace, job.p.Caller, job.p.Email, job.p.Role
	}
	return workspaces, callers, emails, roles
}

// deliver hands each returned row to the job with its email. A row without
// UpdatedBy (SQLite returns less, see returningSQLite) gets the job's caller,
// which is what the statement wrote.
func deliver(batch []*inviteJob, inv Invitation) {
	for _, job := range batch {
		if job.p.Email == inv.Email && !job.found {
			if inv.UpdatedBy == "" {
				inv.UpdatedBy = job.p.Caller
			}
			job.inv, job.found = inv, true
			return
		}
	}
}

// upsertBatch is the invite statement (also inviteOne's, for one row): from
// is the invites as a table j(ws, caller, email, role); expires, created and
// updated are the placeholders of the expiry and the time. The caller must
// be an admin of the workspace and the email not a member's; a pending
// invitation is refreshed (keeping its role) unless it has expired (then no
// row, and the slow path moves it to history). The WHERE is also what lets
// SQLite parse INSERT … SELECT … ON CONFLICT; the conflict target spells out
// the partial unique index idx_invitations_pending so PostgreSQL matches it.
//
// The member checks are index lookups whatever the workspace's size (issue
// 10: without that, an invite into a workspace of 20,000 members read all of
// them, per email). The test that x.email is not empty repeats the condition
// of the partial index on member email (idx_members_workspace_email), which
// neither planner infers from x.email = j.email (invited emails are never
// empty: Invite refuses those). OFFSET 0 keeps PostgreSQL from turning the
// checks into joins: it then planned the lookup with workspace_id alone, the
// email or sub applied as a filter, because its statistics (averages over
// all workspaces) made a workspace look cheap to read; as subplans each
// check is planned with all its columns bound. (LIMIT 1 only because SQLite
// accepts OFFSET only after a LIMIT; PostgreSQL drops it.)
// Rows are written in (workspace, email) order so that two batches holding
// some of the same emails lock them in the same order and cannot deadlock.
func upsertBatch(from, expires, created, updated, returning string) string {
	return `
INSERT INTO invitations (workspace_id, email, role, status, invited_by, expires_at, created_at, updated_at, created_by, updated_by)
SELECT w.id, j.email, j.role, 'pending', j.caller, ` + expires + `, ` + created + `, ` + updated + `, j.caller, j.caller
FROM ` + from + `
JOIN workspaces w ON w.name = j.ws
WHERE EXISTS (SELECT 1 FROM members m WHERE m.workspace_id = w.id AND m.sub = j.caller AND m.role = 'admin' LIMIT 1 OFFSET 0)
  AND NOT EXISTS (SELECT 1 FROM members x WHERE x.workspace_id = w.id AND x.email = j.email AND x.email <> '' LIMIT 1 OFFSET 0)
ORDER BY w.id, j.email
ON CONFLICT (workspace_id, email) WHERE status = 'pending'
DO UPDATE SET expires_at = excluded.expires_at, updated_at = excluded.updated_at, updated_by = excluded.updated_by
WHERE invitations.expires_at > excluded.updated_at
RETURNING ` + returning
}

// SQLite has no array parameters, so the batch is a VALUES list of
// (ws, caller, email, role) rows. To keep the statements prepared, batches
// are padded with NULL rows (which match no workspace, and queue nothing) to
// the next power of two: at most log2(maxInviteBatch)+1 statements of each
// kind are ever prepared. (A JSON array argument cost more: SQLite parsed it
// again for every column it extracted.) Placeholders are anonymous (?):
// the driver looks up every numbered one by name, a linear search each.
var inviteBatchSQLite, enqueueBatchSQLite [maxInviteBatchLog2 + 1]string

func init() {
	for i := range inviteBatchSQLite {
		n := 1 << i
		rows := make([]string, n)
		ids := make([]string, n)
		for r := range n {
			rows[r] = "(?, ?, ?, ?)"
			ids[r] = "(?)"
		}
		// Arguments: expiry, now, now, then the rows.
		inviteBatchSQLite[i] = upsertBatch(`(SELECT column1 AS ws, column2 AS caller, column3 AS email, column4 AS role
FROM (VALUES `+strings.Join(rows, ", ")+`)) j`, "?", "?", "?", returningSQLite)
		// Arguments: now three times, then the ids.
		enqueueBatchSQLite[i] = `INSERT INTO outbox_messages (invitation_id, status, next_attempt_at, created_at, updated_at)
SELECT column1, 'pending', ?, ?, ? FROM (VALUES ` + strings.Join(ids, ", ") + `) WHERE column1 IS NOT NULL
ON CONFLICT (invitation_id) WHERE status = 'pending'
DO UPDATE SET next_attempt_at = excluded.next_attempt_at, updated_at = excluded.updated_at`
	}
}

// returningSQLite leaves out what every row of the batch has in common:
// status pending, expiry, updated_at and updated_by are the statement's
// (inserted or refreshed alike), and created_at is now whenever it equals
// updated_at. Only the rare other rows (refreshed invitations created
// earlier) are read back whole. Turning SQLite's time text back into
// time.Time was a fifth of the writer's work per invite.
const returningSQLite = `id, workspace_id, email, role, invited_by, created_by, created_at = updated_at`

// readBackInvitationSQLite reads a refreshed invitation whole (see returningSQLite).
const readBackInvitationSQLite = "SELECT " + invitationColumns + " FROM invitations WHERE id = ?"

// paddedSize returns the index into the statement arrays for n rows.
func paddedSize(n int) int { return bits.Len(uint(n - 1)) }

// runSQLiteBatch runs a batch inside the group committer's transaction: one
// statement for the invitations, one for their emails.
func runSQLiteBatch(ctx context.Context, tx *gorm.DB, now time.Time, batch []*inviteJob) error {
	for len(batch) > maxInviteBatch {
		if err := runSQLiteBatch(ctx, tx, now, batch[:maxInviteBatch]); err != nil {
			return err
		}
		batch = batch[maxInviteBatch:]
	}
	size := paddedSize(len(batch))
	expires := now.Add(batch[0].p.TTL)
	args := make([]any, 3+4<<size)
	args[0], args[1], args[2] = expires, now, now
	for i, job := range batch {
		args[3+4*i], args[4+4*i], args[5+4*i], args[6+4*i] = job.p.Workspace, job.p.Caller, job.p.Email, job.p.Role
	}
	// Straight to the writer connection's statement cache: GORM's per-call
	// SQL rewriting and reflection cost more than SQLite's own work.
	r, err := tx.ConnPool.QueryContext(ctx, inviteBatchSQLite[size], args...)
	if err != nil {
		return fmt.Errorf("invite batch: %w", err)
	}
	ids := make([]int64, 0, len(batch))
	var older []int64 // refreshed invitations created before now
	for r.Next() {
		inv := Invitation{Status: InvitationPending, ExpiresAt: expires}
		var createdNow bool
		if err := r.Scan(&inv.ID, &inv.WorkspaceID, &inv.Email, &inv.Role, &inv.InvitedBy, &inv.CreatedBy, &createdNow); err != nil {
			r.Close()
			return fmt.Errorf("invite batch: %w", err)
		}
		ids = append(ids, inv.ID)
		if !createdNow {
			older = append(older, inv.ID)
			continue
		}
		inv.CreatedAt, inv.UpdatedAt = now, now
		deliver(batch, inv) // sets UpdatedBy: the job's caller, as the statement did
	}
	if err := errors.Join(r.Err(), r.Close()); err != nil {
		return fmt.Errorf("invite batch: %w", err)
	}
	for _, id := range older {
		var inv Invitation
		if err := scanInvitation(tx.ConnPool.QueryRowContext(ctx, readBackInvitationSQLite, id), &inv); err != nil {
			return fmt.Errorf("invite batch: read back invitation %d: %w", id, err)
		}
		deliver(batch, inv)
	}
	if len(ids) == 0 {
		return nil
	}
	size = paddedSize(len(ids))
	args = make([]any, 3+1<<size)
	args[0], args[1], args[2] = now, now, now
	for i, id := range ids {
		args[3+i] = id
	}
	if _, err := tx.ConnPool.ExecContext(ctx, enqueueBatchSQLite[size], args...); err != nil {
		return fmt.Errorf("queue invitation emails: %w", err)
	}
	return nil
}

// lockWorkspacesShared takes the batch's workspace rows in shared mode (in id
// order): invites run side by side, but not beside accept, removal or role
// changes, which take the row FOR UPDATE.
const lockWorkspacesShared = `SELECT 1 FROM workspaces WHERE name = ANY($1::text[]) ORDER BY id FOR SHARE`

// inviteBatchPostgres is the batch as one data-modifying CTE: invitations
// and their queued emails.
var inviteBatchPostgres = `
WITH inv AS (` + upsertBatch(`unnest($3::text[], $4::text[], $5::text[], $6::text[]) AS j(ws, caller, email, role)`, "$1", "$2", "$2", invitationColumns) + `
), queued AS (
  INSERT INTO outbox_messages (invitation_id, status, next_attempt_at, created_at, updated_at)
  SELECT id, 'pending', $2, $2, $2 FROM inv
  ON CONFLICT (invitation_id) WHERE status = 'pending'
  DO UPDATE SET next_attempt_at = excluded.next_attempt_at, updated_at = excluded.updated_at
)
SELECT * FROM inv`

// runPostgresBatch runs a batch in one round trip: lockWorkspacesShared and
// inviteBatchPostgres pipelined as one pgx batch. Before its single Sync the
// two statements form one implicit transaction (committed or rolled back
// together), and in READ COMMITTED the second takes its snapshot after the
// first got the locks, so it sees any accept or removal that held them: it
// cannot re-invite someone who just became a member.
func (s *Store) runPostgresBatch(ctx context.Context, now time.Time, batch []*inviteJob) error {
	sqlDB, err := s.write.DB()
	if err != nil {
		return err
	}
	conn, err := sqlDB.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	workspaces, callers, emails, roles := batchColumns(batch)
	return conn.Raw(func(driverConn any) error {
		pc := driverConn.(validatingConn).Conn()
		pb := &pgx.Batch{}
		pb.Queue(lockWorkspacesShared, workspaces)
		pb.Queue(inviteBatchPostgres, now.Add(batch[0].p.TTL), now, workspaces, callers, emails, roles)
		results := pc.SendBatch(ctx, pb)
		if _, err := results.Exec(); err != nil {
			results.Close()
			return fmt.Errorf("lock workspaces: %w", err)
		}
		rows, err := results.Query()
		if err != nil {
			results.Close()
			return fmt.Errorf("invite batch: %w", err)
		}
		var delivered []Invitation
		for rows.Next() {
			var inv Invitation
			if err := scanInvitation(rows, &inv); err != nil {
				rows.Close()
				results.Close()
				return fmt.Errorf("invite batch: %w", err)
			}
			delivered = append(delivered, inv)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			results.Close()
			return fmt.Errorf("invite batch: %w", err)
		}
		// The Sync commits both statements; only then are the rows real.
		if err := results.Close(); err != nil {
			return fmt.Errorf("invite batch commit: %w", err)
		}
		for _, inv := range delivered {
			deliver(batch, inv)
		}
		return nil
	})
}
