package commit

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"gorm.io/gorm"
)

// ErrClosed is returned for writes submitted after Close.
var ErrClosed = errors.New("store is closed")

// ErrWritesStopped is matched by every write's error after a failed fsync
// (and by Running's): see sync.
var ErrWritesStopped = errors.New("writes are stopped until the server restarts")

// Committer runs SQLite write transactions on one dedicated connection
// and commits concurrently submitted ones together (group commit): while one
// transaction commits, the next requests queue up, and the following
// transaction runs them all, each inside its own SAVEPOINT so that one
// failing rolls back alone. Jobs of one Group (the store's invites, which
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
type Committer struct {
	db       *gorm.DB // bound to conn
	pool     *sql.DB
	conn     *sql.Conn
	wal      WALFile // the WAL file, for fsync
	jobs     chan *Job
	synced   chan *openTx  // a committed transaction waiting for its fsync
	syncIdle chan struct{} // the syncer finished one
	// fsyncFailed holds the first fsync error; no write is accepted after it.
	fsyncFailed atomic.Pointer[error]
	closed      chan struct{}
	done        chan struct{}
	syncDone    chan struct{}
	maxBatch    int
	opts        Options
	close       sync.Once
	// memo is what the open transaction's group steps have learnt (see
	// Memo); only the writer goroutine touches it.
	memo Memo
}

// Options are what a Committer reports to and through; zero fields are
// skipped (the hooks) or defaulted (Log: slog.Default()).
type Options struct {
	// OnCommit gets how long a group commit's COMMIT took (the WAL write,
	// without the fsync).
	OnCommit func(time.Duration)
	// OnFsync gets how long an fsync of the WAL file took; the callers of
	// the transactions it covers were waiting for it.
	OnFsync func(time.Duration)
	// Log gets a panic in a job (a bug).
	Log *slog.Logger
}

// Memo is what the writer's open transaction has learnt that later group
// steps of the same transaction can reuse (the store keeps there whether
// any webhook endpoint is enabled). The writer holds SQLite's write lock
// from BEGIN IMMEDIATE to COMMIT, so only this transaction's own jobs can
// change what it read: the memo is empty at every BEGIN and emptied after
// every job that is not a group's (such a job may write anything). Its
// content is the group's: the committer only empties it.
type Memo struct{ value any }

// Load returns what Store put, or nil.
func (m *Memo) Load() any {
	if m == nil {
		return nil
	}
	return m.value
}

// Store keeps v until the memo is emptied; on a nil Memo (a group step run
// outside the writer's groups) it does nothing.
func (m *Memo) Store(v any) {
	if m != nil {
		m.value = v
	}
}

// WALFile is what the syncer needs of the WAL file (an *os.File); tests
// put one whose Sync fails in its place.
type WALFile interface {
	Sync() error
	Close() error
}

// Job is one write submitted to the committer: Fn, run alone in its own
// savepoint, or one member of a Group, run with the other queued members of
// that group in one call.
type Job struct {
	Ctx    context.Context
	Fn     func(tx *gorm.DB) error
	Group  Group // set instead of Fn
	Item   any   // the group's own data for this job
	result chan error
}

// Group runs jobs that cost less together than one by one (one statement
// for many rows). RunGroup gets every queued job of the group that a
// transaction takes, runs inside a savepoint of its own, and tells its
// callers through the jobs' items what it settled: its error (or panic)
// rolls back the group's work alone, and its jobs are then answered like
// every other job, by the commit and the fsync. memo is the transaction's
// (see Memo).
type Group interface {
	RunGroup(tx *gorm.DB, memo *Memo, jobs []*Job) error
}

// maxBatch bounds the jobs of one transaction.
const maxBatch = 256

// New starts a committer on a connection of its own from pool (which it
// closes on Close); open wraps that connection in the GORM handle the jobs
// get.
func New(ctx context.Context, pool *sql.DB, open func(conn gorm.ConnPool) (*gorm.DB, error), opts Options) (*Committer, error) {
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
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
	g := &Committer{db: db, pool: pool, conn: conn, wal: wal, jobs: make(chan *Job),
		synced: make(chan *openTx, 1), syncIdle: make(chan struct{}, 1), closed: make(chan struct{}), done: make(chan struct{}),
		syncDone: make(chan struct{}), maxBatch: maxBatch, opts: opts}
	go g.run() //nolint:contextcheck // ctx is for opening; the committer runs until Close

	go g.sync()
	return g, nil
}

// DB is the writer connection's GORM handle (tests register callbacks on it).
func (g *Committer) DB() *gorm.DB { return g.db }

// Pool is the pool the writer connection came from (for its statistics).
func (g *Committer) Pool() *sql.DB { return g.pool }

// Do runs fn in a write transaction and returns once it is committed (or
// rolled back, with fn's error).
func (g *Committer) Do(ctx context.Context, fn func(tx *gorm.DB) error) error {
	return g.submit(&Job{Ctx: ctx, Fn: fn, result: make(chan error, 1)})
}

// DoGrouped runs job, whose Group and Item are set, in the next
// transaction with the other jobs of its group (see Group).
func (g *Committer) DoGrouped(job *Job) error {
	job.result = make(chan error, 1)
	return g.submit(job)
}

func (g *Committer) submit(job *Job) error {
	select {
	case g.jobs <- job:
	case <-g.closed:
		return ErrClosed
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
func (g *Committer) run() {
	defer close(g.done)
	defer close(g.synced) // after the last commit: the syncer finishes and stops
	syncing := false      // a committed transaction waits for its fsync
	last := 0             // jobs in the previous transaction
	for {
		var first *Job
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
		g.memo = Memo{}
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
func (g *Committer) collect(tx *openTx, pending *[]*Job, limit int, done <-chan struct{}) bool {
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
// (make bench, docs/contributing/benchmarks.md). A transaction smaller than the last
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
func (g *Committer) drain(first *Job, limit int) []*Job {
	jobs := []*Job{first}
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
	batch   []*Job
	results []error
	aborted error // set when the transaction can no longer be trusted
}

// exec runs a transaction-control statement straight on the connection's
// statement cache: they run several times per write, and GORM's statement
// building is most of their cost.
func (g *Committer) exec(sql string) error {
	_, err := g.db.ConnPool.ExecContext(context.Background(), sql)
	return err
}

// apply runs jobs inside the open transaction: each group's jobs in one
// call, every other job inside its own SAVEPOINT so that one failing rolls
// back alone.
func (g *Committer) apply(tx *openTx, jobs []*Job) {
	results := make([]error, len(jobs))
	aborted := tx.aborted
	if aborted == nil {
		aborted = g.runGroups(jobs, results)
	}
	for i, job := range jobs {
		if job.Group != nil {
			continue
		}
		if aborted != nil {
			results[i] = aborted
			continue
		}
		if err := job.Ctx.Err(); err != nil {
			results[i] = err
			continue
		}
		if err := g.exec("SAVEPOINT job"); err != nil {
			aborted = fmt.Errorf("savepoint: %w", err)
			results[i] = aborted
			continue
		}
		results[i] = g.runJob(job.Ctx, job.Fn)
		g.memo = Memo{} // the job may have written anything
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
func (g *Committer) commit(tx *openTx) (syncing bool) {
	err := tx.aborted
	if err == nil {
		start := time.Now()
		err = g.exec("COMMIT")
		since(g.opts.OnCommit, start)
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
func (g *Committer) sync() {
	defer close(g.syncDone)
	var failed error
	for tx := range g.synced {
		if failed == nil {
			start := time.Now()
			err := g.wal.Sync()
			since(g.opts.OnFsync, start)
			if err != nil {
				failed = fmt.Errorf("committed but not made durable: fsync of the SQLite WAL failed, %w: %w", ErrWritesStopped, err)
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

func reply(batch []*Job, results []error) {
	for i, job := range batch {
		job.result <- results[i]
	}
}

// since reports the time elapsed from start to fn, when fn is set.
func since(fn func(time.Duration), start time.Time) {
	if fn != nil {
		fn(time.Since(start))
	}
}

// runGroups runs the jobs that belong to a group, each group (in the order
// its first job came) in one call inside its own savepoint; a failing group
// rolls back alone. It returns an error only when the transaction can no
// longer be trusted, and records it for the grouped jobs.
func (g *Committer) runGroups(jobs []*Job, results []error) (aborted error) {
	defer func() {
		if aborted != nil {
			for i, job := range jobs {
				if job.Group != nil && results[i] == nil {
					results[i] = aborted
				}
			}
		}
	}()
	var ran []Group // almost always one: the invites
	for i, job := range jobs {
		if job.Group == nil || slices.Contains(ran, job.Group) {
			continue
		}
		ran = append(ran, job.Group)
		var members []*Job
		for j := i; j < len(jobs); j++ {
			if jobs[j].Group != job.Group {
				continue
			}
			if err := jobs[j].Ctx.Err(); err != nil {
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
		err := g.runJob(context.Background(), func(tx *gorm.DB) error {
			return job.Group.RunGroup(tx, &g.memo, members)
		})
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
func (g *Committer) runJob(ctx context.Context, fn func(tx *gorm.DB) error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic in write transaction: %v", r)
			g.opts.Log.Error("panic in a write transaction; the job is rolled back, the others go on", "panic", r, "stack", string(debug.Stack()))
		}
	}()
	return fn(g.db.WithContext(context.WithoutCancel(ctx)))
}

// Running returns the failed fsync's error (ErrWritesStopped) once one
// failed, ErrClosed once Close was called, else nil.
func (g *Committer) Running() error {
	if failed := g.fsyncFailed.Load(); failed != nil {
		return *failed
	}
	select {
	case <-g.closed:
		return ErrClosed
	default:
		return nil
	}
}

// Close stops the writer after the batch in progress and releases its
// connection. Every job submitted is answered: those in the transaction
// being built by its commit, those still waiting with ErrClosed.
func (g *Committer) Close() error {
	g.close.Do(func() { close(g.closed) })
	<-g.done
	<-g.syncDone
	return errors.Join(g.wal.Close(), g.conn.Close(), g.pool.Close())
}

// ReplaceWALForTest puts wrap(the WAL file) in the syncer's hands until
// restore (a disk that stops taking writes). Call it while no write is in
// flight: the next write's hand-offs to the writer and the syncer order it
// before their reads.
func (g *Committer) ReplaceWALForTest(wrap func(WALFile) WALFile) (restore func()) {
	wal := g.wal
	g.wal = wrap(wal)
	return func() { g.wal = wal }
}
