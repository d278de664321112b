package ratelimit_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/membership-api/controlplane/ratelimit"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// redisURL is the Redis of TEST_REDIS_URL (default the local one, except
// under -short, which needs no services); empty skips.
func redisURL(tb testing.TB) string {
	url, set := os.LookupEnv("TEST_REDIS_URL")
	if !set && testing.Short() {
		tb.Skip("-short and TEST_REDIS_URL unset: skipping the Redis tests (make test sets it)")
	}
	if !set {
		url = "redis://127.0.0.1:6379/0"
	}
	if url == "" {
		tb.Skip("TEST_REDIS_URL is empty: skipping the Redis tests")
	}
	return url
}

func newRedis(tb testing.TB) *ratelimit.Redis {
	tb.Helper()
	b := make([]byte, 6)
	rand.Read(b)
	r, err := ratelimit.NewRedis(redisURL(tb), "cptest-"+hex.EncodeToString(b)+":", quiet)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { r.Close() })
	if err := r.Ping(context.Background()); err != nil {
		tb.Fatalf("Redis: %v (start one, or set TEST_REDIS_URL= to skip)", err)
	}
	return r
}

func TestParseQuota(t *testing.T) {
	for in, want := range map[string]ratelimit.Quota{
		"100/s":  {Name: "q", Rate: 100, Period: time.Second},
		"30/m":   {Name: "q", Rate: 30, Period: time.Minute},
		"1000/h": {Name: "q", Rate: 1000, Period: time.Hour},
		"5/10m":  {Name: "q", Rate: 5, Period: 10 * time.Minute},
		"off":    {Name: "q"},
		"0":      {Name: "q"},
	} {
		got, err := ratelimit.ParseQuota("q", in)
		if err != nil || got != want {
			t.Errorf("ParseQuota(%q) = %+v, %v; want %+v", in, got, err, want)
		}
		if again, err := ratelimit.ParseQuota("q", got.String()); err != nil || again != got {
			t.Errorf("%+v.String() = %q does not read back", got, got.String())
		}
	}
	for _, bad := range []string{"", "100", "x/s", "-1/s", "10/fortnight", "10/-1s"} {
		if _, err := ratelimit.ParseQuota("q", bad); err == nil {
			t.Errorf("ParseQuota(%q): no error", bad)
		}
	}
}

// Both backends answer alike: a burst of Rate, then refusals saying when
// to come back, and keys and quotas counted apart.
func TestLimiters_Burst(t *testing.T) {
	for name, lim := range map[string]ratelimit.Limiter{"memory": ratelimit.NewMemory(0), "redis": newRedis(t)} {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			q := ratelimit.Quota{Name: "burst", Rate: 5, Period: time.Minute}
			for i := range 5 {
				res, err := lim.Take(ctx, "k", q)
				if err != nil || !res.Allowed || res.Remaining != 4-i {
					t.Fatalf("take %d: %+v, %v; want allowed with %d remaining", i, res, err, 4-i)
				}
			}
			res, err := lim.Take(ctx, "k", q)
			if err != nil || res.Allowed || res.Remaining != 0 {
				t.Fatalf("take 6: %+v, %v; want refused", res, err)
			}
			// One event's budget comes back every 12 s.
			if res.RetryAfter <= 0 || res.RetryAfter > 12*time.Second || res.UntilNext() != res.RetryAfter {
				t.Errorf("RetryAfter %v (UntilNext %v), want in (0, 12s]", res.RetryAfter, res.UntilNext())
			}
			if res.ResetAfter < 59*time.Second || res.ResetAfter > time.Minute {
				t.Errorf("ResetAfter %v, want about a minute", res.ResetAfter)
			}
			if res, _ := lim.Take(ctx, "other", q); !res.Allowed {
				t.Error("another key was refused")
			}
			if res, _ := lim.Take(ctx, "k", ratelimit.Quota{Name: "other-quota", Rate: 1, Period: time.Hour}); !res.Allowed {
				t.Error("the same key under another quota was refused")
			}
		})
	}
}

// The last event of a burst closes the gate until one event's budget is back.
func TestResult_UntilNext(t *testing.T) {
	lim := ratelimit.NewMemory(0)
	q := ratelimit.Quota{Name: "n", Rate: 2, Period: time.Minute}
	first, _ := lim.Take(context.Background(), "k", q)
	last, _ := lim.Take(context.Background(), "k", q)
	if first.UntilNext() != 0 {
		t.Errorf("budget left, but UntilNext = %v", first.UntilNext())
	}
	if d := last.UntilNext(); d <= 29*time.Second || d > 30*time.Second {
		t.Errorf("after the last of the burst UntilNext = %v, want about 30s", d)
	}
	g := ratelimit.NewGate(0)
	now := time.Now()
	g.Close(q, "k", last.UntilNext(), now)
	if g.Closed(q, "k", now) <= 0 || g.Closed(q, "other", now) != 0 {
		t.Error("gate: want k closed and other open")
	}
	if g.Closed(q, "k", now.Add(31*time.Second)) != 0 {
		t.Error("gate still closed after the wait")
	}
}

// A flood of distinct keys does not grow the memory limiter without bound.
func TestMemory_BoundedKeys(t *testing.T) {
	lim := ratelimit.NewMemory(1000)
	q := ratelimit.Quota{Name: "b", Rate: 1, Period: time.Hour}
	for i := range 10_000 {
		if _, err := lim.Take(context.Background(), strconv.Itoa(i), q); err != nil {
			t.Fatal(err)
		}
	}
	if n := lim.Len(); n > 1000 {
		t.Errorf("%d keys remembered, want at most 1000", n)
	}
}

// What a limit check costs per request: BenchmarkTake/memory, /redis
// (budgets taken from the local Redis, with the round trips per check) and
// /redis-per-event (a quota whose budgets are one event: a round trip per
// check, what every check cost before budgets); BenchmarkGateClosed (the
// local check done before every Take).
func BenchmarkTake(b *testing.B) {
	high := ratelimit.Quota{Name: "bench", Rate: 1 << 30, Period: time.Second}
	// 1<<30 an hour: budgets of one event (under 20 a second), never refused.
	perEvent := ratelimit.Quota{Name: "bench-1", Rate: 1 << 30, Period: 1 << 30 * time.Second / 10}
	for _, c := range []struct {
		name string
		lim  ratelimit.Limiter
		q    ratelimit.Quota
	}{{"memory", ratelimit.NewMemory(0), high}, {"redis", newRedis(b), high}, {"redis-per-event", newRedis(b), perEvent}} {
		b.Run(c.name, func(b *testing.B) {
			ctx := context.Background()
			var before int64
			if r, ok := c.lim.(*ratelimit.Redis); ok {
				before = ratelimit.RoundTrips(r)
			}
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := c.lim.Take(ctx, "caller:sub:bench", c.q); err != nil {
						b.Fatal(err)
					}
				}
			})
			if r, ok := c.lim.(*ratelimit.Redis); ok {
				b.ReportMetric(float64(ratelimit.RoundTrips(r)-before)/float64(b.N), "roundtrips/op")
			}
		})
	}
}

func BenchmarkGateClosed(b *testing.B) {
	g := ratelimit.NewGate(0)
	q := ratelimit.Quota{Name: "bench", Rate: 1, Period: time.Second}
	now := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			g.Closed(q, "caller:sub:bench", now)
		}
	})
}

// A malformed --redis URL is refused without printing its password.
func TestNewRedis_BadURLKeepsPassword(t *testing.T) {
	for _, url := range []string{"redis://user:s3cret@ho st:6379/0", "redis://user:s3cret@host:6379/x", "http://user:s3cret@host", "redis://user:s3cr/et@host:6379/0"} {
		_, err := ratelimit.NewRedis(url, "p:", quiet)
		if err == nil || strings.Contains(err.Error(), "s3cret") {
			t.Errorf("%s: got %v, want an error without the password", url, err)
		}
	}
}
