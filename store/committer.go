package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"time"

	"gorm.io/gorm"
)

// errClosed is returned for writes submitted after Close.
var errClosed = errors.New("store is closed")

// groupCommitter runs SQLite write transactions on one dedicated connection
// and commits concurrently submitted ones together (group commit): while one
// transaction commits, the next requests queue up, and the following
// transaction runs them all, each inside its own SAVEPOINT so that one
// failing rolls back alone. A caller is answered only after the COMMIT that
// holds its writes, so every acknowledged write is durable; one commit (and
// fsync) serves the whole batch.
//
// It also keeps statements prepared: database/sql re-prepares statements for
// every *sql.Tx, so transactions here are plain BEGIN/COMMIT on a connection
// whose prepared statements live as long as it does.
type groupCommitter struct {
	db       *gorm.DB // bound to conn
	pool     *sql.DB
	conn     *sql.Conn
	jobs     chan *txJob
	closed   chan struct{}
	done     chan struct{}
	maxBatch int
	now      func() time.Time
	close    sync.Once
}

type txJob struct {
	ctx    context.Context
	fn     func(tx *gorm.DB) error
	invite *inviteJob // set instead of fn: an invite for the batch statement
	result chan error
}

func newGroupCommitter(ctx context.Context, pool *sql.DB, now func() time.Time, open func(conn gorm.ConnPool) (*gorm.DB, error)) (*groupCommitter, error) {
	conn, err := pool.Conn(ctx)
	if err != nil {
		return nil, err
	}
	db, err := open(conn)
	if err != nil {
		conn.Close()
		return nil, err
	}
	g := &groupCommitter{db: db, pool: pool, conn: conn, jobs: make(chan *txJob), closed: make(chan struct{}),
		done: make(chan struct{}), maxBatch: 256, now: now}
	go g.run()
	return g, nil
}

// do runs fn in a write transaction and returns once it is committed (or
// rolled back, with fn's error).
func (g *groupCommitter) do(ctx context.Context, fn func(tx *gorm.DB) error) error {
	return g.submit(&txJob{ctx: ctx, fn: fn, result: make(chan error, 1)})
}

// invite runs the common case of an invite in the next transaction, in one
// batch statement with every other invite queued beside it (see
// inviteBatcher for what the batch leaves to the slow path). found is false
// when the slow path must decide.
func (g *groupCommitter) invite(ctx context.Context, p InviteParams, inv *Invitation) (found bool, err error) {
	job := &inviteJob{p: p}
	if err := g.submit(&txJob{ctx: ctx, invite: job, result: make(chan error, 1)}); err != nil {
		return false, err
	}
	*inv = job.inv
	return job.found, nil
}

func (g *groupCommitter) submit(job *txJob) error {
	select {
	case g.jobs <- job:
	case <-g.closed:
		return errClosed
	}
	return <-job.result
}

func (g *groupCommitter) run() {
	defer close(g.done)
	batch := make([]*txJob, 0, g.maxBatch)
	for {
		select {
		case job := <-g.jobs:
			batch = append(batch[:0], job)
		case <-g.closed:
			return
		}
	collect:
		for len(batch) < g.maxBatch {
			select {
			case job := <-g.jobs:
				batch = append(batch, job)
			default:
				break collect
			}
		}
		g.commit(batch)
	}
}

// exec runs a transaction-control statement straight on the connection's
// statement cache: they run several times per write, and GORM's statement
// building is most of their cost.
func (g *groupCommitter) exec(sql string) error {
	_, err := g.db.ConnPool.ExecContext(context.Background(), sql)
	return err
}

func (g *groupCommitter) commit(batch []*txJob) {
	results := make([]error, len(batch))
	if err := g.exec("BEGIN IMMEDIATE"); err != nil {
		for _, job := range batch {
			job.result <- fmt.Errorf("begin transaction: %w", err)
		}
		return
	}
	aborted := g.runInvites(batch, results)
	for i, job := range batch {
		if job.invite != nil {
			continue
		}
		if aborted != nil {
			results[i] = aborted
			continue
		}
		if err := job.ctx.Err(); err != nil {
			results[i] = err
			continue
		}
		if err := g.exec("SAVEPOINT job"); err != nil {
			aborted = fmt.Errorf("savepoint: %w", err)
			results[i] = aborted
			continue
		}
		results[i] = runJob(job, g.db)
		if results[i] != nil {
			// SQLite may have rolled the whole transaction back by itself
			// (disk full, I/O error): then the savepoint is gone too.
			if err := g.exec("ROLLBACK TO job"); err != nil {
				aborted = fmt.Errorf("transaction aborted: %w", err)
				continue
			}
		}
		if err := g.exec("RELEASE job"); err != nil {
			aborted = fmt.Errorf("release savepoint: %w", err)
			results[i] = aborted
		}
	}
	err := aborted
	if err == nil {
		err = g.exec("COMMIT")
	}
	if err != nil {
		g.exec("ROLLBACK")
		for i := range results {
			if results[i] == nil {
				results[i] = fmt.Errorf("write transaction failed, nothing was saved: %w", err)
			}
		}
	}
	for i, job := range batch {
		job.result <- results[i]
	}
}

// runInvites runs the batch's invites as one batch statement inside its own
// savepoint; a failing statement rolls back alone and sends its invites to
// the slow path. It returns an error only when the transaction can no longer
// be trusted, and records it for the invites.
func (g *groupCommitter) runInvites(batch []*txJob, results []error) (aborted error) {
	var invites []*inviteJob
	for i, job := range batch {
		if job.invite == nil {
			continue
		}
		if err := job.ctx.Err(); err != nil {
			results[i] = err
			continue
		}
		invites = append(invites, job.invite)
	}
	if len(invites) == 0 {
		return nil
	}
	defer func() {
		if aborted != nil {
			for i, job := range batch {
				if job.invite != nil && results[i] == nil {
					results[i] = aborted
				}
			}
		}
	}()
	if err := g.exec("SAVEPOINT invites"); err != nil {
		return fmt.Errorf("savepoint: %w", err)
	}
	picked := pickBatch(invites)
	err := runJob(&txJob{ctx: context.Background(), fn: func(tx *gorm.DB) error {
		return runSQLiteBatch(context.Background(), tx, g.now(), picked)
	}}, g.db)
	if err != nil {
		notFound(picked)
		if err := g.exec("ROLLBACK TO invites"); err != nil {
			return fmt.Errorf("transaction aborted: %w", err)
		}
	}
	if err := g.exec("RELEASE invites"); err != nil {
		return fmt.Errorf("release savepoint: %w", err)
	}
	return nil
}

// runJob runs one job's function, turning a panic into its error so that one
// bad request cannot take the writer (and every other request) down.
func runJob(job *txJob, db *gorm.DB) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic in write transaction: %v", r)
		}
	}()
	return job.fn(db.WithContext(job.ctx))
}

// Close stops the writer after the batch in progress and releases its connection.
func (g *groupCommitter) Close() error {
	g.close.Do(func() { close(g.closed) })
	<-g.done
	return errors.Join(g.conn.Close(), g.pool.Close())
}
