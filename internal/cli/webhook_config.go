package cli

// The webhook and audit flags of serve and the in-process
// webhook dispatcher and audit pruning they start.

import (
	"context"
	"crypto/x509"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/membership-api/controlplane/store"
	"github.com/membership-api/controlplane/webhook"
)

// cliActor is who the audit log says made the CLI's changes: an operator
// on the server, whose identity the command does not know.
var cliActor = store.Actor{Kind: store.ActorCLI}

// webhookConfig is serve's webhook and audit-retention flags.
type webhookConfig struct {
	dispatch       bool
	cfg            webhook.Config
	auditRetention time.Duration
	caFile         string
}

// bind binds what serve and webhook-worker share; serve binds
// --webhook-dispatcher itself (the worker always dispatches).
func (c *webhookConfig) bind(fs *flag.FlagSet) {
	def := webhook.DefaultConfig()
	fs.BoolVar(&c.cfg.AllowLoopback, "webhooks-allow-loopback", false, "development: accept http:// webhook endpoints on loopback and connect to loopback addresses (private and link-local ones stay refused)")
	fs.DurationVar(&c.cfg.Timeout, "webhook-timeout", def.Timeout, "one webhook delivery attempt, connection to answer")
	fs.DurationVar(&c.cfg.GiveUpAfter, "webhook-give-up-after", def.GiveUpAfter, "a webhook message is retried until it is this old, then failed")
	fs.DurationVar(&c.cfg.DisableAfter, "webhook-disable-after", def.DisableAfter, "an endpoint whose deliveries all failed for this long is disabled (with an audit event)")
	fs.DurationVar(&c.cfg.BackoffBase, "webhook-backoff-base", def.BackoffBase, "wait after a webhook's first failure, doubled each time")
	fs.DurationVar(&c.cfg.BackoffMax, "webhook-backoff-max", def.BackoffMax, "longest wait between a webhook's attempts")
	fs.DurationVar(&c.cfg.PollInterval, "webhook-poll-interval", def.PollInterval, "how often the webhook dispatcher looks for due messages")
	fs.DurationVar(&c.cfg.Lease, "webhook-claim-lease", def.Lease, "how long a claimed webhook message waits before another dispatcher retries it "+
		"(after a crash); at least twice --webhook-timeout, so an attempt started with half the lease left ends within it")
	fs.IntVar(&c.cfg.Concurrency, "webhook-concurrency", def.Concurrency, "webhook delivery attempts in flight at once per dispatcher (a workspace gets at most half of them)")
	fs.IntVar(&c.cfg.PerEndpoint, "webhook-endpoint-concurrency", def.PerEndpoint, "webhook delivery attempts in flight to one endpoint, across all dispatchers (a failing endpoint gets one probe at a time)")
	fs.StringVar(&c.caFile, "webhook-ca-file", "", "PEM certificates of the authorities webhook endpoints are verified with, added to the system's (a private CA)")
	fs.DurationVar(&c.auditRetention, "audit-retention", store.DefaultAuditRetention, "delete audit events older than this (checked hourly; default 400 days); 0 keeps them forever")
}

// start starts the webhook dispatcher (unless --webhook-dispatcher=false)
// and the audit pruning (with --audit-retention). wake tells the
// dispatcher a message was queued (nil when off); stop stops both.
func (c *webhookConfig) start(ctx context.Context, st *store.Store, mon *metricsServer, log *slog.Logger) (wake, stop func(), err error) {
	if err := c.checkLease(); err != nil {
		return nil, nil, err
	}
	if c.caFile != "" {
		if c.cfg.RootCAs, err = loadCAs(c.caFile); err != nil {
			return nil, nil, err
		}
	}
	// Not ctx: like the mail dispatcher, it outlives the cancellation that
	// starts the shutdown until the HTTP server has stopped.
	bg, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{}, 2)
	running := 0
	if c.dispatch {
		d := webhook.NewDispatcher(st, c.cfg, log)
		if mon != nil {
			d.OnOutcome(mon.m.WebhookOutcome)
		}
		wake = d.Wake
		running++
		go func() { d.Run(bg); done <- struct{}{} }()
	}
	if c.auditRetention > 0 {
		running++
		go func() { pruneAudit(bg, st, c.auditRetention, log); done <- struct{}{} }()
	}
	return wake, func() {
		cancel()
		for range running {
			<-done
		}
	}, nil
}

// checkLease refuses worker counts under 1 and a claim lease under twice
// the attempt timeout: a
// dispatcher starts a message only while half its lease remains
// (outbox.Loop), so a shorter lease could end during an attempt and let a
// second dispatcher send the message again while the first is still
// waiting for the answer.
func (c *webhookConfig) checkLease() error {
	if c.cfg.Concurrency < 1 || c.cfg.PerEndpoint < 1 {
		return fmt.Errorf("--webhook-concurrency (%d) and --webhook-endpoint-concurrency (%d) must be at least 1", c.cfg.Concurrency, c.cfg.PerEndpoint)
	}
	if c.cfg.Lease <= 0 || c.cfg.Timeout <= 0 {
		return fmt.Errorf("--webhook-claim-lease (%v) and --webhook-timeout (%v) must be positive", c.cfg.Lease, c.cfg.Timeout)
	}
	if c.cfg.Lease < 2*c.cfg.Timeout {
		return fmt.Errorf("--webhook-claim-lease %v is shorter than twice --webhook-timeout (%v): an attempt could outlast its claim "+
			"and another dispatcher send the message again; use at least %v", c.cfg.Lease, c.cfg.Timeout, 2*c.cfg.Timeout)
	}
	return nil
}

// loadCAs is the system's certificate pool plus the PEM file's.
func loadCAs(file string) (*x509.CertPool, error) {
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	pem, err := os.ReadFile(file) //nolint:gosec // G304: a file the operator names on the command line
	if err != nil {
		return nil, fmt.Errorf("--webhook-ca-file: %w", err)
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("--webhook-ca-file %s: no PEM certificate in it", file)
	}
	return pool, nil
}

// pruneAudit deletes events older than retention now and every hour.
func pruneAudit(ctx context.Context, st *store.Store, retention time.Duration, log *slog.Logger) {
	tick := time.NewTicker(time.Hour)
	defer tick.Stop()
	for {
		n, err := st.PruneAudit(ctx, time.Now().Add(-retention))
		switch {
		case err != nil && ctx.Err() == nil:
			log.Error("audit retention: prune failed", "err", err)
		case n > 0:
			log.Info("audit retention: pruned events", "deleted", n, "retention", retention.String())
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}
