package store

import (
	"context"
	"sync"

	"gorm.io/gorm"
)

// Invite creates a pending invitation, or refreshes the expiry of the one
// already pending for that email (keeping its role), and queues its email,
// all in one transaction that also checks the caller is an admin. A pending
// invitation that has already expired is moved to history first, so the
// re-invite starts a fresh one. The database's partial unique index, not a
// read-then-write check, guarantees at most one pending row per email.
// Returns ErrNotFound if the workspace does not exist or the caller is not a
// member, ErrForbidden if the caller is not an admin (not_admin) or the
// workspace's email-domain policy refuses the email (domain_not_allowed),
// ErrConflict if the email already belongs to a member, ErrInvalid for an
// empty email.
//
// The rules are in invite_rules.go; the invite first goes to the batcher
// (invite_batch.go), which settles the common case together with the
// invites beside it, and otherwise takes the slow path (inviteSlow), which
// decides with every check in Go.
func (s *Store) Invite(ctx context.Context, p InviteParams) (Invitation, error) {
	// Once asked for, an invite runs to its end even if the caller leaves:
	// its batch and its slow path are one write (see detach).
	ctx, cancel := s.detach(ctx)
	defer cancel()
	if err := ctx.Err(); err != nil {
		return Invitation{}, err
	}
	p, err := p.prepare()
	p.actor = ActorFrom(ctx)
	if err != nil {
		return Invitation{}, err
	}
	var inv Invitation
	found, err := s.invites.invite(ctx, p, &inv)
	if err != nil {
		return Invitation{}, err
	}
	if found {
		return inv, nil
	}
	err = s.inTx(ctx, func(tx *gorm.DB) error { return s.inviteSlow(tx, p, s.now(), &inv) })
	if err != nil {
		return Invitation{}, err
	}
	return inv, nil
}

// MaxBulkInvites bounds one InviteMany (and the API's bulk operation).
const MaxBulkInvites = 1000

// InviteResult is one row of InviteMany: its invitation, or the error
// Invite would have returned for it.
type InviteResult struct {
	Invitation Invitation
	Err        error
}

// bulkSlowWorkers bounds the rows of one InviteMany that take the slow path
// at once: enough for SQLite's writer to commit them in a few groups (and
// PostgreSQL to run them side by side), few enough to leave the pool to
// other requests.
const bulkSlowWorkers = 8

// InviteMany invites every row of ps at once and answers each as Invite
// would have, in order (so one bad row never fails the others). Rows are
// expected to share a workspace, caller and TTL (the API's bulk operation);
// an email twice is settled once by the batch and again by the slow path,
// as two single invites would be.
//
// The rows run as one invite batch (inviteBatcher.inviteAll), the same
// statement the single invites' batches run: on SQLite in one
// group-committed transaction (statements of maxInviteBatch rows), on
// PostgreSQL as one statement with array parameters, so 1,000 rows cost
// about one batch, not 1,000 invites. Rows the batch leaves (a member's
// email, one the domain policy refuses, an expired pending invitation, a
// caller who is not an admin) take Invite's slow path, which decides them
// with the full checks.
func (s *Store) InviteMany(ctx context.Context, ps []InviteParams) []InviteResult {
	ctx, cancel := s.detach(ctx)
	defer cancel()
	results := make([]InviteResult, len(ps))
	jobs := make([]*inviteJob, 0, len(ps))
	rowOf := make(map[*inviteJob]int, len(ps))
	for i, p := range ps {
		if err := ctx.Err(); err != nil {
			results[i].Err = err
			continue
		}
		p, err := p.prepare()
		if err != nil {
			results[i].Err = err
			continue
		}
		p.actor = ActorFrom(ctx)
		job := &inviteJob{p: p}
		jobs = append(jobs, job)
		rowOf[job] = i
	}
	if len(jobs) > 0 {
		s.invites.inviteAll(ctx, jobs)
	}
	var slow []*inviteJob
	for _, job := range jobs {
		if job.found {
			results[rowOf[job]].Invitation = job.inv
		} else {
			slow = append(slow, job)
		}
	}
	s.inviteSlowly(ctx, slow, func(job *inviteJob, inv Invitation, err error) {
		results[rowOf[job]] = InviteResult{Invitation: inv, Err: err}
	})
	return results
}

// inviteSlowly runs Invite's slow path for each job, a few at a time, and
// hands each outcome to done (called from several goroutines, each with a
// job of its own).
func (s *Store) inviteSlowly(ctx context.Context, jobs []*inviteJob, done func(job *inviteJob, inv Invitation, err error)) {
	work := make(chan *inviteJob)
	var wg sync.WaitGroup
	for range min(bulkSlowWorkers, len(jobs)) {
		wg.Go(func() {
			for job := range work {
				var inv Invitation
				err := s.inTx(ctx, func(tx *gorm.DB) error { return s.inviteSlow(tx, job.p, s.now(), &inv) })
				if err != nil {
					inv = Invitation{}
				}
				done(job, inv, err)
			}
		})
	}
	for _, job := range jobs {
		work <- job
	}
	close(work)
	wg.Wait()
}
