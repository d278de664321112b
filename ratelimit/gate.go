package ratelimit

import (
	"sync"
	"time"
)

// Gate remembers, in this process, the keys that are over a quota and until
// when, so that their next requests are refused without asking the limiter
// (no Redis round trip for a client that keeps hammering) and so that events
// counted after they happen (a change that succeeded) can close the gate for
// the ones that follow.
type Gate struct {
	mu      sync.Mutex
	until   map[bucketKey]time.Time
	maxKeys int
}

// NewGate returns an empty gate remembering at most maxKeys closed keys
// (0: 100,000; past that, reopened keys and then arbitrary ones are
// dropped: a flood of distinct keys can reopen some early, never grow it).
func NewGate(maxKeys int) *Gate {
	if maxKeys <= 0 {
		maxKeys = defaultMaxKeys
	}
	return &Gate{until: make(map[bucketKey]time.Time), maxKeys: maxKeys}
}

// Closed returns how long key stays refused under q, or 0 if it is open.
func (g *Gate) Closed(q Quota, key string, now time.Time) time.Duration {
	k := bucketKey{q.Name, key}
	g.mu.Lock()
	defer g.mu.Unlock()
	until, ok := g.until[k]
	if !ok {
		return 0
	}
	if !now.Before(until) {
		delete(g.until, k)
		return 0
	}
	return until.Sub(now)
}

// Close refuses key under q for d.
func (g *Gate) Close(q Quota, key string, d time.Duration, now time.Time) {
	if d <= 0 {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.until) >= g.maxKeys {
		// Drop the reopened keys, then arbitrary ones (map order is
		// random) down to 90%, so the next Close does not scan again.
		for k, until := range g.until {
			if !now.Before(until) || len(g.until) >= g.maxKeys*9/10 {
				delete(g.until, k)
			}
		}
	}
	g.until[bucketKey{q.Name, key}] = now.Add(d)
}

// UntilNext is how long after r the next event fits the quota: the retry
// time of a refusal, or, after the last event of a burst was allowed, the
// time until one event's budget is back (0 while budget remains).
func (r Result) UntilNext() time.Duration {
	switch {
	case !r.Allowed:
		return r.RetryAfter
	case r.Remaining > 0 || r.Quota.Off():
		return 0
	}
	return max(0, r.ResetAfter-time.Duration(r.Quota.Rate-1)*r.Quota.interval())
}
