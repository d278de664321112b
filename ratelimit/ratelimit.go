// Package ratelimit counts requests against named quotas, per key: in this
// process (one replica), or in Redis so that several replicas share one count.
//
// Both backends implement the same token-bucket semantics (GCRA in Redis,
// golang.org/x/time/rate in memory): a quota of N per period allows a burst
// of N, then refills at N per period.
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
