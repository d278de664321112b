// Package metrics holds the program's Prometheus metrics: one registry, its
// series, and small recording methods. The rest of the program reaches it
// through plain functions (store.Hooks, mail.Dispatcher.OnOutcome) or, in
// the HTTP layer, through these methods, so only this package and main know
// about Prometheus.
//
// Every label value comes from a fixed set (operation ids of the spec,
// registered routes, HTTP methods, status codes, reasons and outcomes named
// here): never an email, workspace, sub, token or raw path.
package metrics

import (
	"context"
	"database/sql"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

const namespace = "controlplane"

// Build describes the running binary (controlplane_build_info).
type Build struct {
	Version, Revision, GoVersion string
}

// Reasons of authentication failures (controlplane_auth_failures_total).
const (
	AuthMissing           = "missing"            // no credential sent (401)
	AuthMalformed         = "malformed"          // a credential header not of the form "Bearer …" (401)
	AuthTwoCredentials    = "two_credentials"    // two different credentials (400)
	AuthUnknownAPIKey     = "unknown_api_key"    // an API key unknown or revoked (401)
	AuthInvalidToken      = "invalid_token"      // a JWT refused: signature, claims or form (401)
	AuthExpiredToken      = "expired_token"      // a JWT past its exp (401)
	AuthWrongScheme       = "wrong_scheme"       // a key where only a token is accepted, or the reverse (401)
	AuthInsufficientScope = "insufficient_scope" // a valid token without a required scope (403)
)

var authReasons = []string{AuthMissing, AuthMalformed, AuthTwoCredentials, AuthUnknownAPIKey,
	AuthInvalidToken, AuthExpiredToken, AuthWrongScheme, AuthInsufficientScope}

// Metrics is the registry and every series the program records.
type Metrics struct {
	reg          *prometheus.Registry
	requests     *prometheus.HistogramVec
	authFailures *prometheus.CounterVec
	rateLimited  *prometheus.CounterVec
	inviteBatch  prometheus.Histogram
	sqliteCommit prometheus.Histogram
	sqliteFsync  prometheus.Histogram
	mails        *prometheus.CounterVec
	webhooks     *prometheus.CounterVec
	schema       prometheus.Gauge
	unavailable  *prometheus.CounterVec

	mu     sync.Mutex
	series map[[2]string]*RequestSeries
}

// latencyBuckets span a cached read (~100 µs) to the 30 s write timeout.
var latencyBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}

// storageBuckets span a WAL write from the page cache to a slow disk's fsync.
var storageBuckets = []float64{.00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1}

// New returns the metrics of a process: the program's series plus the Go
// runtime's and the process's (memory, GC, CPU, open files).
func New(b Build, quotas []string) *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry(), series: map[[2]string]*RequestSeries{}}
	m.requests = prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: namespace,
		Name:    "http_request_duration_seconds",
		Help:    "Time from receiving a request to the end of its answer, by operation (the spec's operationId, a route outside the spec, or \"unmatched\"), method and status code; _count counts requests.",
		Buckets: latencyBuckets}, []string{"operation", "method", "code"})
	m.authFailures = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace,
		Name: "auth_failures_total",
		Help: "Requests refused by the security requirements of their operation, by reason."}, []string{"reason"})
	m.rateLimited = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace,
		Name: "rate_limited_total",
		Help: "Requests answered 429, by the quota they reached."}, []string{"quota"})
	m.inviteBatch = prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: namespace,
		Name:    "invite_batch_size",
		Help:    "Invites settled by one batch statement (SQLite: one group commit; PostgreSQL: one batch).",
		Buckets: prometheus.ExponentialBuckets(1, 2, 9)})
	m.sqliteCommit = prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: namespace,
		Name:    "sqlite_commit_duration_seconds",
		Help:    "Time of a SQLite group commit's COMMIT (the WAL write; the fsync is apart).",
		Buckets: storageBuckets})
	m.sqliteFsync = prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: namespace,
		Name:    "sqlite_fsync_duration_seconds",
		Help:    "Time of an fsync of the SQLite WAL file; the writes it covers are answered after it.",
		Buckets: storageBuckets})
	m.mails = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace,
		Name: "mails_total",
		Help: "Invitation email delivery attempts, by outcome: sent, retry (failed, will be retried), failed (for good), cancelled (invitation no longer pending)."},
		[]string{"outcome"})
	m.webhooks = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace,
		Name: "webhooks_total",
		Help: "Webhook delivery attempts, by outcome: delivered (a 2xx), retry (failed, will be retried), failed (for good)."},
		[]string{"outcome"})
	m.schema = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: namespace,
		Name: "schema_version",
		Help: "The database's schema version (goose_db_version) when this process started: during a rolling upgrade, replicas of two releases show two versions' binaries on one schema."})
	m.unavailable = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace,
		Name: "unavailable_total",
		Help: "Requests answered 503 because the database could not be reached, by cause (refused, cannot_connect_now, terminated, connection_lost, timeout, …)."},
		[]string{"cause"})
	buildInfo := prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: namespace,
		Name: "build_info",
		Help: "Always 1: the module version, VCS revision and Go version of the running binary."},
		[]string{"version", "revision", "go_version"})
	buildInfo.WithLabelValues(b.Version, b.Revision, b.GoVersion).Set(1)
	m.reg.MustRegister(m.requests, m.authFailures, m.rateLimited, m.inviteBatch, m.sqliteCommit, m.sqliteFsync, m.mails, m.webhooks, m.schema, m.unavailable, buildInfo,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	// Series that exist from the start read 0 rather than absent, so
	// rate() and alerts see their first increase.
	for _, r := range authReasons {
		m.authFailures.WithLabelValues(r)
	}
	for _, q := range quotas {
		m.rateLimited.WithLabelValues(q)
	}
	for _, o := range []string{"sent", "retry", "failed", "cancelled"} {
		m.mails.WithLabelValues(o)
	}
	for _, o := range []string{"delivered", "retry", "failed"} {
		m.webhooks.WithLabelValues(o)
	}
	return m
}

// SetSchemaVersion records the database's schema version (serve sets it
// at start, after migrating or checking).
func (m *Metrics) SetSchemaVersion(v int64) { m.schema.Set(float64(v)) }

// Handler serves the registry in Prometheus' text format. A collector that
// fails (the outbox query) is left out of that scrape and logged; the rest
// is served.
func (m *Metrics) Handler(log *slog.Logger) http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		ErrorHandling: promhttp.ContinueOnError, ErrorLog: errorLog{log}, Registry: m.reg,
		// No cap on scrapes in flight: two Prometheus servers (an HA pair)
		// scrape at once, and the outbox query, the one costly collector,
		// runs once per 15 s under its own lock whatever the scrapes.
		Timeout: 10 * time.Second,
	})
}

type errorLog struct{ log *slog.Logger }

func (l errorLog) Println(v ...any) { l.log.Warn("metrics: collect failed", "err", v) }

// AuthFailure counts a request refused by its security requirements.
func (m *Metrics) AuthFailure(reason string) { m.authFailures.WithLabelValues(reason).Inc() }

// RateLimited counts a 429 for quota.
func (m *Metrics) RateLimited(quota string) { m.rateLimited.WithLabelValues(quota).Inc() }

// StartUnavailable makes the unavailable series of causes read 0 from the
// start (the causes are the store's, which this package does not know).
func (m *Metrics) StartUnavailable(causes []string) {
	for _, c := range causes {
		m.unavailable.WithLabelValues(c)
	}
}

// Unavailable counts a request answered 503 because the database could not
// be reached; cause comes from a bounded set (store.UnavailableCauses).
func (m *Metrics) Unavailable(cause string) { m.unavailable.WithLabelValues(cause).Inc() }

// InviteBatch records the size of an invite batch (store.Hooks).
func (m *Metrics) InviteBatch(size int) { m.inviteBatch.Observe(float64(size)) }

// SQLiteCommit records a group commit's COMMIT time (store.Hooks).
func (m *Metrics) SQLiteCommit(d time.Duration) { m.sqliteCommit.Observe(d.Seconds()) }

// SQLiteFsync records a WAL fsync's time (store.Hooks).
func (m *Metrics) SQLiteFsync(d time.Duration) { m.sqliteFsync.Observe(d.Seconds()) }

// MailOutcome counts a delivery attempt (mail.Dispatcher.OnOutcome).
func (m *Metrics) MailOutcome(outcome string) { m.mails.WithLabelValues(outcome).Inc() }

// WebhookOutcome counts a webhook delivery attempt (webhook.Dispatcher.OnOutcome).
func (m *Metrics) WebhookOutcome(outcome string) { m.webhooks.WithLabelValues(outcome).Inc() }

// RegisterDB adds the statistics of a connection pool (go_sql_… series,
// label db_name).
func (m *Metrics) RegisterDB(name string, db *sql.DB) {
	m.reg.MustRegister(collectors.NewDBStatsCollector(db, name))
}

// RequestSeries records the requests of one operation and method. Callers
// keep it (one per operation, made once), so that recording a request is an
// array index and an atomic load, without building label values.
type RequestSeries struct {
	vec               *prometheus.HistogramVec
	operation, method string
	// byCode caches the observer of each status code 100–599.
	byCode [500]atomic.Pointer[observer]
}

type observer struct{ prometheus.Observer }

// Requests returns the series of operation and method, the same one for
// the same pair. Both must come from a bounded set.
func (m *Metrics) Requests(operation, method string) *RequestSeries {
	key := [2]string{operation, method}
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.series[key]
	if !ok {
		s = &RequestSeries{vec: m.requests, operation: operation, method: method}
		m.series[key] = s
	}
	return s
}

// Observe records one request answered with status after d.
func (s *RequestSeries) Observe(status int, d time.Duration) {
	if status < 100 || status > 599 {
		s.vec.WithLabelValues(s.operation, s.method, strconv.Itoa(status)).Observe(d.Seconds())
		return
	}
	slot := &s.byCode[status-100]
	o := slot.Load()
	if o == nil {
		// Two first requests may both get here: they get the same child.
		o = &observer{s.vec.WithLabelValues(s.operation, s.method, strconv.Itoa(status))}
		slot.Store(o)
	}
	o.Observe(d.Seconds())
}

// OutboxStats is the outbox's state at a scrape.
type OutboxStats struct {
	Pending, Failed int64
	// OldestPending is when the oldest pending email was queued; zero when
	// none is. Its age is taken at each scrape, so it grows between reads.
	OldestPending time.Time
}

// RegisterOutbox adds the outbox gauges, read through read at most once
// per every (later scrapes within it get the figures read last), each
// read bounded by a timeout.
func (m *Metrics) RegisterOutbox(read func(context.Context) (OutboxStats, error), every time.Duration) {
	m.reg.MustRegister(&outboxCollector{read: read, every: every})
}

// The counts' cap is store.OutboxStatsLimit.
var (
	outboxPendingDesc = prometheus.NewDesc(namespace+"_outbox_pending",
		"Invitation emails waiting to be sent, counted up to 10000 (a value of 10000 means at least that many).", nil, nil)
	outboxFailedDesc = prometheus.NewDesc(namespace+"_outbox_failed",
		"Invitation emails that failed for good (controlplane mail-retry requeues them), counted up to 10000.", nil, nil)
	outboxOldestDesc = prometheus.NewDesc(namespace+"_outbox_oldest_pending_age_seconds",
		"Age of the pending invitation email queued (or requeued) longest ago; 0 when none is pending.", nil, nil)
)

// outboxCollector reads the outbox at scrape time, at most once per every:
// each replica scrapes it, and every replica's figures are the same.
type outboxCollector struct {
	read  func(context.Context) (OutboxStats, error)
	every time.Duration

	mu     sync.Mutex
	at     time.Time
	last   OutboxStats
	lastOK bool
}

func (c *outboxCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- outboxPendingDesc
	ch <- outboxFailedDesc
	ch <- outboxOldestDesc
}

func (c *outboxCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.lastOK || time.Since(c.at) >= c.every {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		stats, err := c.read(ctx)
		cancel()
		if err != nil {
			c.lastOK = false
			ch <- prometheus.NewInvalidMetric(outboxPendingDesc, err)
			return
		}
		c.last, c.at, c.lastOK = stats, time.Now(), true
	}
	ch <- prometheus.MustNewConstMetric(outboxPendingDesc, prometheus.GaugeValue, float64(c.last.Pending))
	ch <- prometheus.MustNewConstMetric(outboxFailedDesc, prometheus.GaugeValue, float64(c.last.Failed))
	age := 0.0
	if !c.last.OldestPending.IsZero() {
		age = max(0, time.Since(c.last.OldestPending).Seconds())
	}
	ch <- prometheus.MustNewConstMetric(outboxOldestDesc, prometheus.GaugeValue, age)
}
