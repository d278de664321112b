package webhook

import (
	"bytes"
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/membership-api/controlplane/outbox"
	"github.com/membership-api/controlplane/store"
)

// Outbox is what the dispatcher needs from the database.
type Outbox interface {
	ClaimWebhookQueue(ctx context.Context, c store.WebhookClaim) (store.WebhookClaimed, error)
	RecordWebhookAttempts(ctx context.Context, token string, outcomes []store.WebhookOutcome, disableAfter time.Duration) ([]bool, error)
	ReleaseWebhooks(ctx context.Context, token string) error
}

// Config tunes a Dispatcher; zero fields take DefaultConfig's values.
type Config struct {
	Timeout      time.Duration // one attempt, connection to the end of the answer
	GiveUpAfter  time.Duration // a message is retried until it is this old, then failed
	DisableAfter time.Duration // an endpoint failing this long is disabled
	BackoffBase  time.Duration // wait after the first failure, doubled each time
	BackoffMax   time.Duration // longest wait between attempts
	PollInterval time.Duration
	// Lease is how long a claimed message is held (--webhook-claim-lease):
	// at least twice Timeout, since an attempt may start with half of it left.
	Lease time.Duration
	// Concurrency bounds the attempts in flight (--webhook-concurrency);
	// BatchSize bounds one claim (Concurrency when zero).
	Concurrency int
	BatchSize   int
	// PerEndpoint bounds the attempts in flight to one endpoint, across
	// dispatchers (--webhook-endpoint-concurrency,
	// store.DefaultWebhooksPerEndpoint); a failing endpoint gets one, its
	// probe.
	PerEndpoint int
	// AllowLoopback lets endpoints on loopback addresses be reached
	// (--webhooks-allow-loopback, development and tests).
	AllowLoopback bool
	// RootCAs, when set, are the certificate authorities endpoints are
	// verified with (--webhook-ca-file); nil: the system's.
	RootCAs *x509.CertPool
	// Now replaces the clock of retry decisions and signatures (a dev
	// server's test clock, the store's); nil means time.Now.
	Now func() time.Time
}

// DefaultConfig is the one definition of the dispatcher's defaults. The
// schedule (5 s doubling to 1 h, for 72 h) is the email outbox's: about 16
// attempts in the first day, then one an hour; an endpoint failing for 72 h
// is disabled, as Standard Webhooks' reference service does after days.
// The same schedule backs off a failing endpoint as a whole: one probe
// after 5 s, 10 s, … up to one an hour, whatever its backlog.
// The 250 ms poll is how long an event waits before its first attempt:
// only test events wake the dispatcher (the audited changes that queue
// the others do not know it), and an idle poll is one index probe on a
// reader (store.ClaimWebhookQueue).
// The 2-minute lease is 12 times the 10 s timeout: a message whose
// dispatcher crashed waits at most that long, and a slow database or a
// dispatcher paused for a minute still does not lose its claim mid-attempt.
// 128 attempts in flight: with at most 4 per endpoint (a failing one: 1),
// and half the workers per workspace, endpoints that hang hold few
// workers; each attempt costs a goroutine and a connection, nothing more.
// Fewer workers mean smaller claims, one transaction each: to 50 instant
// endpoints (webhook/delivery_bench_test.go) 128 delivered 1.3× as fast as
// 32 on SQLite and 1.6× on PostgreSQL, 64 halfway between.
func DefaultConfig() Config {
	return Config{Timeout: 10 * time.Second, GiveUpAfter: 72 * time.Hour, DisableAfter: 72 * time.Hour,
		BackoffBase: 5 * time.Second, BackoffMax: time.Hour, PollInterval: 250 * time.Millisecond, Lease: 2 * time.Minute,
		Concurrency: 128, PerEndpoint: store.DefaultWebhooksPerEndpoint}
}

func (c *Config) defaults() {
	def := DefaultConfig()
	c.Timeout = cmp.Or(c.Timeout, def.Timeout)
	c.GiveUpAfter = cmp.Or(c.GiveUpAfter, def.GiveUpAfter)
	c.DisableAfter = cmp.Or(c.DisableAfter, def.DisableAfter)
	c.BackoffBase = cmp.Or(c.BackoffBase, def.BackoffBase)
	c.BackoffMax = cmp.Or(c.BackoffMax, def.BackoffMax)
	c.PollInterval = cmp.Or(c.PollInterval, def.PollInterval)
	c.Lease = cmp.Or(c.Lease, def.Lease)
	c.Concurrency = cmp.Or(c.Concurrency, def.Concurrency)
	c.BatchSize = cmp.Or(c.BatchSize, c.Concurrency)
	c.PerEndpoint = cmp.Or(c.PerEndpoint, def.PerEndpoint)
}

// Outcomes of an attempt, as OnOutcome reports them (store.Attempt…).
const (
	OutcomeDelivered = store.AttemptDelivered
	OutcomeRetry     = store.AttemptRetry
	OutcomeFailed    = store.AttemptFailed
)

// Dispatcher delivers the webhook outbox, like mail.Dispatcher the email
// one: claims under a lease (several dispatchers never hold one message at
// once), a message started only while half its lease remains, outcomes
// recorded after the attempt. At least once: a message is sent twice only
// if a dispatcher dies (or loses the database) between the receiver's 2xx
// and the record; both carry the same webhook-id.
//
// Fairness: up to Concurrency attempts run side by side; claims take the
// endpoints in turn (store.ClaimWebhookQueue: a round-robin cursor, at
// most PerEndpoint in flight per endpoint, none of a backed-off endpoint
// but its probe) and give a workspace at most half the workers, so one
// workspace's backlog or dead endpoints cannot hold another's events.
type Dispatcher struct {
	outbox  Outbox
	cfg     Config
	log     *slog.Logger
	client  *http.Client
	loop    outbox.Loop[store.WebhookItem]
	outcome func(string)

	mu        sync.Mutex
	cursor    int64         // the round robin's (store.WebhookClaim.After)
	busy      map[int64]int // attempts in flight per workspace id
	toRecord  []outcome     // attempts waiting to be recorded (record)
	recording bool          // a goroutine is recording them
}

// outcome is an attempt waiting to be recorded, and where its caller
// waits for the record.
type outcome struct {
	store.WebhookOutcome
	done chan recorded
}

type recorded struct {
	disabled bool
	err      error
}

// NewDispatcher returns a dispatcher delivering box's messages.
func NewDispatcher(box Outbox, cfg Config, log *slog.Logger) *Dispatcher {
	cfg.defaults()
	if log == nil {
		log = slog.Default()
	}
	d := &Dispatcher{outbox: box, cfg: cfg, log: log, client: newClient(cfg), busy: map[int64]int{}}
	d.loop = outbox.Loop[store.WebhookItem]{Name: "webhook dispatcher", Claim: d.claim, Release: box.ReleaseWebhooks, Explain: store.ExplainFailure,
		ClaimedUntil: func(item store.WebhookItem) *time.Time { return item.ClaimedUntil },
		Deliver:      d.deliver, Lease: cfg.Lease, PollInterval: cfg.PollInterval, BatchSize: cfg.BatchSize,
		Concurrency: cfg.Concurrency, Log: log, Now: cfg.Now}
	d.loop.Start()
	return d
}

// claim claims the next endpoints' messages in turn, keeping the cursor
// and the workspaces' shares of the workers.
func (d *Dispatcher) claim(ctx context.Context, token string, limit int, lease time.Duration) ([]store.WebhookItem, error) {
	d.mu.Lock()
	c := store.WebhookClaim{Token: token, Limit: limit, Lease: lease, PerEndpoint: d.cfg.PerEndpoint, After: d.cursor,
		Busy: maps.Clone(d.busy), PerWorkspace: max(d.cfg.PerEndpoint, d.cfg.Concurrency/2)}
	d.mu.Unlock()
	res, err := d.outbox.ClaimWebhookQueue(ctx, c)
	d.mu.Lock()
	defer d.mu.Unlock()
	d.cursor = res.Next
	for _, item := range res.Items {
		d.busy[item.WorkspaceID]++
	}
	return res.Items, err
}

// settled ends an attempt's share of its workspace's workers.
func (d *Dispatcher) settled(item store.WebhookItem) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.busy[item.WorkspaceID]--; d.busy[item.WorkspaceID] <= 0 {
		delete(d.busy, item.WorkspaceID)
	}
}

// newClient is the delivery client: the SSRF check on every connection,
// no proxy (a proxy would connect where the check cannot see), no
// redirect, no cookies, one timeout per attempt. Idle connections kept per
// host: as many as attempts may be in flight, since many endpoints may
// share a host (a chat service's incoming webhooks).
func newClient(cfg Config) *http.Client {
	dialer := &net.Dialer{Timeout: cfg.Timeout, Control: dialControl(cfg.AllowLoopback)}
	transport := &http.Transport{
		Proxy:                 nil,
		DialContext:           dialer.DialContext,
		ForceAttemptHTTP2:     true,
		TLSHandshakeTimeout:   cfg.Timeout,
		ResponseHeaderTimeout: cfg.Timeout,
		MaxIdleConnsPerHost:   max(cfg.Concurrency, 2),
		TLSClientConfig:       &tls.Config{RootCAs: cfg.RootCAs, MinVersion: tls.VersionTLS12},
		IdleConnTimeout:       90 * time.Second,
	}
	return &http.Client{Transport: transport, Timeout: cfg.Timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// OnOutcome makes the dispatcher call fn with the outcome of every attempt
// (metrics). Call it before Run; fn must not block.
func (d *Dispatcher) OnOutcome(fn func(outcome string)) { d.outcome = fn }

// Wake asks the dispatcher to look for due messages now. It never blocks.
func (d *Dispatcher) Wake() { d.loop.Wake() }

// Run delivers messages until ctx ends (outbox.Loop.Run: the attempts in
// flight finish, claimed messages not started are released).
func (d *Dispatcher) Run(ctx context.Context) {
	d.log.Info("webhook dispatcher started")
	d.loop.Run(ctx)
}

// RunOnce claims one batch, delivers it side by side and waits for it,
// returning how many it claimed.
func (d *Dispatcher) RunOnce(ctx context.Context) (int, error) { return d.loop.RunOnce(ctx) }

// deliver makes one attempt and records it. Logs name the endpoint by id
// and the host only: a URL may carry a token, and the secret never leaves.
func (d *Dispatcher) deliver(ctx context.Context, item store.WebhookItem, free func()) {
	log := d.log.With("webhook_message", item.ID, "endpoint", item.EndpointID, "attempt", item.Attempts, "event_type", item.EventType, "probe", item.Probe)
	started := d.loop.Now()
	status, err := d.send(ctx, item, started)
	r := store.WebhookResult{Started: started, StatusCode: status, Latency: d.loop.Now().Sub(started), EndpointBackoff: d.backoff}
	giveUpAt := item.CreatedAt.Add(d.cfg.GiveUpAfter)
	switch {
	case err == nil:
		r.Outcome = OutcomeDelivered
	case !started.Before(giveUpAt):
		r.Outcome, r.Error = OutcomeFailed, err.Error()
	default:
		r.Outcome, r.Error = OutcomeRetry, err.Error()
		r.Next = started.Add(d.backoff(item.Attempts))
		if r.Next.After(giveUpAt) {
			r.Next = giveUpAt
		}
	}
	// The attempt is over: its worker may take another message while the
	// outcome is recorded (with others', in one transaction); the message
	// stays claimed until then, and counts against its endpoint's bound.
	d.settled(item)
	free()
	disabled, rerr := d.record(ctx, item, r)
	if rerr != nil {
		d.loop.LogFailure(ctx, log, "webhook dispatcher: could not record the attempt (the lease will expire and the message be retried)", rerr)
	}
	if d.outcome != nil {
		d.outcome(r.Outcome)
	}
	switch r.Outcome {
	case OutcomeDelivered:
		log.Info("webhook delivered", "status", status, "latency", r.Latency)
	case OutcomeRetry:
		log.Warn("webhook delivery failed, will retry", "err", r.Error, "next_attempt", r.Next.UTC().Format(time.RFC3339))
	default:
		log.Error("webhook delivery failed for good", "err", r.Error)
	}
	if disabled {
		log.Warn("webhook endpoint disabled: it failed for too long", "disable_after", d.cfg.DisableAfter.String())
	}
}

// record stores an attempt's outcome and returns once it is stored.
// Attempts ending while others are being recorded are recorded together,
// in one transaction (store.RecordWebhookAttempts), by the first of them
// to end: no goroutine runs when nothing is to be recorded.
func (d *Dispatcher) record(ctx context.Context, item store.WebhookItem, r store.WebhookResult) (bool, error) {
	o := outcome{WebhookOutcome: store.WebhookOutcome{Item: item, Result: r}, done: make(chan recorded, 1)}
	d.mu.Lock()
	d.toRecord = append(d.toRecord, o)
	lead := !d.recording
	d.recording = true
	d.mu.Unlock()
	if lead {
		d.recordAll(ctx)
	}
	res := <-o.done
	return res.disabled, res.err
}

// recordAll records what waits until nothing does.
func (d *Dispatcher) recordAll(ctx context.Context) {
	for {
		d.mu.Lock()
		batch := d.toRecord
		d.toRecord = nil
		if len(batch) == 0 {
			d.recording = false
			d.mu.Unlock()
			return
		}
		d.mu.Unlock()
		outcomes := make([]store.WebhookOutcome, len(batch))
		for i, o := range batch {
			outcomes[i] = o.WebhookOutcome
		}
		disabled, err := d.outbox.RecordWebhookAttempts(ctx, d.loop.Token(), outcomes, d.cfg.DisableAfter)
		for i, o := range batch {
			res := recorded{err: err}
			if err == nil {
				res.disabled = disabled[i]
			}
			o.done <- res
		}
	}
}

// send POSTs the signed event; an error for anything but a 2xx answer.
func (d *Dispatcher) send(ctx context.Context, item store.WebhookItem, at time.Time) (status int, err error) {
	if err := checkURL(ctx, item.URL, d.cfg.AllowLoopback, false); err != nil {
		return 0, err
	}
	body, err := deliveryJSON(item.Event, item.ID)
	if err != nil {
		return 0, err
	}
	wh, err := standardwebhooks.NewWebhook(item.Secret)
	if err != nil {
		return 0, errors.New("the endpoint's secret is not a whsec_ secret")
	}
	id := store.MessageWebhookID(item.WebhookID, item.ID)
	sig, err := wh.Sign(id, at, body)
	if err != nil {
		return 0, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, item.URL, bytes.NewReader(body))
	if err != nil {
		return 0, errors.New("the endpoint's URL cannot be requested")
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "controlplane-webhooks/1")
	req.Header.Set(standardwebhooks.HeaderWebhookID, id)
	req.Header.Set(standardwebhooks.HeaderWebhookTimestamp, strconv.FormatInt(at.Unix(), 10))
	req.Header.Set(standardwebhooks.HeaderWebhookSignature, sig)
	resp, err := d.client.Do(req)
	if err != nil {
		return 0, cause(err)
	}
	defer resp.Body.Close()                                       //nolint:errcheck // the status is the outcome; the body is drained and dropped
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // lets the connection be reused; the body says nothing we keep
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return resp.StatusCode, fmt.Errorf("answered %d (a 2xx is success; redirects are not followed)", resp.StatusCode)
	}
	return resp.StatusCode, nil
}

// cause is a client error without its URL (which may carry a token).
func cause(err error) error {
	var uerr *url.Error
	if errors.As(err, &uerr) {
		if uerr.Timeout() {
			return errors.New("timed out")
		}
		return uerr.Err
	}
	return err
}

// backoff is outbox.Backoff on this dispatcher's schedule (the email one's).
func (d *Dispatcher) backoff(attempt int) time.Duration {
	return outbox.Backoff(d.cfg.BackoffBase, d.cfg.BackoffMax, attempt)
}
