package ratelimit

import (
	"sync"
	"time"

	"github.com/go-redis/redis_rate/v10"
)

// budgetWindow bounds a budget: it holds at most what the quota grants in
// this time (at least one event) and is dropped this long after Redis
// granted it. It is the whole tolerance of shared limits (package doc).
const budgetWindow = 100 * time.Millisecond

// budgets are one replica's budgets of shared quotas, by quota and key.
type budgets struct {
	mu      sync.Mutex
	m       map[bucketKey]*budget
	maxKeys int
	window  time.Duration
}

func newBudgets(maxKeys int, window time.Duration) budgets {
	return budgets{m: make(map[bucketKey]*budget), maxKeys: maxKeys, window: window}
}

// budget is a replica's share of one key's quota: events Redis counted
// already, spent here without a round trip until it runs out or expires.
type budget struct {
	mu sync.Mutex
	// left is what remains to spend until expires.
	left    int
	expires time.Time
	// granted is the size of the last grant; the next request is sized
	// from how much of it was used.
	granted int
	// refill is non-nil while one request of this key asks Redis; the
	// others wait for it to close.
	refill chan struct{}
	// What Redis said at the last grant, for the answer's headers:
	// the events left there after it, and when its bucket is full again.
	shared  int
	resetAt time.Time
	// refusedUntil: Redis refused until then; requests are refused here
	// meanwhile without asking again.
	refusedUntil time.Time
}

// get returns key's budget, making room when the map is full.
func (bs *budgets) get(k bucketKey) *budget {
	bs.mu.Lock()
	defer bs.mu.Unlock()
	if b, ok := bs.m[k]; ok {
		return b
	}
	if len(bs.m) >= bs.maxKeys {
		bs.evict(time.Now())
	}
	b := &budget{}
	bs.m[k] = b
	return b
}

// evict drops spent or expired budgets no request is refilling, then, if
// that was not enough, arbitrary ones (map order is random) down to 90% of
// the bound. Dropping a budget only forgets events Redis counted already:
// it can refuse early, never allow more.
func (bs *budgets) evict(now time.Time) {
	for k, b := range bs.m {
		if b.mu.TryLock() {
			idle := b.refill == nil && (b.left == 0 || !now.Before(b.expires)) && !now.Before(b.refusedUntil)
			b.mu.Unlock()
			if idle {
				delete(bs.m, k)
			}
		}
	}
	for k := range bs.m {
		if len(bs.m) < bs.maxKeys*9/10 {
			break
		}
		delete(bs.m, k)
	}
}

// spend answers from the budget when it can: one event from what is left,
// or a refusal while Redis's last refusal holds. ok is false when Redis
// must be asked. b.mu is held.
func (b *budget) spend(q Quota, now time.Time) (Result, bool) {
	if now.Before(b.refusedUntil) {
		return Result{Quota: q, Allowed: false, RetryAfter: b.refusedUntil.Sub(now), ResetAfter: max(0, b.resetAt.Sub(now))}, true
	}
	if b.left > 0 && now.Before(b.expires) {
		b.left--
		return Result{Quota: q, Allowed: true, Remaining: b.left + b.shared, ResetAfter: max(0, b.resetAt.Sub(now))}, true
	}
	return Result{}, false
}

// nextSize is how many events to ask Redis for: double the last grant when
// it ran out before it expired (demand is at least that per window), else
// what was used of it; at least 1, at most maxBudget. b.mu is held.
func (b *budget) nextSize(q Quota, now time.Time, window time.Duration) int {
	n := 1
	switch {
	case b.granted == 0:
	case b.left == 0 && now.Before(b.expires):
		n = 2 * b.granted
	default:
		n = b.granted - b.left
	}
	return min(max(n, 1), maxBudget(q, window))
}

// maxBudget is the largest budget of q a replica holds: what q grants in
// window, and at most a tenth of its burst, at least 1 event.
func maxBudget(q Quota, window time.Duration) int {
	perWindow := int(float64(q.Rate) * float64(window) / float64(q.Period))
	return max(1, min(q.Rate/10, perWindow))
}

// fill stores Redis's answer and spends its first event for the request
// that asked. b.mu is held.
func (b *budget) fill(q Quota, res *redis_rate.Result, now time.Time, window time.Duration) Result {
	b.resetAt = now.Add(max(res.ResetAfter, 0))
	b.shared = res.Remaining
	if res.Allowed <= 0 {
		b.left, b.granted = 0, 0
		b.refusedUntil = now.Add(max(res.RetryAfter, 0))
		return Result{Quota: q, Allowed: false, RetryAfter: max(res.RetryAfter, 0), ResetAfter: max(res.ResetAfter, 0)}
	}
	b.granted = res.Allowed
	b.left = res.Allowed - 1
	b.expires = now.Add(window)
	return Result{Quota: q, Allowed: true, Remaining: b.left + b.shared, ResetAfter: max(res.ResetAfter, 0)}
}
