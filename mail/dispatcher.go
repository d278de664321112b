package mail

import (
	"cmp"
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/membership-api/controlplane/outbox"
	"github.com/membership-api/controlplane/store"
)

// Outbox is what the dispatcher needs from the database.
type Outbox interface {
	ClaimOutbox(ctx context.Context, token string, limit int, lease time.Duration) ([]store.OutboxItem, error)
	MarkOutboxSentMany(ctx context.Context, ids []int64, token string) error
	RetryOutbox(ctx context.Context, id int64, token string, next time.Time, lastError string) error
	EndOutbox(ctx context.Context, id int64, token, status, lastError string) error
	ReleaseOutbox(ctx context.Context, token string) error
	OutboxCounts(ctx context.Context) (map[string]int64, error)
}

// DispatcherConfig tunes a Dispatcher; zero fields take the values of
// DefaultDispatcherConfig.
type DispatcherConfig struct {
	AcceptURLTemplate string        // accept link in emails
	MessageIDDomain   string        // right-hand side of Message-IDs
	GiveUpAfter       time.Duration // transient failures are retried until the message is this old, then it fails
	BackoffBase       time.Duration // wait after the first failure, doubled each time
	BackoffMax        time.Duration // longest wait between attempts
	PollInterval      time.Duration // how often to look for due messages when not woken
	Lease             time.Duration // how long a claim lasts before another dispatcher may take it over (keep it over twice the longest send)
	BatchSize         int           // messages claimed at once
	Concurrency       int           // sends in flight at once
	// Now replaces the clock of expiry and retry decisions (a dev server's
	// test clock, the store's); nil means time.Now.
	Now func() time.Time
}

// DefaultDispatcherConfig is the one definition of the dispatcher's defaults
// (the command-line flags take theirs from it).
//
// GiveUpAfter is 72 hours, by age and not by attempt count, so that mail
// outlasts an SMTP outage of a weekend, as a mail server would keep it
// (Postfix: 5 days); an invitation lasts 7 days by default.
//
// Concurrency 16: a send that is slow (an SMTP server stalling on one
// recipient) or fails holds one of sixteen workers, not the queue, and
// sixteen connections stay under the per-client limits SMTP relays commonly
// set (Postfix's smtpd_client_connection_count_limit is 50). A worker is
// held for the send only; the outcomes of sends that end together are
// recorded in one statement. With claims of up to 16, one dispatcher kept
// up with the invite path in a soak (bench/soak) where 8 workers and claims
// of 10 fell behind. Each failed message waits out its own backoff; the
// others go on.
func DefaultDispatcherConfig() DispatcherConfig {
	return DispatcherConfig{
		AcceptURLTemplate: DefaultAcceptURLTemplate,
		MessageIDDomain:   "localhost",
		GiveUpAfter:       72 * time.Hour,
		BackoffBase:       5 * time.Second,
		BackoffMax:        time.Hour,
		PollInterval:      2 * time.Second,
		Lease:             2 * time.Minute,
		BatchSize:         16,
		Concurrency:       16,
	}
}

func (c *DispatcherConfig) defaults() {
	def := DefaultDispatcherConfig()
	c.AcceptURLTemplate = cmp.Or(c.AcceptURLTemplate, def.AcceptURLTemplate)
	c.MessageIDDomain = cmp.Or(c.MessageIDDomain, def.MessageIDDomain)
	c.GiveUpAfter = cmp.Or(c.GiveUpAfter, def.GiveUpAfter)
	c.BackoffBase = cmp.Or(c.BackoffBase, def.BackoffBase)
	c.BackoffMax = cmp.Or(c.BackoffMax, def.BackoffMax)
	c.PollInterval = cmp.Or(c.PollInterval, def.PollInterval)
	c.Lease = cmp.Or(c.Lease, def.Lease)
	c.BatchSize = cmp.Or(c.BatchSize, def.BatchSize)
	c.Concurrency = cmp.Or(c.Concurrency, def.Concurrency)
}

// Dispatcher delivers the outbox: it claims due messages under a lease,
// sends them, and records the outcome. Several dispatchers (replicas) may run
// on one database: claims never overlap while their lease holds.
//
// Delivery is at-least-once. A message is sent twice only when a dispatcher
// dies (or loses the database) after the SMTP server accepted the message but
// before the outcome was recorded; the retry carries the same Message-ID, so
// the receiving side can drop the duplicate.
type Dispatcher struct {
	outbox Outbox
	sender Sender
	cfg    DispatcherConfig
	log    *slog.Logger
	loop   outbox.Loop[store.OutboxItem]

	mu      sync.Mutex
	sent    []sentMark // sends waiting to be recorded (markSent)
	marking bool       // a goroutine is recording them
	// outcome, if set, hears the outcome of every attempt (OnOutcome).
	outcome func(outcome string)
}

// Outcomes of one delivery attempt, as OnOutcome reports them.
const (
	OutcomeSent      = "sent"      // accepted by the SMTP server (or written as .eml)
	OutcomeRetry     = "retry"     // failed, will be retried
	OutcomeFailed    = "failed"    // failed for good
	OutcomeCancelled = "cancelled" // not sent: the invitation stopped being pending
)

// OnOutcome makes the dispatcher call fn with the outcome of every delivery
// attempt (Outcome… constants), for metrics; the mail package itself knows
// nothing of how they are reported. Call it before Run; fn must not block.
func (d *Dispatcher) OnOutcome(fn func(outcome string)) { d.outcome = fn }

func (d *Dispatcher) report(outcome string) {
	if d.outcome != nil {
		d.outcome(outcome)
	}
}

// NewDispatcher returns a dispatcher sending outbox messages through sender.
func NewDispatcher(box Outbox, sender Sender, cfg DispatcherConfig, log *slog.Logger) *Dispatcher {
	cfg.defaults()
	if log == nil {
		log = slog.Default()
	}
	d := &Dispatcher{outbox: box, sender: sender, cfg: cfg, log: log}
	d.loop = outbox.Loop[store.OutboxItem]{Name: "mail dispatcher", Claim: box.ClaimOutbox, Release: box.ReleaseOutbox, Explain: store.ExplainFailure,
		ClaimedUntil: func(item store.OutboxItem) *time.Time { return item.ClaimedUntil },
		Deliver:      d.deliver, Lease: cfg.Lease, PollInterval: cfg.PollInterval, BatchSize: cfg.BatchSize,
		Concurrency: cfg.Concurrency, Log: log, Now: cfg.Now}
	d.loop.Start()
	return d
}

// Wake asks the dispatcher to look for due messages now (after an invite
// commits) instead of at the next poll. It never blocks.
func (d *Dispatcher) Wake() { d.loop.Wake() }

// Run delivers messages until ctx ends (outbox.Loop.Run), up to
// Concurrency at once: the messages being sent when ctx ends are finished,
// claimed messages not yet started are released for others.
func (d *Dispatcher) Run(ctx context.Context) {
	d.logCounts(ctx, "mail dispatcher started")
	d.loop.Run(ctx)
}

// RunOnce claims one batch and processes it, returning how many messages it
// claimed. No outbox counts here: counting every status reads the whole
// table (a million sent rows: a full scan per batch). The start line has
// them, `controlplane mail-status` and the metrics' capped gauges too.
func (d *Dispatcher) RunOnce(ctx context.Context) (int, error) { return d.loop.RunOnce(ctx) }

// deliver sends one message and records the outcome. Its worker is freed
// (free) once the send is over: Concurrency bounds the SMTP connections,
// and recording, which waits for the database, need not hold one.
func (d *Dispatcher) deliver(ctx context.Context, item store.OutboxItem, free func()) {
	log := d.log.With("outbox_id", item.ID, "invitation_id", item.InvitationID, "attempt", item.Attempts)
	now := d.loop.Now()
	if item.InvitationStatus != store.InvitationPending || !item.InvitationExpiresAt.After(now) {
		d.record(ctx, log, d.outbox.EndOutbox(ctx, item.ID, d.loop.Token(), store.OutboxCancelled, "invitation is no longer pending"))
		d.report(OutcomeCancelled)
		log.Info("mail cancelled: invitation no longer pending", "invitation_status", item.InvitationStatus)
		return
	}
	msg, err := d.message(item)
	if err == nil {
		err = d.sender.Send(ctx, msg)
	}
	free()
	// Retries stop by age rather than by count, so an outage of any length
	// up to GiveUpAfter costs no email; the backoff cap keeps the attempts
	// of a long outage to about one an hour per message.
	giveUpAt := item.QueuedSince().Add(d.cfg.GiveUpAfter)
	switch {
	case err == nil:
		d.record(ctx, log, d.markSent(ctx, item.ID))
		d.report(OutcomeSent)
		log.Info("mail sent", "message_id", msg.MessageID)
	case IsPermanent(err) || !now.Before(giveUpAt):
		d.record(ctx, log, d.outbox.EndOutbox(ctx, item.ID, d.loop.Token(), store.OutboxFailed, err.Error()))
		d.report(OutcomeFailed)
		log.Error("mail failed for good (controlplane mail-retry requeues it)", "err", err, "permanent", IsPermanent(err),
			"queued_for", now.Sub(item.QueuedSince()).Round(time.Second).String())
	default:
		// The last attempt falls on the give-up time rather than up to a
		// whole backoff after it.
		next := now.Add(d.backoff(item.Attempts))
		if next.After(giveUpAt) {
			next = giveUpAt
		}
		d.record(ctx, log, d.outbox.RetryOutbox(ctx, item.ID, d.loop.Token(), next, err.Error()))
		d.report(OutcomeRetry)
		log.Warn("mail send failed, will retry", "err", err, "next_attempt", next.UTC().Format(time.RFC3339))
	}
}

// sentMark is a send waiting to be recorded, and where its caller waits.
type sentMark struct {
	id   int64
	done chan error
}

// markSent records a successful send and returns once it is recorded.
// Sends that end while others are being recorded are recorded together
// (store.MarkOutboxSentMany), by the first of them to end.
func (d *Dispatcher) markSent(ctx context.Context, id int64) error {
	m := sentMark{id: id, done: make(chan error, 1)}
	d.mu.Lock()
	d.sent = append(d.sent, m)
	lead := !d.marking
	d.marking = true
	d.mu.Unlock()
	if lead {
		for {
			d.mu.Lock()
			batch := d.sent
			d.sent = nil
			if len(batch) == 0 {
				d.marking = false
				d.mu.Unlock()
				break
			}
			d.mu.Unlock()
			ids := make([]int64, len(batch))
			for i, b := range batch {
				ids[i] = b.id
			}
			err := d.outbox.MarkOutboxSentMany(ctx, ids, d.loop.Token())
			for _, b := range batch {
				b.done <- err
			}
		}
	}
	return <-m.done
}

func (d *Dispatcher) record(ctx context.Context, log *slog.Logger, err error) {
	if err != nil {
		d.loop.LogFailure(ctx, log, "mail dispatcher: could not record the outcome (the lease will expire and the message be retried)", err)
	}
}

// message renders the invitation email of item.
func (d *Dispatcher) message(item store.OutboxItem) (Message, error) {
	link, err := AcceptURL(d.cfg.AcceptURLTemplate, item.WorkspaceName, item.InvitationEmail)
	if err != nil {
		return Message{}, errors.Join(ErrInvalidMessage, err)
	}
	subject, text, html, err := Render(Invitation{
		InviterSub: item.InvitedBy, InviterEmail: item.InviterEmail, InviteeEmail: item.InvitationEmail,
		WorkspaceName: item.WorkspaceName, WorkspaceDisplayName: item.WorkspaceDisplayName,
		Role: item.InvitationRole, ExpiresAt: item.InvitationExpiresAt, AcceptURL: link,
	})
	if err != nil {
		return Message{}, errors.Join(ErrInvalidMessage, err)
	}
	return Message{ID: item.ID, To: item.InvitationEmail, Subject: subject, Text: text, HTML: html,
		MessageID: MessageIDFor(item.ID, d.cfg.MessageIDDomain), AcceptURL: link, Workspace: item.WorkspaceName}, nil
}

// backoff is outbox.Backoff on this dispatcher's schedule.
func (d *Dispatcher) backoff(attempt int) time.Duration {
	return outbox.Backoff(d.cfg.BackoffBase, d.cfg.BackoffMax, attempt)
}

func (d *Dispatcher) logCounts(ctx context.Context, msg string) {
	counts, err := d.outbox.OutboxCounts(ctx)
	if err != nil {
		d.log.Warn("mail outbox: count failed", "err", err)
		return
	}
	d.log.Info(msg, "pending", counts[store.OutboxPending], "sent", counts[store.OutboxSent],
		"failed", counts[store.OutboxFailed], "cancelled", counts[store.OutboxCancelled])
}
