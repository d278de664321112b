package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/bits"
	"strings"
	"time"

	"github.com/membership-api/controlplane/store/internal/commit"
	"gorm.io/gorm"
)

// sqliteInvites batches invites inside the group committer's transactions:
// each invite is a job of one group (commit.Group), so the invites a
// transaction takes, all those queued beside each other, run as one batch
// statement; the writer's pipelining (internal/commit) decides how many.
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

// close does nothing: the invites end with the committer (Store.Close).
func (b *sqliteInvites) close() {}

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
FROM (VALUES `+strings.Join(rows, ", ")+`)) j`, "", "?", "?", "?", returningSQLite)
		// Arguments: now three times, then the ids.
		enqueueBatchSQLite[i] = enqueueEmails(`SELECT column1, 'pending', ?, ?, ? FROM (VALUES ` + strings.Join(ids, ", ") + `) WHERE column1 IS NOT NULL`)
	}
}

// returningSQLite leaves out what every row of the batch has in common:
// status pending, expiry, updated_at and updated_by are the statement's
// (inserted or refreshed alike), and created_at is now whenever it equals
// updated_at; a row created now also has its job's role and caller (as
// inviter and creator). Only the rare other rows (refreshed invitations
// created earlier) are read back whole. Turning SQLite's time text back
// into time.Time was a fifth of the writer's work per invite; RETURNING
// costs per column and row.
const returningSQLite = `id, workspace_id, email, created_at = updated_at`

// readBackInvitationSQLite reads a refreshed invitation whole (see returningSQLite).
const readBackInvitationSQLite = "SELECT " + invitationColumns + " FROM invitations WHERE id = ?"

// paddedSize returns the index into the statement arrays for n rows.
func paddedSize(n int) int { return bits.Len(uint(n - 1)) }

// runSQLiteBatch runs a batch inside the group committer's transaction: one
// statement for the invitations, one for their emails.
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
