package ratelimit

import (
	"context"
	"math"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// defaultMaxKeys bounds the keys a Memory limiter remembers. A key whose
// bucket is full again carries no information and is the first to go, so
// the bound only matters under a flood of distinct keys.
const defaultMaxKeys = 100_000

// Memory counts in this process: the embedded default, and Redis's stand-in
// while Redis is unreachable.
type Memory struct {
	mu      sync.Mutex
	buckets map[bucketKey]*rate.Limiter
	maxKeys int
	now     func() time.Time
}

type bucketKey struct{ quota, key string }

// NewMemory returns an in-process limiter remembering at most maxKeys keys
// (0: 100,000).
func NewMemory(maxKeys int) *Memory {
	if maxKeys <= 0 {
		maxKeys = defaultMaxKeys
	}
	return &Memory{buckets: make(map[bucketKey]*rate.Limiter), maxKeys: maxKeys, now: time.Now}
}

// Take implements Limiter.
func (m *Memory) Take(_ context.Context, key string, q Quota) (Result, error) {
	if q.Off() {
		return Result{Quota: q, Allowed: true, Remaining: math.MaxInt32}, nil
	}
	now := m.now()
	b := m.bucket(bucketKey{q.Name, key}, q, now)
	allowed := b.AllowN(now, 1)
	return resultFromTokens(q, allowed, b.TokensAt(now)), nil
}

// bucket returns key's bucket, making room when the map is full.
func (m *Memory) bucket(k bucketKey, q Quota, now time.Time) *rate.Limiter {
	m.mu.Lock()
	defer m.mu.Unlock()
	if b, ok := m.buckets[k]; ok {
		return b
	}
	if len(m.buckets) >= m.maxKeys {
		m.evict(now)
	}
	b := rate.NewLimiter(rate.Every(q.interval()), q.Rate)
	m.buckets[k] = b
	return b
}

// evict drops full buckets (idle keys), then, if that was not enough,
// arbitrary ones (map order is random) down to 90% of the bound.
func (m *Memory) evict(now time.Time) {
	for k, b := range m.buckets {
		if b.TokensAt(now) >= float64(b.Burst()) {
			delete(m.buckets, k)
		}
	}
	for k := range m.buckets {
		if len(m.buckets) < m.maxKeys*9/10 {
			break
		}
		delete(m.buckets, k)
	}
}

// resultFromTokens describes a bucket holding tokens (possibly fractional).
func resultFromTokens(q Quota, allowed bool, tokens float64) Result {
	r := Result{Quota: q, Allowed: allowed, Remaining: int(math.Max(0, math.Floor(tokens)))}
	interval := float64(q.interval())
	r.ResetAfter = time.Duration((float64(q.Rate) - tokens) * interval)
	if !allowed {
		r.RetryAfter = time.Duration((1 - tokens) * interval)
	}
	return r
}

// Len is the number of keys remembered.
func (m *Memory) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.buckets)
}
