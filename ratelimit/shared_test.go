package ratelimit_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/membership-api/controlplane/ratelimit"
)

// replicas returns n Redis limiters sharing one prefix: n replicas of one
// deployment.
func replicas(t *testing.T, n int) []*ratelimit.Redis {
	t.Helper()
	first := newRedis(t)
	out := []*ratelimit.Redis{first}
	for range n - 1 {
		r, err := ratelimit.NewRedis(redisURL(t), ratelimit.Prefix(first), quiet)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close() })
		out = append(out, r)
	}
	return out
}

// The tolerance the package doc states, for the default quotas: a budget
// of at most what the quota grants in 100 ms, a tenth of its burst, and at
// least one event (exact counting).
func TestMaxBudget(t *testing.T) {
	for _, c := range []struct {
		quota string
		want  int
	}{
		{"100/s", 10}, {"600/m", 1}, {"1000/h", 1}, {"30/m", 1}, {"19/s", 1}, {"20/s", 2},
		{"5/100ms", 1}, {"1000000/s", 100000}, {"1/s", 1},
	} {
		q, err := ratelimit.ParseQuota("q", c.quota)
		if err != nil {
			t.Fatal(err)
		}
		if got := ratelimit.MaxBudget(q, 100*time.Millisecond); got != c.want {
			t.Errorf("%s: budget of at most %d, want %d", c.quota, got, c.want)
		}
	}
}

// A quota small enough for one-event budgets is exact across replicas:
// requests alternating between two replicas get exactly the quota, with
// the remaining count going down across both, then both refuse.
func TestRedis_SmallQuotaExactAcrossReplicas(t *testing.T) {
	rs := replicas(t, 2)
	ctx := context.Background()
	q := ratelimit.Quota{Name: "small", Rate: 6, Period: time.Minute}
	for i := range 6 {
		res, err := rs[i%2].Take(ctx, "k", q)
		if err != nil || !res.Allowed || res.Remaining != 5-i {
			t.Fatalf("take %d on replica %d: %+v, %v; want allowed with %d remaining", i, i%2, res, err, 5-i)
		}
	}
	for i, r := range rs {
		if res, err := r.Take(ctx, "k", q); err != nil || res.Allowed || res.RetryAfter <= 0 {
			t.Errorf("replica %d past the quota: %+v, %v; want refused with a retry time", i, res, err)
		}
	}
	if n := ratelimit.RoundTrips(rs[0]) + ratelimit.RoundTrips(rs[1]); n != 8 {
		t.Errorf("%d round trips, want 8 (one per event: budgets of one)", n)
	}
}

// Two replicas spending budgets of up to 100 events from one quota, many
// requests at once on each, allow the quota between them and no more:
// every event was counted in Redis before it was allowed, and what one
// replica holds unspent when the other is refused, it spends itself. The
// quota (1,000 an hour) refills by less than one event per 3.6 s, so the
// count cannot move while the test runs; what it gains meanwhile is
// allowed for.
func TestRedis_BudgetsShareOneQuota(t *testing.T) {
	rs := replicas(t, 2)
	for _, r := range rs {
		// Budgets of up to 100 events (a tenth of the quota) that do not
		// expire during the test.
		ratelimit.SetBudgetWindow(r, 10*time.Minute)
	}
	q := ratelimit.Quota{Name: "shared", Rate: 1000, Period: time.Hour}
	if c := ratelimit.MaxBudget(q, 10*time.Minute); c != 100 {
		t.Fatalf("budgets of at most %d, want 100", c)
	}
	ctx := context.Background()
	var allowed, errs atomic.Int64
	start := time.Now()
	var wg sync.WaitGroup
	for _, r := range rs {
		for range 4 {
			wg.Go(func() {
				for {
					res, err := r.Take(ctx, "k", q)
					if err != nil {
						errs.Add(1)
						return
					}
					if !res.Allowed {
						return
					}
					allowed.Add(1)
				}
			})
		}
	}
	wg.Wait()
	if errs.Load() != 0 {
		t.Fatalf("%d errors", errs.Load())
	}
	// Each grant that meets an almost empty bucket can lose a fraction of
	// an event (redis_rate's AllowAtMost grants whole events): at most one
	// event per replica.
	refilled := int64(time.Since(start)*time.Duration(q.Rate)/q.Period) + 1
	if got, low, high := allowed.Load(), int64(q.Rate-len(rs)), int64(q.Rate)+refilled; got < low || got > high {
		t.Errorf("%d events allowed across 2 replicas, want %d to %d (the quota, less fractions lost, plus its refill during the test)", got, low, high)
	}
	trips := ratelimit.RoundTrips(rs[0]) + ratelimit.RoundTrips(rs[1])
	if trips*5 > allowed.Load() {
		t.Errorf("%d round trips for %d events: budgets not used", trips, allowed.Load())
	}
	for i, r := range rs {
		if res, err := r.Take(ctx, "k", q); err != nil || res.Allowed {
			t.Errorf("replica %d after the quota was spent: %+v, %v; want refused", i, res, err)
		}
	}
	t.Logf("%d events allowed with %d round trips", allowed.Load(), trips)
}

// Redis going away mid-budget: the budget already granted is spent, then
// the replica counts on its own; no check returns an error.
func TestRedis_GoesAway(t *testing.T) {
	r := newRedis(t)
	ratelimit.SetBudgetWindow(r, 10*time.Minute)
	ctx := context.Background()
	q := ratelimit.Quota{Name: "away", Rate: 30, Period: time.Hour} // budgets of up to 3
	// A budget of 1, then of 2, one of which is left.
	for i := range 2 {
		if res, err := r.Take(ctx, "k", q); err != nil || !res.Allowed {
			t.Fatalf("take %d: %+v, %v", i, res, err)
		}
	}
	if n := ratelimit.RoundTrips(r); n != 2 {
		t.Fatalf("%d round trips, want 2", n)
	}
	r.Close()
	// The event left in the budget, then the replica's own count of 30.
	for i := range 31 {
		if res, err := r.Take(ctx, "k", q); err != nil || !res.Allowed {
			t.Fatalf("take %d without Redis: %+v, %v; want allowed (the budget, then the replica's own count)", i, res, err)
		}
	}
	if res, err := r.Take(ctx, "k", q); err != nil || res.Allowed {
		t.Errorf("past the quota without Redis: %+v, %v; want refused, no error", res, err)
	}
}
