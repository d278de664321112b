package server

import (
	"context"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/membership-api/controlplane/metrics"
	"github.com/membership-api/controlplane/store"
)

// UnavailableRetryAfter is the Retry-After of a 503, in seconds. A
// PostgreSQL restart (pg_ctl restart -m fast) takes about a second under
// load, and a replica's pool reconnects at its next request: two seconds
// lets most retries land after it without making clients wait long.
const UnavailableRetryAfter = 2

// unavailableError is the API error of a request the database could not
// serve: 503 with Retry-After (writeError), the cause kept for the log.
func unavailableError(u *store.UnavailableError) *APIError {
	return &APIError{Status: http.StatusServiceUnavailable, Kind: KindUnavailable, Cause: u,
		Message: "the database cannot be reached right now (restarting or down): retry after the seconds in Retry-After"}
}

var unavailableRetryAfter = []string{strconv.Itoa(UnavailableRetryAfter)}

// outageSummaryEvery is how often an ongoing outage logs its count;
// outageProbeEvery how often it asks the database whether it is back.
const (
	outageSummaryEvery = 5 * time.Second
	outageProbeEvery   = time.Second
)

// outages says an outage once: an outage of the database makes every
// request fail the same way, and a line per request (thousands a second)
// hid everything else in the log. The first 503 of a cause logs a warning
// with what failed; while the outage lasts one line every
// outageSummaryEvery gives the count of 503s since the last; once the
// database answers a ping again, "database reachable again" with the total
// ends it. Every 503 is counted in controlplane_unavailable_total.
type outages struct {
	log     *slog.Logger
	metrics *metrics.Metrics
	ping    func(context.Context) error
	// summaryEvery and probeEvery are outageSummaryEvery and
	// outageProbeEvery (tests shorten them).
	summaryEvery, probeEvery time.Duration

	mu     sync.Mutex
	active map[string]*outage // by cause; empty between outages
	// watching: the watch goroutine runs (from the first 503 of an outage
	// until the database answers again).
	watching bool
	// stop ends the watch goroutine (Server's close function).
	stop chan struct{}
	once sync.Once
}

// outage is one cause's ongoing outage.
type outage struct {
	since        time.Time
	total, fresh int // 503s in all, and since the last summary
}

func newOutages(log *slog.Logger, m *metrics.Metrics, ping func(context.Context) error) *outages {
	if m != nil {
		m.StartUnavailable(store.UnavailableCauses)
	}
	return &outages{log: log, metrics: m, ping: ping, summaryEvery: outageSummaryEvery, probeEvery: outageProbeEvery,
		active: map[string]*outage{}, stop: make(chan struct{})}
}

// answered records a request answered 503 for u (counted and, the first
// time for its cause, logged). A failed readiness probe is recorded with
// answered false: logged the same way, not counted as a request.
func (o *outages) answered(ctx context.Context, u *store.UnavailableError, answered bool) {
	if answered && o.metrics != nil {
		o.metrics.Unavailable(u.Cause)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	cur := o.active[u.Cause]
	if cur == nil {
		cur = &outage{since: time.Now()}
		o.active[u.Cause] = cur
		// The request's context: the line names the request ID that
		// first met the outage.
		o.log.WarnContext(ctx, "database unavailable: answering 503 with Retry-After until it is back",
			"cause", u.Cause, "err", u.Summary())
		if !o.watching {
			o.watching = true
			go o.watch() //nolint:gosec,contextcheck // G118: the watch outlives the request that started it (it ends with the outage)
		}
	}
	if answered {
		cur.total++
		cur.fresh++
	}
}

// watch pings the database while an outage lasts, logs its summaries, and
// ends it once the database answers.
func (o *outages) watch() {
	probe := time.NewTicker(o.probeEvery)
	defer probe.Stop()
	lastSummary := time.Now()
	for {
		select {
		case <-o.stop:
			return
		case <-probe.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), o.probeEvery)
		err := o.ping(ctx)
		cancel()
		o.mu.Lock()
		if err == nil {
			for cause, cur := range o.active {
				o.log.Info("database reachable again", "cause", cause, "unavailable_for", time.Since(cur.since).Round(time.Millisecond),
					"answered_503", cur.total)
			}
			clear(o.active)
			o.watching = false
			o.mu.Unlock()
			return
		}
		if time.Since(lastSummary) >= o.summaryEvery {
			lastSummary = time.Now()
			for cause, cur := range o.active {
				o.log.Warn("database still unavailable", "cause", cause, "unavailable_for", time.Since(cur.since).Round(time.Second),
					"answered_503", cur.fresh, "answered_503_total", cur.total)
				cur.fresh = 0
			}
		}
		o.mu.Unlock()
	}
}

// close stops the watch goroutine, if any.
func (o *outages) close() { o.once.Do(func() { close(o.stop) }) }
