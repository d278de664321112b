package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"gorm.io/gorm"
)

// errClosed is returned for writes submitted after Close.
var errClosed = errors.New("store is closed")

// groupCommitter runs SQLite write transactions on one dedicated connection
// and commits concurrently submitted ones together (group commit): while one
// transaction commits, the next requests queue up, and the following
// transaction runs them all, each inside its own SAVEPOINT so that one
// failing rolls back alone. Jobs of one group (jobGroup: the invites, which
// share one batch statement) run together in one savepoint. One commit
// serves the whole batch. The committer knows nothing of what the jobs do.
//
// Durability is pipelined: the connection runs with synchronous=NORMAL, so
// COMMIT writes the transaction to the WAL file without waiting for the disk,
// and a second goroutine (syncer) fsyncs the WAL file and only then answers
// the callers of every transaction that fsync covers. The writer meanwhile
// runs the next transaction instead of idling through the fsync, which was
// half its time. No caller is answered before its writes are on disk; what
// this gives up is that another connection may read a committed row up to
// one fsync (about a millisecond) before it is durable, which only a power
// loss or OS crash in that window could make visible (a process crash
// cannot: the OS still has the WAL). Every write depending on such a read
// goes through this writer and is answered after a later fsync covering both.
//
// It also keeps statements prepared: database/sql re-prepares statements for
// every *sql.Tx, so transactions here are plain BEGIN/COMMIT on a connection
// whose prepared statements live as long as it does.
type groupCommitter struct {
	db       *gorm.DB // bound to conn
	pool     *sql.DB
	conn     *sql.Conn
	wal      walFile // the WAL file, for fsync
	jobs     chan *txJob
	synced   chan *openTx  // a committed transaction waiting for its fsync
	syncIdle chan struct{} // the syncer finished one
	// fsyncFailed holds the first fsync error; no write is accepted after it.
	fsyncFailed atomic.Pointer[error]
	closed      chan struct{}
	done        chan struct{}
	syncDone    chan struct{}
	maxBatch    int
	now         func() time.Time
	hooks       Hooks
	log         *slog.Logger
	close       sync.Once
	// state is what the open transaction has learnt (see txState); only
	// the writer goroutine touches it.
	state *txState
}

// txState is what the writer's open transaction has learnt that later
// group steps of the same transaction can reuse. The writer holds SQLite's
// write lock from BEGIN IMMEDIATE to COMMIT, so only this transaction's own
// jobs can change what it read: it is fresh at every BEGIN and forgotten
// after every job that is not a group's (such a job may write anything).
// Group steps read it through their context (txStateFrom).
type txState struct {
	// webhooksChecked: webhooksAny holds whether any enabled webhook
	// endpoint exists (anyEnabledWebhook).
	webhooksChecked, webhooksAny bool
}

type txStateKey struct{}

// txStateFrom returns the writer transaction's state that ctx carries, or
// nil (a job run outside a group step: it must not rely on one).
func txStateFrom(ctx context.Context) *txState {
	st, _ := ctx.Value(txStateKey{}).(*txState)
	return st
}

// walFile is what the syncer needs of the WAL file (an *os.File); tests
// put one whose Sync fails in its place.
type walFile interface {
	Sync() error
	Close() error
}

// txJob is one write submitted to the committer: fn, run alone in its own
// savepoint, or one member of a group, run with the other queued members of
// that group in one call (see jobGroup).
type txJob struct {
	ctx    context.Context
	fn     func(tx *gorm.DB) error
	group  jobGroup // set instead of fn
	item   any      // the group's own data for this job
	result chan error
}

// jobGroup runs jobs that cost less together than one by one (one
// statement for many rows). runGroup gets every queued job of the group
// that a transaction takes, runs inside a savepoint of its own, and tells
// its callers through the jobs' items what it settled: its error (or
// panic) rolls back the group's work alone, and its jobs are then answered
// like every other job, by the commit and the fsync.
type jobGroup interface {
	runGroup(tx *gorm.DB, jobs []*txJob) error
}

func newGroupCommitter(ctx context.Context, pool *sql.DB, now func() time.Time, hooks Hooks, log *slog.Logger,
	open func(conn gorm.ConnPool) (*gorm.DB, error)) (*groupCommitter, error) {
	conn, err := pool.Conn(ctx)
	if err != nil {
		return nil, err
	}
	wal, err := openWAL(ctx, conn)
	if err != nil {
		return nil, errors.Join(err, conn.Close())
	}
	db, err := open(conn)
	if err != nil {
		return nil, errors.Join(err, wal.Close(), conn.Close())
	}
	g := &groupCommitter{db: db, pool: pool, conn: conn, wal: wal, jobs: make(chan *txJob),
		synced: make(chan *openTx, 1), syncIdle: make(chan struct{}, 1), closed: make(chan struct{}), done: make(chan struct{}),
		syncDone: make(chan struct{}), maxBatch: 256, now: now, hooks: hooks, log: log}
	go g.run() //nolint:contextcheck // ctx is for opening; the committer runs until Close

	go g.sync()
	return g, nil
}

// openWAL switches conn to synchronous=NORMAL (the syncer fsyncs instead)
// and opens the WAL file SQLite actually writes: its own resolved path of
// the database (symlinks followed) plus "-wal", checked to be the same file.
// Reading once creates the WAL file if this is the first connection; it then
// lives as long as conn (SQLite deletes it only when the last connection
// closes; resets and checkpoints rewind or truncate it in place).
func openWAL(ctx context.Context, conn *sql.Conn) (*os.File, error) {
	if _, err := conn.ExecContext(ctx, "PRAGMA synchronous=NORMAL"); err != nil {
		return nil, err
	}
	var seq int
	var name, file string
	if err := conn.QueryRowContext(ctx, "SELECT seq, name, file FROM pragma_database_list WHERE name = 'main'").Scan(&seq, &name, &file); err != nil {
		return nil, fmt.Errorf("find the database file: %w", err)
	}
	var tables int
	if err := conn.QueryRowContext(ctx, "SELECT count(*) FROM sqlite_master").Scan(&tables); err != nil {
		return nil, err
	}
	path := file + "-wal"
	wal, err := os.OpenFile(path, os.O_RDWR, 0) //nolint:gosec // G304: SQLite's own path of the database it opened, plus "-wal"
	if err != nil {
		return nil, fmt.Errorf("open WAL file for fsync: %w", err)
	}
	opened, err1 := wal.Stat()
	live, err2 := os.Stat(path)
	if err := errors.Join(err1, err2); err != nil {
		return nil, fmt.Errorf("open WAL file for fsync: %w", errors.Join(err, wal.Close()))
	}
	if !os.SameFile(opened, live) {
		return nil, errors.Join(fmt.Errorf("open WAL file for fsync: %s changed while opening", path), wal.Close())
	}
	return wal, nil
}

// do runs fn in a write transaction and returns once it is committed (or
// rolled back, with fn's error).
func (g *groupCommitter) do(ctx context.Context, fn func(tx *gorm.DB) error) error {
	return g.submit(&txJob{ctx: ctx, fn: fn, result: make(chan error, 1)})
}

// doGrouped runs job, whose group and item are set, in the next
// transaction with the other jobs of its group (see jobGroup).
func (g *groupCommitter) doGrouped(job *txJob) error {
	job.result = make(chan error, 1)
	return g.submit(job)
}

func (g *groupCommitter) submit(job *txJob) error {
	select {
	case g.jobs <- job:
	case <-g.closed:
		return errClosed
	}
	return <-job.result
}

// run is the writer. It keeps at most one committed transaction waiting for
// its fsync: while that fsync runs, the next transaction stays open and
// takes the jobs that arrive (running them applyEvery at a time), so the
// batch grows with the disk's latency and the writer works instead of
// waiting; it commits once the fsync is done and the transaction holds as
// many jobs as the previous one (waiting at most cohortWait for them), or
// as soon as the batch is full.
func (g *groupCommitter) run() {
	defer close(g.done)
	defer close(g.synced) // after the last commit: the syncer finishes and stops
	syncing := false      // a committed transaction waits for its fsync
	last := 0             // jobs in the previous transaction
	for {
		var first *txJob
		select {
		case first = <-g.jobs:
		case <-g.syncIdle:
			syncing = false
			continue
		case <-g.closed:
			return
		}
		if failed := g.fsyncFailed.Load(); failed != nil {
			first.result <- *failed
			continue
		}
		if err := g.exec("BEGIN IMMEDIATE"); err != nil {
			first.result <- fmt.Errorf("begin transaction: %w", err)
			continue
		}
		g.state = &txState{}
		tx := &openTx{}
		pending := g.drain(first, g.maxBatch)
		if syncing && g.collect(tx, &pending, g.maxBatch, g.syncIdle) {
			syncing = false
		}
		if want := min(last, g.maxBatch); !syncing && len(tx.batch)+len(pending) < want {
			expired := make(chan struct{})
			timer := time.AfterFunc(cohortWait, func() { close(expired) })
			g.collect(tx, &pending, want, expired)
			timer.Stop()
		}
		g.apply(tx, pending)
		if syncing { // the batch is full: its commit waits for the fsync
			<-g.syncIdle
		}
		last = len(tx.batch)
		syncing = g.commit(tx)
	}
}

// collect takes the jobs that arrive into the open transaction, running
// them applyEvery at a time, until it holds limit jobs or done fires;
// it reports whether done fired. Jobs not yet run are left in pending.
func (g *groupCommitter) collect(tx *openTx, pending *[]*txJob, limit int, done <-chan struct{}) bool {
	for len(tx.batch)+len(*pending) < limit {
		if len(*pending) >= applyEvery {
			g.apply(tx, *pending)
			*pending = nil
		}
		select {
		case job := <-g.jobs:
			*pending = append(*pending, g.drain(job, limit-len(tx.batch)-len(*pending))...)
		case <-done:
			return true
		}
	}
	return false
}

// cohortWait bounds how long a transaction stays open, once the previous
// one is on disk, waiting to hold as many jobs as that one did. Under
// load the callers answered by one fsync come back with their next
// writes a fraction of a millisecond later; committing without them split
// a steady load into ever smaller transactions (about 20 invites each at
// 64 connections), and a commit costs about 360 us of CPU whatever its
// size (the batch statements' fixed work, WAL frames for every B-tree
// touched, the fsync), so waiting for them halves that cost per write
// (make bench, README "Performance"). A transaction smaller than the last
// one waits at most this long; when the load falls, the next is small and
// waits for nothing.
const cohortWait = 2 * time.Millisecond

// applyEvery is how many jobs the writer lets queue while it waits for an
// fsync before running them: one at a time would cost a batch statement
// (and savepoint) per job; all at the end would leave the writer idle during
// the fsync. Measured under load (make bench): 1 → 11.8–13.4k invites/s,
// 16 → 15.0–16.8k, 64 → 13.9–15.5k.
const applyEvery = 16

// drain returns first and the jobs already waiting, at most limit in all.
func (g *groupCommitter) drain(first *txJob, limit int) []*txJob {
	jobs := []*txJob{first}
	for len(jobs) < limit {
		select {
		case job := <-g.jobs:
			jobs = append(jobs, job)
		default:
			return jobs
		}
	}
	return jobs
}

// openTx is the write transaction being built and the jobs it holds.
type openTx struct {
	batch   []*txJob
	results []error
	aborted error // set when the transaction can no longer be trusted
}

// exec runs a transaction-control statement straight on the connection's
// statement cache: they run several times per write, and GORM's statement
// building is most of their cost.
func (g *groupCommitter) exec(sql string) error {
	_, err := g.db.ConnPool.ExecContext(context.Background(), sql)
	return err
}

// apply runs jobs inside the open transaction: each group's jobs in one
// call, every other job inside its own SAVEPOINT so that one failing rolls
// back alone.
func (g *groupCommitter) apply(tx *openTx, jobs []*txJob) {
	results := make([]error, len(jobs))
	aborted := tx.aborted
	if aborted == nil {
		aborted = g.runGroups(jobs, results)
	}
	for i, job := range jobs {
		if job.group != nil {
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
		results[i] = g.runJob(job)
		*g.state = txState{} // the job may have written anything
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
	tx.batch = append(tx.batch, jobs...)
	tx.results = append(tx.results, results...)
	tx.aborted = aborted
}

// commit ends the transaction. Committed, it goes to the syncer (true);
// otherwise it is rolled back and its jobs are answered at once (false).
func (g *groupCommitter) commit(tx *openTx) (syncing bool) {
	err := tx.aborted
	if err == nil {
		start := time.Now()
		err = g.exec("COMMIT")
		since(g.hooks.SQLiteCommit, start)
	}
	if err != nil {
		g.exec("ROLLBACK") //nolint:errcheck // the jobs' answer is err; a failed COMMIT may have ended the transaction already
		for i := range tx.results {
			if tx.results[i] == nil {
				tx.results[i] = fmt.Errorf("write transaction failed, nothing was saved: %w", err)
			}
		}
		reply(tx.batch, tx.results)
		return false
	}
	g.synced <- tx
	return true
}

// sync answers the callers of each committed transaction once an fsync of
// the WAL file has put it on disk, then tells the writer it may commit again.
//
// A failed fsync is final: the kernel may have dropped the pages it could
// not write and report success next time, and WAL recovery stops at the
// first missing frame, so nothing committed after it can be promised
// either. Every later transaction is answered with the first error (the
// process must be restarted, as PostgreSQL does after a failed fsync).
func (g *groupCommitter) sync() {
	defer close(g.syncDone)
	var failed error
	for tx := range g.synced {
		if failed == nil {
			start := time.Now()
			err := g.wal.Sync()
			since(g.hooks.SQLiteFsync, start)
			if err != nil {
				failed = fmt.Errorf("committed but not made durable: fsync of the SQLite WAL failed, writes are stopped until the server restarts: %w", err)
				g.fsyncFailed.Store(&failed)
			}
		}
		if failed != nil {
			for i := range tx.results {
				if tx.results[i] == nil {
					tx.results[i] = failed
				}
			}
		}
		reply(tx.batch, tx.results)
		g.syncIdle <- struct{}{}
	}
}

func reply(batch []*txJob, results []error) {
	for i, job := range batch {
		job.result <- results[i]
	}
}

// runGroups runs the jobs that belong to a group, each group (in the order
// its first job came) in one call inside its own savepoint; a failing group
// rolls back alone. It returns an error only when the transaction can no
// longer be trusted, and records it for the grouped jobs.
func (g *groupCommitter) runGroups(jobs []*txJob, results []error) (aborted error) {
	defer func() {
		if aborted != nil {
			for i, job := range jobs {
				if job.group != nil && results[i] == nil {
					results[i] = aborted
				}
			}
		}
	}()
	var ran []jobGroup // almost always one: the invites
	for i, job := range jobs {
		if job.group == nil || slices.Contains(ran, job.group) {
			continue
		}
		ran = append(ran, job.group)
		var members []*txJob
		for j := i; j < len(jobs); j++ {
			if jobs[j].group != job.group {
				continue
			}
			if err := jobs[j].ctx.Err(); err != nil {
				results[j] = err
				continue
			}
			members = append(members, jobs[j])
		}
		if len(members) == 0 {
			continue
		}
		if err := g.exec("SAVEPOINT batch"); err != nil {
			return fmt.Errorf("savepoint: %w", err)
		}
		err := g.runJob(&txJob{ctx: context.WithValue(context.Background(), txStateKey{}, g.state), fn: func(tx *gorm.DB) error {
			return job.group.runGroup(tx, members)
		}})
		if err != nil {
			if err := g.exec("ROLLBACK TO batch"); err != nil {
				return fmt.Errorf("transaction aborted: %w", err)
			}
		}
		if err := g.exec("RELEASE batch"); err != nil {
			return fmt.Errorf("release savepoint: %w", err)
		}
	}
	return nil
}

// runJob runs one job's function, turning a panic into its error (and a
// log line: it is a bug) so that one bad request cannot take the writer
// (and every other request) down.
//
// A job whose context ends while it waits is skipped (apply checks), but
// once started it runs without its context's cancellation: the driver
// answers a cancelled statement with sqlite3_interrupt, which may roll back
// the whole shared transaction, every other job's work with it.
func (g *groupCommitter) runJob(job *txJob) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic in write transaction: %v", r)
			g.log.Error("panic in a write transaction; the job is rolled back, the others go on", "panic", r, "stack", string(debug.Stack()))
		}
	}()
	return job.fn(g.db.WithContext(context.WithoutCancel(job.ctx)))
}

// running returns errClosed once Close was called, else nil.
func (g *groupCommitter) running() error {
	select {
	case <-g.closed:
		return errClosed
	default:
		return nil
	}
}

// Close stops the writer after the batch in progress and releases its
// connection. Every job submitted is answered: those in the transaction
// being built by its commit, those still waiting with errClosed.
func (g *groupCommitter) Close() error {
	g.close.Do(func() { close(g.closed) })
	<-g.done
	<-g.syncDone
	return errors.Join(g.wal.Close(), g.conn.Close(), g.pool.Close())
}
