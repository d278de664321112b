// Package outbox is the delivery loop the email and webhook dispatchers
// share (mail.Dispatcher, webhook.Dispatcher): claim due messages under a
// lease, as many as there are free workers, deliver them side by side, and
// claim again when a worker is free, when woken or at the next poll. What
// a message is, how it is delivered and how its outcome is recorded are
// the dispatchers'; the database side (claims with SKIP LOCKED, leases,
// backoff, fairness) is the store's.
package outbox

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	mathrand "math/rand/v2"
	"sync"
	"time"
)

// Loop delivers one kind of outbox message, T.
type Loop[T any] struct {
	// Name prefixes the loop's log lines ("mail dispatcher").
	Name string
	// Claim takes up to limit due messages for token, for lease.
	Claim func(ctx context.Context, token string, limit int, lease time.Duration) ([]T, error)
	// Release gives up token's claims on messages not started.
	Release func(ctx context.Context, token string) error
	// ClaimedUntil is when a claimed message's lease ends.
	ClaimedUntil func(T) *time.Time
	// Deliver makes one attempt and records its outcome. Its context is not
	// cancelled when the loop's is: outcomes are recorded while stopping.
	// Up to Concurrency attempts run at once: Deliver holds a worker until
	// it returns or calls free (once the attempt itself is over, while its
	// outcome is being recorded: the message stays claimed meanwhile).
	Deliver func(ctx context.Context, item T, free func())

	Lease        time.Duration
	PollInterval time.Duration
	// BatchSize bounds one claim.
	BatchSize int
	// Concurrency bounds the deliveries in flight (0: one at a time). A
	// claim asks for no more messages than there are free workers, so a
	// message starts as soon as it is claimed and never waits out its
	// lease behind others.
	Concurrency int
	Log         *slog.Logger
	// Now is the clock of the lease check (time.Now when nil).
	Now func() time.Time
	// Explain, when set, says in a few words what a failed claim met
	// (never a connection string) and whether it is an outage of the
	// database (logged as a warning: it ends by itself) rather than a
	// fault (an error).
	Explain func(err error) (summary string, outage bool)

	token string
	fails failureRun // the claims failing in a row (Run's goroutine only)
	// LogFailure's last line and the failures not logged since.
	failMu     sync.Mutex
	failSaid   time.Time
	failUnsaid int
	wake       chan struct{}
	freed      chan struct{} // a delivery ended: a worker is free
	mu         sync.Mutex
	busy       int // deliveries in flight
}

// Start fills in what the loop makes itself: its claim token (random, one
// per dispatcher, so that replicas' claims never mix) and its wake-up
// channels. Call it once, before Run, RunOnce or Wake.
func (l *Loop[T]) Start() {
	b := make([]byte, 12)
	rand.Read(b)
	l.token = hex.EncodeToString(b)
	l.wake = make(chan struct{}, 1)
	l.freed = make(chan struct{}, 1)
	if l.Now == nil {
		l.Now = time.Now
	}
	if l.Log == nil {
		l.Log = slog.Default()
	}
	l.Concurrency = max(l.Concurrency, 1)
	l.BatchSize = max(l.BatchSize, 1)
}

// Wake asks the loop to look for due messages now instead of at the next
// poll. It never blocks.
func (l *Loop[T]) Wake() { signal(l.wake) }

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// Run delivers messages until ctx ends. The deliveries in flight when ctx
// ends are finished; claimed messages not yet started are released for
// others. A failed claim is logged and retried at the next poll (the
// database may come back), so the only way out is ctx ending.
func (l *Loop[T]) Run(ctx context.Context) {
	var wg sync.WaitGroup
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		least := 1
		select {
		case <-ctx.Done():
			wg.Wait()
			l.release(context.WithoutCancel(ctx))
			l.Log.Info(l.Name + " stopped")
			return
		case <-timer.C:
		case <-l.wake:
		case <-l.freed:
			// Under load workers free up one by one: claiming for each
			// would spend a transaction per message. Wait until a quarter
			// of a batch is free (the poll and wake-ups claim for any).
			least = max(1, min(l.BatchSize, l.Concurrency)/4)
		}
		l.fill(ctx, &wg, least)
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(l.PollInterval)
	}
}

// fill claims and starts messages while at least least workers are free
// and claims come back full (more may be due).
func (l *Loop[T]) fill(ctx context.Context, wg *sync.WaitGroup, least int) {
	for ctx.Err() == nil {
		want := min(l.Concurrency-l.inFlight(), l.BatchSize)
		if want < least {
			return
		}
		n, err := l.claimAndStart(ctx, want, wg)
		if err != nil {
			if ctx.Err() == nil {
				l.claimFailed(ctx, err)
			}
			return
		}
		l.claimSucceeded()
		if n < want {
			return
		}
	}
}

// failureSummaryEvery is how often a run of failing claims logs its count.
const failureSummaryEvery = 5 * time.Second

// failureRun is a run of failed claims: a database outage fails every
// poll (four a second per dispatcher) and a line each hid everything else
// in the log, so a run is said once when it starts, counted every
// failureSummaryEvery, and ended once.
type failureRun struct {
	since, said  time.Time
	total, fresh int
}

// claimFailed logs a failed claim: the first of a run with what it met,
// later ones as a count every failureSummaryEvery.
func (l *Loop[T]) claimFailed(ctx context.Context, err error) {
	now := time.Now()
	f := &l.fails
	f.total++
	f.fresh++
	summary, level := l.explain(err)
	switch {
	case f.total == 1:
		f.since, f.said, f.fresh = now, now, 0
		msg := l.Name + ": claim failed; retried at every poll, said again every " + failureSummaryEvery.String() + " while it fails"
		if level == slog.LevelWarn {
			msg = l.Name + ": database unavailable, delivery paused; retried at every poll"
		}
		l.Log.Log(ctx, level, msg, "err", summary)
	case now.Sub(f.said) >= failureSummaryEvery:
		l.Log.Log(ctx, level, l.Name+": claims still failing", "failures", f.fresh,
			"since", f.since.UTC().Format(time.RFC3339), "err", summary)
		f.said, f.fresh = now, 0
	}
}

// explain is what err met and the level to log it at: a warning for an
// outage of the database (Explain), which ends by itself, else an error.
func (l *Loop[T]) explain(err error) (string, slog.Level) {
	if l.Explain == nil {
		return err.Error(), slog.LevelError
	}
	summary, outage := l.Explain(err)
	if outage {
		return summary, slog.LevelWarn
	}
	return summary, slog.LevelError
}

// LogFailure logs msg about err (a delivery's outcome that could not be
// recorded, say) on log, at the level explain gives it, at most once every
// failureSummaryEvery: when the database goes away every delivery in
// flight fails the same way, and the next line counts those not logged.
func (l *Loop[T]) LogFailure(ctx context.Context, log *slog.Logger, msg string, err error) {
	l.failMu.Lock()
	now := time.Now()
	if !l.failSaid.IsZero() && now.Sub(l.failSaid) < failureSummaryEvery {
		l.failUnsaid++
		l.failMu.Unlock()
		return
	}
	unsaid := l.failUnsaid
	l.failSaid, l.failUnsaid = now, 0
	l.failMu.Unlock()
	summary, level := l.explain(err)
	log.Log(ctx, level, msg, "err", summary, "not_logged_since_last", unsaid)
}

// claimSucceeded ends a run of failed claims, saying so.
func (l *Loop[T]) claimSucceeded() {
	f := &l.fails
	if f.total == 0 {
		return
	}
	l.Log.Info(l.Name+": claims succeed again, delivery resumed", "failures", f.total,
		"for", time.Since(f.since).Round(time.Millisecond).String())
	*f = failureRun{}
}

// RunOnce claims one batch (at most Concurrency messages), delivers it and
// waits for the deliveries, returning how many messages it claimed and
// started.
func (l *Loop[T]) RunOnce(ctx context.Context) (int, error) {
	var wg sync.WaitGroup
	n, err := l.claimAndStart(ctx, min(l.BatchSize, l.Concurrency), &wg)
	wg.Wait()
	return n, err
}

// claimAndStart claims up to limit messages and starts a delivery of each.
// A message is started only while at least half of its lease remains, so
// an attempt cannot outlive its claim and let another dispatcher deliver
// the same message: an attempt must finish within half the lease (the
// dispatchers' timeouts are well under). As claims ask for free workers
// only, messages start at once; one that somehow does not (a claim slower
// than half the lease) is left for its lease to end.
func (l *Loop[T]) claimAndStart(ctx context.Context, limit int, wg *sync.WaitGroup) (int, error) {
	items, err := l.Claim(ctx, l.token, limit, l.Lease)
	if err != nil {
		return 0, err
	}
	bg := context.WithoutCancel(ctx)
	started := 0
	for _, item := range items {
		until := l.ClaimedUntil(item)
		if until == nil || until.Sub(l.Now()) < l.Lease/2 {
			l.Log.Warn(l.Name + ": a claimed message was not started: less than half its lease was left (it is retried once the lease ends)")
			continue
		}
		l.mu.Lock()
		l.busy++
		l.mu.Unlock()
		wg.Add(1)
		started++
		go func() {
			defer wg.Done()
			var once sync.Once
			free := func() { once.Do(l.done) }
			defer free()
			l.Deliver(bg, item, free)
			// The outcome is recorded: the message no longer counts
			// against its endpoint's bound, so a claim that came back
			// short for it may now take more (waiting for the poll would
			// idle the workers meanwhile).
			signal(l.freed)
		}()
	}
	if len(items) > 0 {
		l.Log.Debug(l.Name+": claimed", "messages", len(items))
	}
	return started, nil
}

func (l *Loop[T]) inFlight() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.busy
}

// done ends a delivery and tells Run a worker is free.
func (l *Loop[T]) done() {
	l.mu.Lock()
	l.busy--
	l.mu.Unlock()
	signal(l.freed)
}

// release hands back claims not started; called only once no delivery is
// in flight (releasing by token would take back those too).
func (l *Loop[T]) release(ctx context.Context) {
	if err := l.Release(ctx, l.token); err != nil {
		l.Log.Error(l.Name+": release claims", "err", err)
	}
}

// Token is the loop's claim token, which the dispatchers' outcome records
// must present.
func (l *Loop[T]) Token() string { return l.token }

// Backoff is the wait before the next attempt after attempt failures:
// exponential with jitter, base·2^(attempt-1) capped at ceiling, then a
// random point in its upper half, so that retries of many messages spread
// out.
func Backoff(base, ceiling time.Duration, attempt int) time.Duration {
	wait := ceiling
	if attempt >= 1 && attempt < 32 {
		if w := base << (attempt - 1); w > 0 && w < wait {
			wait = w
		}
	}
	return wait/2 + mathrand.N(wait/2+1) //nolint:gosec // G404: jitter that spreads retries out, not a secret
}
