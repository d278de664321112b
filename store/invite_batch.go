package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/bits"
	"runtime/debug"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/membership-api/controlplane/store/internal/commit"
	"gorm.io/gorm"
)

// The invite batcher settles the common case of concurrent invites
// together: one multi-row statement and one commit for a whole batch,
// instead of a statement, a savepoint and a share of a commit each
// (SQLite), or a transaction, a round trip and a WAL flush each
// (PostgreSQL). Per invite that is the difference between the database's
// per-statement overhead and its per-row cost, which is what let the invite
// path scale.
//
// There is no waiting window: a batch is the first invite that comes and
// those already waiting beside it. A lone invite is a batch of one. Every
// caller is answered only after the commit that holds its rows. What the
// batch statement does not return (see upsertBatch: unknown workspace,
// caller not an admin, a member's email, an email the domain policy
// refuses, an expired pending invitation, an email twice in one batch) or
// any batch that fails is answered "not found" and the caller takes the
// slow path (inviteSlow) on its own, which decides with the full checks;
// so a batch changes cost, never outcomes.
//
// This file holds how a batch is gathered and run on each database; what
// it writes is invite_rules.go's (the statement, the event's fields); the
// transactions are internal/commit's: on SQLite every invite is a job of
// one commit.Group of the group committer, on PostgreSQL a job of a
// commit.Batcher whose workers each run a batch on a connection of their
// own. Both go through settle.

// inviteBatcher is the batcher of one database.
type inviteBatcher interface {
	// invite submits p and waits for its batch. found is false when the
	// slow path must decide; err is set only when the invite cannot be
	// answered at all (the store is closed, the transaction failed).
	invite(ctx context.Context, p InviteParams, inv *Invitation) (found bool, err error)
	// inviteAll runs jobs (InviteMany's rows) as one batch of their own;
	// the jobs it leaves not found take the slow path.
	inviteAll(ctx context.Context, jobs []*inviteJob)
	// close stops taking invites; later ones get commit.ErrClosed.
	close()
}

// maxInviteBatch bounds the invites in one batch statement.
const (
	maxInviteBatchLog2 = 7
	maxInviteBatch     = 1 << maxInviteBatchLog2
)

// inviteJob is one invite waiting for its batch, and what the batch found.
type inviteJob struct {
	p     InviteParams
	inv   Invitation
	found bool
	done  chan struct{} // PostgreSQL: closed once the batch is over
}

// settle runs one batch: it picks the invites one statement can settle and
// runs them with run. A failure (an error, or a panic, which is a bug and
// is logged) sends every one of them to the slow path; its error is
// returned.
func settle(batch []*inviteJob, hooks Hooks, log *slog.Logger, run func(picked []*inviteJob) error) (err error) {
	var picked []*inviteJob
	defer func() {
		if r := recover(); r != nil {
			log.Error("panic in an invite batch; its invites take the slow path", "panic", r, "stack", string(debug.Stack()))
			err = fmt.Errorf("panic in invite batch: %v", r)
		}
		if err != nil {
			notFound(picked)
		}
	}()
	picked = pickBatch(batch)
	hooks.inviteBatch(len(picked))
	return run(picked)
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

// deliver hands each returned row to the job with its email. A row without
// UpdatedBy (SQLite returns less, see returningSQLite: a row created now)
// gets the job's role and caller, which is what the statement wrote.
func deliver(batch []*inviteJob, inv Invitation) {
	for _, job := range batch {
		if job.p.Email == inv.Email && !job.found {
			if inv.UpdatedBy == "" {
				inv.UpdatedBy, inv.CreatedBy, inv.InvitedBy, inv.Role = job.p.Caller, job.p.Caller, job.p.Caller, job.p.Role
			}
			job.inv, job.found = inv, true
			return
		}
	}
}

// rowScanner is a *sql.Row, *sql.Rows or pgx.Rows.
type rowScanner interface{ Scan(dest ...any) error }

// scanInvitation reads a row of invitationColumns.
func scanInvitation(row rowScanner, inv *Invitation) error {
	return row.Scan(&inv.ID, &inv.WorkspaceID, &inv.Email, &inv.Role, &inv.Status, &inv.InvitedBy,
		&inv.ExpiresAt, &inv.CreatedAt, &inv.UpdatedAt, &inv.CreatedBy, &inv.UpdatedBy)
}

// auditColumns are the columns the batch statements write, in order.
const auditColumns = `workspace_id, workspace, at, actor_kind, actor_sub, action, target_type, target_id, before, after, request_id`

// sqliteInvites makes each invite a job of one group (commit.Group), so
// the invites a transaction takes, all those queued beside each other, run
// as one batch statement; the writer's pipelining (internal/commit)
// decides how many.
type sqliteInvites struct {
	committer *commit.Committer
	now       func() time.Time
	hooks     Hooks
	log       *slog.Logger
	// run is runSQLiteBatch; tests put a failing or panicking one in its place.
	run func(ctx context.Context, tx *gorm.DB, memo *commit.Memo, now time.Time, batch []*inviteJob) error
}

// sqliteInviteJob is an invite and its job for the committer, allocated
// together.
type sqliteInviteJob struct {
	inviteJob
	tx commit.Job
}

func (b *sqliteInvites) invite(ctx context.Context, p InviteParams, inv *Invitation) (found bool, err error) {
	job := &sqliteInviteJob{inviteJob: inviteJob{p: p}}
	job.tx = commit.Job{Ctx: ctx, Group: b, Item: &job.inviteJob}
	if err := b.committer.DoGrouped(&job.tx); err != nil {
		return false, err
	}
	*inv = job.inv
	return job.found, nil
}

// RunGroup is called by the writer with the invites of one transaction.
func (b *sqliteInvites) RunGroup(tx *gorm.DB, memo *commit.Memo, jobs []*commit.Job) error {
	batch := make([]*inviteJob, len(jobs))
	for i, job := range jobs {
		batch[i] = job.Item.(*inviteJob)
	}
	return settle(batch, b.hooks, b.log, func(picked []*inviteJob) error {
		return b.run(tx.Statement.Context, tx, memo, b.now(), picked)
	})
}

// inviteAll runs jobs as one plain job of the committer (statements of
// maxInviteBatch rows in one transaction).
func (b *sqliteInvites) inviteAll(ctx context.Context, jobs []*inviteJob) {
	// Never cancelled once running (see commit.Committer): an interrupted
	// statement could roll back the shared transaction.
	jobCtx := context.WithoutCancel(ctx)
	err := b.committer.Do(ctx, func(tx *gorm.DB) error {
		return settle(jobs, b.hooks, b.log, func(picked []*inviteJob) error {
			return b.run(jobCtx, tx, nil, b.now(), picked)
		})
	})
	if err != nil {
		// The batch's own failure already sent its rows to the slow
		// path; a failed commit (or fsync) unwrote what it found too.
		notFound(jobs)
	}
}

// close does nothing: the invites end with the committer (Store.Close).
func (b *sqliteInvites) close() {}

// SQLite has no array parameters, so the batch is a VALUES list of
// (ws, caller, email, role) rows. To keep the statements prepared, batches
// are padded with NULL rows (which match no workspace, and queue nothing) to
// the next power of two: at most log2(maxInviteBatch)+1 statements of each
// kind are ever prepared. (A JSON array argument cost more: SQLite parsed it
// again for every column it extracted.) Placeholders are anonymous (?):
// the driver looks up every numbered one by name, a linear search each.
//
// The events' insert (auditBatchSQLite) has one row per event of the
// invites the batch settled: the time once, then per row auditRowSQLite's
// columns of inviteEvent. The rows of one statement get consecutive ids on
// SQLite's single writer (the last one and their count are the statement's
// result), which is the range enqueueWebhooksRange then reads: one index
// probe per event for a workspace without webhooks. (Returning each id and
// an endpoint check instead cost more than the second statement.)
var inviteBatchSQLite, enqueueBatchSQLite, auditBatchSQLite [maxInviteBatchLog2 + 1]string

func init() {
	for i := range inviteBatchSQLite {
		n := 1 << i
		rows := make([]string, n)
		ids := make([]string, n)
		events := make([]string, n)
		for r := range n {
			rows[r] = "(?, ?, ?, ?)"
			ids[r] = "(?)"
			events[r] = "(?" + strings.Repeat(", ?", auditRowSQLite-1) + ")"
		}
		// Arguments: expiry, now, now, then the rows.
		inviteBatchSQLite[i] = upsertBatch(`(SELECT column1 AS ws, column2 AS caller, column3 AS email, column4 AS role
FROM (VALUES `+strings.Join(rows, ", ")+`)) j`, "", "?", "?", "?", returningSQLite)
		// Arguments: now three times, then the ids.
		enqueueBatchSQLite[i] = enqueueEmails(`SELECT column1, 'pending', ?, ?, ? FROM (VALUES ` + strings.Join(ids, ", ") + `) WHERE column1 IS NOT NULL`)
		// Arguments: the events' time, then auditRowSQLite columns per event.
		auditBatchSQLite[i] = `INSERT INTO audit_events (` + auditColumns + `)
SELECT column1, column2, ?, column3, column4, column5, '` + TargetInvitation + `', column6, '', column7, column8
FROM (VALUES ` + strings.Join(events, ", ") + `) WHERE column1 IS NOT NULL`
	}
}

// auditRowSQLite is how many columns of an event auditBatchSQLite takes
// per row: all but its time (shared by the batch) and the two every invite
// event has alike (TargetInvitation, no before), which the statement
// writes as literals: as parameters they cost an allocation per invite
// (BenchmarkSQLiteInviteBatch: 1,269 allocations per batch of 64 instead
// of 1,205).
const auditRowSQLite = 8

// returningSQLite leaves out what every row of the batch has in common:
// status pending, expiry, updated_at and updated_by are the statement's
// (inserted or refreshed alike), and created_at is now whenever it equals
// updated_at (createdNowSQL); a row created now also has its job's role and
// caller (as inviter and creator). Only the rare other rows (refreshed
// invitations created earlier) are read back whole. Turning SQLite's time
// text back into time.Time was a fifth of the writer's work per invite;
// RETURNING costs per column and row.
const returningSQLite = `id, workspace_id, email, ` + createdNowSQL

// readBackInvitationSQLite reads a refreshed invitation whole (see returningSQLite).
const readBackInvitationSQLite = "SELECT " + invitationColumns + " FROM invitations WHERE id = ?"

// enqueueWebhooksRange queues the webhook messages of the events whose ids
// lie in a range: on SQLite's single writer, the events one statement just
// wrote (SQLite only).
var enqueueWebhooksRange = enqueueWebhooksSQLite + "a.id BETWEEN ? AND ?"

// paddedSize returns the index into the statement arrays for n rows.
func paddedSize(n int) int { return bits.Len(uint(n - 1)) }

// runSQLiteBatch runs a batch inside the group committer's transaction: one
// statement for the invitations, one for their emails, one for their
// events (and one for the events' webhook messages, unless memo knows that
// no endpoint is enabled). memo is the writer transaction's, or nil.
func runSQLiteBatch(ctx context.Context, tx *gorm.DB, memo *commit.Memo, now time.Time, batch []*inviteJob) error {
	for len(batch) > maxInviteBatch {
		if err := runSQLiteBatch(ctx, tx, memo, now, batch[:maxInviteBatch]); err != nil {
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
		if err := r.Scan(&inv.ID, &inv.WorkspaceID, &inv.Email, &createdNow); err != nil {
			r.Close() //nolint:errcheck // already failing: the first error is the one to report
			return fmt.Errorf("invite batch: %w", err)
		}
		ids = append(ids, inv.ID)
		if !createdNow {
			older = append(older, inv.ID)
			continue
		}
		inv.CreatedAt, inv.UpdatedAt = now, now
		deliver(batch, inv) // sets role and callers: the job's, as the statement wrote them
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
	return auditSQLiteBatch(ctx, tx, memo, now, batch)
}

// auditSQLiteBatch writes the events (inviteEvent) of the invites a SQLite
// batch settled (their jobs are found), then queues their webhook messages.
func auditSQLiteBatch(ctx context.Context, tx *gorm.DB, memo *commit.Memo, now time.Time, batch []*inviteJob) error {
	const cols = auditRowSQLite
	n := 0
	for _, job := range batch {
		if job.found {
			n++
		}
	}
	if n == 0 {
		return nil
	}
	size := paddedSize(n)
	args := make([]any, 1+cols<<size)
	args[0] = now
	texts := afterTexts{}
	i := 1
	for _, job := range batch {
		if !job.found {
			continue
		}
		ev := inviteEvent(job.p, job.inv, now, texts.of(job.inv.Role, job.inv.ExpiresAt))
		args[i], args[i+1], args[i+2], args[i+3] = ev.WorkspaceID, ev.Workspace, ev.ActorKind, ev.ActorSub
		args[i+4], args[i+5], args[i+6], args[i+7] = ev.Action, ev.TargetID, ev.After, ev.RequestID
		i += cols
	}
	res, err := tx.ConnPool.ExecContext(ctx, auditBatchSQLite[size], args...)
	if err != nil {
		return fmt.Errorf("audit invite batch: %w", err)
	}
	last, err1 := res.LastInsertId()
	written, err2 := res.RowsAffected()
	if err := errors.Join(err1, err2); err != nil {
		return fmt.Errorf("audit invite batch: %w", err)
	}
	first := last - written + 1
	if memo != nil {
		enabled, err := anyEnabledWebhook(ctx, tx, memo)
		if err != nil || !enabled {
			return err
		}
	}
	if _, err := tx.ConnPool.ExecContext(ctx, enqueueWebhooksRange, webhookIDPrefix(now), now, now, now, first, last); err != nil {
		return fmt.Errorf("queue webhook messages: %w", err)
	}
	return nil
}

// anyEnabledWebhookSQL tells whether any webhook endpoint is enabled.
const anyEnabledWebhookSQL = `SELECT EXISTS (SELECT 1 FROM webhook_endpoints WHERE disabled_at IS NULL)`

// webhooksEnabled is what an invite batch keeps in its writer
// transaction's memo (commit.Memo): whether any webhook endpoint is enabled.
type webhooksEnabled bool

// anyEnabledWebhook answers, once per writer transaction, whether any
// enabled webhook endpoint exists; when none does, the invite batches of
// that transaction skip their webhook statement. The writer applies a
// transaction's invites in steps of up to 16, each with its own
// statements, and the webhook statement cost about 7% of the SQLite invite
// path's throughput under make bench (docs/contributing/benchmarks.md); this probe
// costs one statement per transaction instead. The answer is kept in the
// transaction's memo, which the writer empties after any job that is not
// an invite batch (it may have added an endpoint).
func anyEnabledWebhook(ctx context.Context, tx *gorm.DB, memo *commit.Memo) (bool, error) {
	if known, ok := memo.Load().(webhooksEnabled); ok {
		return bool(known), nil
	}
	var enabled bool
	if err := tx.ConnPool.QueryRowContext(ctx, anyEnabledWebhookSQL).Scan(&enabled); err != nil {
		return false, fmt.Errorf("check for webhook endpoints: %w", err)
	}
	memo.Store(webhooksEnabled(enabled))
	return enabled, nil
}

// postgresInvites runs the batches on the workers of a commit.Batcher,
// each batch on its own connection in one round trip (runPostgresBatch).
type postgresInvites struct {
	batcher *commit.Batcher[*inviteJob]
	now     func() time.Time
	hooks   Hooks
	log     *slog.Logger
	// timeout bounds one batch (lock waits included); tests shorten it.
	timeout time.Duration
	// run is Store.runPostgresBatch; tests put a failing one in its place
	// before the first invite.
	run func(ctx context.Context, now time.Time, batch []*inviteJob) error
}

// defaultBatchTimeout is postgresInvites.timeout.
const defaultBatchTimeout = 10 * time.Second

func newPostgresInvites(workers, maxBatch int, now func() time.Time, hooks Hooks, log *slog.Logger,
	run func(ctx context.Context, now time.Time, batch []*inviteJob) error) *postgresInvites {
	b := &postgresInvites{now: now, hooks: hooks, log: log, timeout: defaultBatchTimeout, run: run}
	b.batcher = commit.NewBatcher(workers, maxBatch, b.runBatch)
	return b
}

func (b *postgresInvites) invite(ctx context.Context, p InviteParams, inv *Invitation) (found bool, err error) {
	job := &inviteJob{p: p, done: make(chan struct{})}
	if err := b.batcher.Submit(ctx, job); err != nil {
		return false, err
	}
	// Once taken, the batch runs to its commit whatever this caller does:
	// waiting for it keeps the answer true to what was stored.
	<-job.done
	*inv = job.inv
	return job.found, nil
}

func (b *postgresInvites) runBatch(batch []*inviteJob) {
	defer func() {
		for _, job := range batch {
			close(job.done)
		}
	}()
	// Not the callers' contexts (a batch serves many), but bounded: a batch
	// stuck behind a lock or a dead connection fails, and its callers take
	// the slow path under their own contexts.
	ctx, cancel := context.WithTimeout(context.Background(), b.timeout)
	defer cancel()
	now := b.now()
	// On an error settle has already sent the batch's invites to the slow
	// path, which answers their callers: nothing is left to do with it.
	_ = settle(batch, b.hooks, b.log, func(picked []*inviteJob) error { return b.run(ctx, now, picked) })
}

// inviteAll runs jobs as one batch on the caller's goroutine, under the
// caller's context and the batch timeout.
func (b *postgresInvites) inviteAll(ctx context.Context, jobs []*inviteJob) {
	bctx, cancel := context.WithTimeout(ctx, b.timeout)
	defer cancel()
	_ = settle(jobs, b.hooks, b.log, func(picked []*inviteJob) error { return b.run(bctx, b.now(), picked) })
}

// close stops the workers after their current batch; later invites get commit.ErrClosed.
func (b *postgresInvites) close() { b.batcher.Close() }

// lockWorkspacesShared takes the batch's workspace rows in shared mode (in id
// order): invites run side by side, but not beside accept, removal or role
// changes, which take the row FOR UPDATE.
const lockWorkspacesShared = `SELECT 1 FROM workspaces WHERE name = ANY($1::text[]) ORDER BY id FOR SHARE`

// lockOrder writes a PostgreSQL batch's rows in (workspace, email) order, so
// that two batches holding some of the same emails lock them in the same
// order and cannot deadlock. SQLite's batches, on its single writer, have
// nothing to deadlock with and skip the sort.
const lockOrder = "ORDER BY w.id, j.email"

// inviteBatchPostgres is the batch as one data-modifying CTE: invitations,
// their queued emails, their events and the events' webhook messages.
// Arguments: $1 expiry, $2 now, then per invite (postgresBatchArgs) $3
// workspace, $4 caller, $5 email, $6 role; per invite the fields of its
// event known before its row (inviteEventOf; its workspace and target are
// the invite's, $3 and $5) $7 actor kind, $8 actor sub, $9 request ID; and
// $10 roles with $11 their after texts (inviteAfters); $12 the webhook-id
// prefix (webhookIDPrefix, as enqueueWebhooksSQL). Events join their invites by email, which a batch holds
// once. A row whose role has no after text (none the API makes) gets a
// NULL after, which audit_events refuses: the batch fails and its invites
// take the slow path, whose events know every role.
var inviteBatchPostgres = `
WITH inv AS (` + upsertBatch(`unnest($3::text[], $4::text[], $5::text[], $6::text[]) AS j(ws, caller, email, role)`, lockOrder, "$1", "$2", "$2", invitationColumns) + `
), queued AS (
` + enqueueEmails(`SELECT id, 'pending', $2, $2, $2 FROM inv`) + `
), audited AS (
INSERT INTO audit_events (` + auditColumns + `)
SELECT inv.workspace_id, a.ws, $2, a.kind, a.sub, ` + inviteActionSQL + `, '` + TargetInvitation + `', a.email, '', af.after, a.rid
FROM inv JOIN unnest($5::text[], $3::text[], $7::text[], $8::text[], $9::text[]) AS a(email, ws, kind, sub, rid) ON a.email = inv.email
LEFT JOIN unnest($10::text[], $11::text[]) AS af(role, after) ON af.role = inv.role
RETURNING id, workspace_id, action
), hooked AS (
INSERT INTO webhook_messages (webhook_id, endpoint_id, event_id, event_type, payload, status, attempts, next_attempt_at, created_at, updated_at)
SELECT $12::text || ` + randomHexPostgres + `, e.id, au.id, au.action, '', 'pending', 0, $2, $2, $2
FROM audited au JOIN webhook_endpoints e ON e.workspace_id = au.workspace_id
WHERE e.disabled_at IS NULL AND (e.event_types = '' OR e.event_types LIKE '%,' || au.action || ',%')
)
SELECT * FROM inv`

// postgresBatchArgs are inviteBatchPostgres's arguments.
func postgresBatchArgs(batch []*inviteJob, now time.Time) []any {
	n := len(batch)
	expires := now.Add(batch[0].p.TTL)
	workspaces, callers, emails, roles := make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	kinds, subs, requestIDs := make([]string, n), make([]string, n), make([]string, n)
	for i, job := range batch {
		workspaces[i], callers[i], emails[i], roles[i] = job.p.Workspace, job.p.Caller, job.p.Email, job.p.Role
		ev := inviteEventOf(job.p, now)
		kinds[i], subs[i], requestIDs[i] = ev.ActorKind, ev.ActorSub, ev.RequestID
	}
	afterRoles, afters := inviteAfters(expires, roles)
	return []any{expires, now, workspaces, callers, emails, roles, kinds, subs, requestIDs, afterRoles, afters, webhookIDPrefix(now)}
}

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
	defer conn.Close() //nolint:errcheck // hands the connection back to the pool; the batch's outcome is Raw's error
	args := postgresBatchArgs(batch, now)
	return conn.Raw(func(driverConn any) error {
		pc := driverConn.(validatingConn).Conn()
		pb := &pgx.Batch{}
		pb.Queue(lockWorkspacesShared, args[2])
		pb.Queue(inviteBatchPostgres, args...)
		results := pc.SendBatch(ctx, pb)
		if _, err := results.Exec(); err != nil {
			results.Close() //nolint:errcheck // already failing: the first error is the one to report
			return fmt.Errorf("lock workspaces: %w", err)
		}
		rows, err := results.Query()
		if err != nil {
			results.Close() //nolint:errcheck // already failing: the first error is the one to report
			return fmt.Errorf("invite batch: %w", err)
		}
		var delivered []Invitation
		for rows.Next() {
			var inv Invitation
			if err := scanInvitation(rows, &inv); err != nil {
				rows.Close()
				results.Close() //nolint:errcheck // already failing: the first error is the one to report
				return fmt.Errorf("invite batch: %w", err)
			}
			delivered = append(delivered, inv)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			results.Close() //nolint:errcheck // already failing: the first error is the one to report
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
