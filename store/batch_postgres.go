package store

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/membership-api/controlplane/store/internal/commit"
)

// postgresInvites runs the batches on the workers of a commit.Batcher,
// each batch on its own connection.
type postgresInvites struct {
	batcher *commit.Batcher[*inviteJob]
	now     func() time.Time
	hooks   Hooks
	log     *slog.Logger
	// run is Store.runPostgresBatch; tests put a failing one in its place
	// before the first invite.
	run func(ctx context.Context, now time.Time, batch []*inviteJob) error
}

// batchTimeout bounds one PostgreSQL batch (lock waits included), in
// nanoseconds: 10 s. A variable (atomic) for tests only.
var batchTimeout atomic.Int64

func init() { batchTimeout.Store(int64(10 * time.Second)) }

func newPostgresInvites(workers, maxBatch int, now func() time.Time, hooks Hooks, log *slog.Logger,
	run func(ctx context.Context, now time.Time, batch []*inviteJob) error) *postgresInvites {
	b := &postgresInvites{now: now, hooks: hooks, log: log, run: run}
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
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(batchTimeout.Load()))
	defer cancel()
	now := b.now()
	// On an error settle has already sent the batch's invites to the slow
	// path, which answers their callers: nothing is left to do with it.
	_ = settle(batch, b.hooks, b.log, func(picked []*inviteJob) error { return b.run(ctx, now, picked) })
}

// close stops the workers after their current batch; later invites get commit.ErrClosed.
func (b *postgresInvites) close() { b.batcher.Close() }

// batchColumns are the per-invite inputs of the batch statement, in order.
func batchColumns(batch []*inviteJob) (workspaces, callers, emails, roles []string) {
	n := len(batch)
	workspaces, callers, emails, roles = make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	for i, job := range batch {
		workspaces[i], callers[i], emails[i], roles[i] = job.p.Workspace, job.p.Caller, job.p.Email, job.p.Role
	}
	return workspaces, callers, emails, roles
}

// lockWorkspacesShared takes the batch's workspace rows in shared mode (in id
// order): invites run side by side, but not beside accept, removal or role
// changes, which take the row FOR UPDATE.
const lockWorkspacesShared = `SELECT 1 FROM workspaces WHERE name = ANY($1::text[]) ORDER BY id FOR SHARE`

// inviteBatchPostgres is the batch as one data-modifying CTE: invitations
// and their queued emails.
var inviteBatchPostgres = `
WITH inv AS (` + upsertBatch(`unnest($3::text[], $4::text[], $5::text[], $6::text[]) AS j(ws, caller, email, role)`, lockOrder, "$1", "$2", "$2", invitationColumns) + `
), queued AS (
` + enqueueEmails(`SELECT id, 'pending', $2, $2, $2 FROM inv`) + `
)` + auditBatchPostgres + `
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
	defer conn.Close() //nolint:errcheck // hands the connection back to the pool; the batch's outcome is Raw's error
	workspaces, callers, emails, roles := batchColumns(batch)
	kinds, subs, requestIDs := batchActors(batch)
	expires := now.Add(batch[0].p.TTL)
	return conn.Raw(func(driverConn any) error {
		pc := driverConn.(validatingConn).Conn()
		pb := &pgx.Batch{}
		pb.Queue(lockWorkspacesShared, workspaces)
		pb.Queue(inviteBatchPostgres, expires, now, workspaces, callers, emails, roles,
			kinds, subs, requestIDs, expiresText(expires))
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
