// Package ratelimit counts requests against named quotas, per key: in this
// process (one replica), or in Redis so that several replicas share one count.
//
// Both backends implement the same token-bucket semantics (GCRA in Redis,
// golang.org/x/time/rate in memory): a quota of N per period allows a burst
// of N, then refills at N per period.
//
// # Shared quotas: budgets, and how far over a quota replicas can go
//
// A round trip to Redis per event cost 60% of the invite path's throughput
// (two or three quotas per invite). So a replica asks Redis for a budget of
// several events of a key's quota at once, in one atomic GCRA script
// (redis_rate's AllowAtMost: it grants as many as the bucket holds, up to
// the size asked), and spends it in memory. Requests of a key that find its
// budget empty wait for one of them to ask (one request in flight per key
// and replica). A budget starts at one event, doubles while budgets run out
// within their window and shrinks to what was used otherwise, and is at
// most
//
//	c = max(1, min(N/10, what the quota grants in 100 ms))
//
// for a quota of N per period; it is dropped 100 ms after Redis granted it.
// Unused budget is not given back: Redis counted it, and the bucket refills.
//
// Redis counts every event before any replica allows it, so over any stretch
// of time a deployment of R replicas allows what one shared counter would,
// plus events that Redis counted up to 100 ms earlier and a replica allowed
// later: at most R × (c−1) events over the quota, each within 100 ms of its
// grant. In the other direction a replica's unspent budget (at most c−1
// events) is unavailable to the others until it expires, and a grant that
// empties the bucket drops a fraction of an event: the error there is on the
// refusing side. With c = 1 (quotas under 20 events a second, or under 20 in
// all) counting is exact, one round trip per event. The defaults: caller
// 100/s has c = 10, so two replicas can allow 18 more than 100 in a second;
// workspace writes (600/m), invites (1000/h) and failed authentications
// (30/m) have c = 1 and are exact. A refusal from Redis is remembered until
// its retry time, so a key over its quota costs no round trips either.
//
// Measured (BenchmarkTake, 2 vCPUs shared with other work, so noisy): a
// check from a budget ~0.3 µs against ~0.5 µs in memory and 45–250 µs for
// a round trip per event; 3 round trips per million checks at a high quota.
package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Quota is a named limit: Rate events per Period, in bursts of up to Rate.
type Quota struct {
	// Name identifies the quota in the RateLimit-Policy header ("caller").
	Name   string
	Rate   int
	Period time.Duration
}

// ParseQuota reads "N/s", "N/m", "N/h" (or "N/<Go duration>", e.g.
// "N/10m") as a quota called name. "0" or "off" disables it (zero Quota).
func ParseQuota(name, s string) (Quota, error) {
	if s == "0" || s == "off" {
		return Quota{Name: name}, nil
	}
	n, per, ok := strings.Cut(s, "/")
	rate, err := strconv.Atoi(n)
	if !ok || err != nil || rate <= 0 {
		return Quota{}, fmt.Errorf("rate limit %q: use N/s, N/m, N/h (N > 0) or off", s)
	}
	period, ok := map[string]time.Duration{"s": time.Second, "m": time.Minute, "h": time.Hour}[per]
	if !ok {
		if period, err = time.ParseDuration(per); err != nil || period <= 0 {
			return Quota{}, fmt.Errorf("rate limit %q: the period after / must be s, m, h or a duration such as 10m", s)
		}
	}
	return Quota{Name: name, Rate: rate, Period: period}, nil
}

// Off tells whether the quota limits nothing.
func (q Quota) Off() bool { return q.Rate <= 0 || q.Period <= 0 }

// String is the quota as ParseQuota reads it.
func (q Quota) String() string {
	if q.Off() {
		return "off"
	}
	switch q.Period {
	case time.Second:
		return strconv.Itoa(q.Rate) + "/s"
	case time.Minute:
		return strconv.Itoa(q.Rate) + "/m"
	case time.Hour:
		return strconv.Itoa(q.Rate) + "/h"
	}
	return strconv.Itoa(q.Rate) + "/" + q.Period.String()
}

// interval is the time one event's budget takes to come back.
func (q Quota) interval() time.Duration { return q.Period / time.Duration(q.Rate) }

// Result is a key's standing under a quota after a check.
type Result struct {
	Quota Quota
	// Allowed: the event fits the quota and was counted.
	Allowed bool
	// Remaining events allowed right now.
	Remaining int
	// RetryAfter is the wait until one event is allowed again (0 when Allowed).
	RetryAfter time.Duration
	// ResetAfter is the wait until the full burst is available again.
	ResetAfter time.Duration
}

// Limiter checks events against quotas. Keys are opaque; callers prefix them
// with what they count ("ip:", "caller:", ...).
type Limiter interface {
	// Take counts one event for key if the quota allows it.
	Take(ctx context.Context, key string, q Quota) (Result, error)
}

// ErrUnavailable wraps failures of a shared backend (Redis unreachable).
var ErrUnavailable = errors.New("rate limit backend unavailable")
