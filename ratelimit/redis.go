package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	neturl "net/url"
	"sync/atomic"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
)

// Redis timeouts are short: a limit check is on every request's path, and
// while Redis is slow or away the fallback answers instead (never a 5xx).
const (
	redisTimeout = 250 * time.Millisecond
	// redisRetryAfter is how long Redis is left alone after a failure
	// before it is tried again, so an outage costs one timeout per
	// interval rather than one per request.
	redisRetryAfter = 2 * time.Second
	// redisWarnEvery spaces the outage warnings in the log.
	redisWarnEvery = time.Minute
)

// Redis shares counts between replicas through Redis, with GCRA
// (github.com/go-redis/redis_rate). It does not ask Redis for every event:
// each replica takes a small budget of a key's quota at a time (one
// EVALSHA) and spends it in memory (see the package documentation for the
// tolerance this buys). While Redis is unreachable it counts in this
// process instead (each replica then enforces the quota on its own, so the
// whole deployment allows up to replicas × quota) and logs a warning:
// failing open to per-replica limits keeps requests answered and still
// bounded.
type Redis struct {
	client    *redis.Client
	limiter   *redis_rate.Limiter
	fallback  *Memory
	prefix    string
	log       *slog.Logger
	downUntil atomic.Int64 // unix nanoseconds; Redis is skipped until then
	lastWarn  atomic.Int64 // unix nanoseconds of the last outage warning

	budgets budgets
	// roundTrips counts the budget requests sent to Redis.
	roundTrips atomic.Int64
}

// NewRedis connects to the Redis at url (redis://[user:password@]host:port/db
// or rediss:// for TLS); keys start with prefix, so deployments can share a
// Redis. It does not fail when Redis is down: the first checks then use the
// fallback and log why.
func NewRedis(url, prefix string, log *slog.Logger) (*Redis, error) {
	opts, err := redis.ParseURL(url)
	if err != nil {
		// net/url's messages quote the URL, or the part of it that did not
		// parse, which can be part of the password: none of it is repeated.
		var urlErr *neturl.Error
		if errors.As(err, &urlErr) {
			return nil, errors.New("--redis: not a valid URL (expected redis://[user:password@]host:6379/0 or rediss://…; percent-encode @ : / ? # % in the password)")
		}
		return nil, fmt.Errorf("--redis: %w (expected redis://[user:password@]host:6379/0 or rediss://…)", err)
	}
	opts.DialTimeout, opts.ReadTimeout, opts.WriteTimeout, opts.PoolTimeout = redisTimeout, redisTimeout, redisTimeout, redisTimeout
	opts.MaxRetries, opts.DialerRetries = -1, 1 // the fallback is the retry
	opts.MaintNotificationsConfig = &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
	// go-redis prints its own connection errors to stderr; the outage
	// warning below says the same once a minute, through the server's log.
	redis.SetLogger(quietRedisLog{})
	client := redis.NewClient(opts)
	return &Redis{client: client, limiter: redis_rate.NewLimiter(client), fallback: NewMemory(0), prefix: prefix, log: log,
		budgets: newBudgets(defaultMaxKeys, budgetWindow)}, nil
}

// Ping tells whether Redis answers (for start-up logs).
func (r *Redis) Ping(ctx context.Context) error { return r.client.Ping(ctx).Err() }

// Close closes the connections to Redis.
func (r *Redis) Close() error { return r.client.Close() }

// Take implements Limiter: from this replica's budget for key when it
// holds one, else from a new budget taken from Redis.
func (r *Redis) Take(ctx context.Context, key string, q Quota) (Result, error) {
	if q.Off() {
		return Result{Quota: q, Allowed: true, Remaining: math.MaxInt32}, nil
	}
	b := r.budgets.get(bucketKey{q.Name, key})
	for {
		now := time.Now()
		b.mu.Lock()
		if res, ok := b.spend(q, now); ok {
			b.mu.Unlock()
			return res, nil
		}
		if b.refill != nil {
			// Another request of this key is asking Redis: wait for its
			// answer rather than ask too (each ask would take a budget, and
			// the replica would hold several).
			wait := b.refill
			b.mu.Unlock()
			<-wait
			continue
		}
		if now.UnixNano() < r.downUntil.Load() {
			b.mu.Unlock()
			return r.fallback.Take(ctx, key, q)
		}
		n := b.nextSize(q, now, r.budgets.window)
		b.refill = make(chan struct{})
		b.mu.Unlock()
		if res, ok := r.refill(ctx, b, key, q, n); ok {
			return res, nil
		}
		return r.fallback.Take(ctx, key, q)
	}
}

// refill asks Redis for a budget of n for b (whose refill channel the
// caller set) and answers the request that asked; ok is false when Redis
// failed (then it is marked down). The waiters are released however it
// ends, a panic included.
func (r *Redis) refill(ctx context.Context, b *budget, key string, q Quota, n int) (_ Result, ok bool) {
	var res *redis_rate.Result
	var err error
	defer func() {
		b.mu.Lock()
		close(b.refill)
		b.refill = nil
		b.mu.Unlock()
	}()
	if res, err = r.ask(ctx, key, q, n); err != nil {
		r.down(time.Now(), err)
		return Result{}, false
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.fill(q, res, time.Now(), r.budgets.window), true
}

// ask takes at most n events of key's quota from Redis: one round trip.
func (r *Redis) ask(ctx context.Context, key string, q Quota, n int) (*redis_rate.Result, error) {
	r.roundTrips.Add(1)
	// The caller's cancellation must not turn into "Redis is down".
	return r.limiter.AllowAtMost(context.WithoutCancel(ctx), r.prefix+q.Name+":"+key,
		redis_rate.Limit{Rate: q.Rate, Burst: q.Rate, Period: q.Period}, n)
}

// down records a Redis failure: the fallback counts for a while, and the
// log says so once a minute (never with the URL, which may hold a password).
func (r *Redis) down(now time.Time, err error) {
	r.downUntil.Store(now.Add(redisRetryAfter).UnixNano())
	last := r.lastWarn.Load()
	if now.UnixNano()-last >= int64(redisWarnEvery) && r.lastWarn.CompareAndSwap(last, now.UnixNano()) {
		r.log.Warn("rate limits: Redis unreachable, counting in this replica until it answers (limits are per replica meanwhile)",
			"err", errors.Join(ErrUnavailable, err))
	}
}

// quietRedisLog drops go-redis's internal log lines (process-wide: this
// process talks to Redis only here).
type quietRedisLog struct{}

func (quietRedisLog) Printf(context.Context, string, ...any) {}
