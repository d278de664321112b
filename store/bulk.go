package store

import (
	"context"
	"sync"
	"time"

	"gorm.io/gorm"
)

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
// The rows run as one invite batch (batch.go), the same statement the
// single invites' batches run: on SQLite in one group-committed transaction
// (statements of maxInviteBatch rows), on PostgreSQL as one statement with
// array parameters, so 1,000 rows cost about one batch, not 1,000 invites.
// Rows the batch leaves (a member's email, one the domain policy refuses,
// an expired pending invitation, a caller who is not an admin) take
// Invite's slow path, which decides them with the full checks.
func (s *Store) InviteMany(ctx context.Context, ps []InviteParams) []InviteResult {
	ctx, cancel := detach(ctx)
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
		s.runBulkBatch(ctx, jobs)
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

// runBulkBatch runs jobs as one batch through settle, like the batchers do
// (a failed or panicking batch sends its rows to the slow path). Jobs it
// cannot settle in one statement (pickBatch: an email twice) are left not
// found.
func (s *Store) runBulkBatch(ctx context.Context, jobs []*inviteJob) {
	var hooks Hooks
	switch b := s.invites.(type) {
	case *sqliteInvites:
		hooks = b.hooks
	case *postgresInvites:
		hooks = b.hooks
	}
	if s.committer != nil {
		// Never cancelled once running (see commit.Committer): an
		// interrupted statement could roll back the shared transaction.
		jobCtx := context.WithoutCancel(ctx)
		err := s.committer.Do(ctx, func(tx *gorm.DB) error {
			return settle(jobs, hooks, s.log, func(picked []*inviteJob) error {
				return runSQLiteBatch(jobCtx, tx, nil, s.now(), picked)
			})
		})
		if err != nil {
			// The batch's own failure already sent its rows to the slow
			// path; a failed commit (or fsync) unwrote what it found too.
			notFound(jobs)
		}
		return
	}
	bctx, cancel := context.WithTimeout(ctx, time.Duration(batchTimeout.Load()))
	defer cancel()
	_ = settle(jobs, hooks, s.log, func(picked []*inviteJob) error {
		return s.runPostgresBatch(bctx, s.now(), picked)
	})
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
