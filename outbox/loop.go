// Package outbox is the delivery loop the email and webhook dispatchers
// share (mail.Dispatcher, webhook.Dispatcher): claim due messages under a
// lease, deliver them one by one while the claim is safe, release what is
// left when stopping, and sleep until woken or the next poll. What a
// message is, how it is delivered and how its outcome is recorded are the
// dispatchers'; the database side (claims with SKIP LOCKED, leases,
// backoff) is the store's.
package outbox

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	mathrand "math/rand/v2"
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
	Deliver func(ctx context.Context, item T)

	Lease        time.Duration
	PollInterval time.Duration
	BatchSize    int
	Log          *slog.Logger
	// Now is the clock of the lease check (time.Now when nil).
	Now func() time.Time

	token string
	wake  chan struct{}
}

// Start fills in what the loop makes itself: its claim token (random, one
// per dispatcher, so that replicas' claims never mix) and its wake-up
// channel. Call it once, before Run, RunOnce or Wake.
func (l *Loop[T]) Start() {
	b := make([]byte, 12)
	rand.Read(b)
	l.token = hex.EncodeToString(b)
	l.wake = make(chan struct{}, 1)
	if l.Now == nil {
		l.Now = time.Now
	}
	if l.Log == nil {
		l.Log = slog.Default()
	}
}

// Wake asks the loop to look for due messages now instead of at the next
// poll. It never blocks.
func (l *Loop[T]) Wake() {
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// Run delivers messages until ctx ends. The message being delivered when ctx
// ends is finished; claimed messages not yet started are released for
// others. A failed claim is logged and retried at the next poll (the
// database may come back), so the only way out is ctx ending.
func (l *Loop[T]) Run(ctx context.Context) {
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			l.Log.Info(l.Name + " stopped")
			return
		case <-timer.C:
		case <-l.wake:
		}
		for {
			n, err := l.RunOnce(ctx)
			if err != nil && ctx.Err() == nil {
				l.Log.Error(l.Name+": claim failed", "err", err)
			}
			if n < l.BatchSize || ctx.Err() != nil {
				break
			}
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(l.PollInterval)
	}
}

// RunOnce claims one batch and delivers it, returning how many messages it
// claimed and started.
func (l *Loop[T]) RunOnce(ctx context.Context) (int, error) {
	items, err := l.Claim(ctx, l.token, l.BatchSize, l.Lease)
	if err != nil {
		return 0, err
	}
	bg := context.WithoutCancel(ctx)
	for i, item := range items {
		// A message is started only while at least half of its lease
		// remains, so a slow batch cannot outlive its claim and let another
		// dispatcher deliver the same message: an attempt must finish
		// within half the lease (the dispatchers' timeouts are well under).
		until := l.ClaimedUntil(item)
		leaseLeft := until != nil && until.Sub(l.Now()) >= l.Lease/2
		if ctx.Err() != nil || !leaseLeft {
			if err := l.Release(bg, l.token); err != nil {
				l.Log.Error(l.Name+": release claims", "err", err)
			}
			return i, nil
		}
		l.Deliver(bg, item)
	}
	if len(items) > 0 {
		l.Log.Debug(l.Name+": batch done", "messages", len(items))
	}
	return len(items), nil
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
