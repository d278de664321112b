package store

import (
	"context"
	"fmt"
	"log/slog"
	"runtime/debug"
)

// inviteBatcher settles the common case of concurrent invites together: one
// multi-row statement and one commit for a whole batch, instead of a
// statement, a savepoint and a share of a commit each (SQLite), or a
// transaction, a round trip and a WAL flush each (PostgreSQL). Per invite
// that is the difference between the database's per-statement overhead and
// its per-row cost, which is what let the invite path scale.
//
// There is no waiting window: a batch is the first invite that comes and
// those already waiting beside it. A lone invite is a batch of one. Every
// caller is answered only after the commit that holds its rows. What the
// batch statement does not return (see upsertBatch: unknown workspace,
// caller not an admin, a member's email, an expired pending invitation, an
// email twice in one batch) or any batch that fails is answered "not found"
// and the caller takes the slow path (inviteSlow) on its own, which decides
// with the full checks; so a batch changes cost, never outcomes.
//
// sqliteInvites (batch_sqlite.go) runs the batches inside the group
// committer's transactions; postgresInvites (batch_postgres.go) on workers
// of its own. Both go through settle.
type inviteBatcher interface {
	// invite submits p and waits for its batch. found is false when the
	// slow path must decide; err is set only when the invite cannot be
	// answered at all (the store is closed, the transaction failed).
	invite(ctx context.Context, p InviteParams, inv *Invitation) (found bool, err error)
	// close stops taking invites; later ones get commit.ErrClosed.
	close()
}

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
