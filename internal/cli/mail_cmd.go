package cli

// The mail commands and the flags of invitation email delivery (serve and
// mail-worker share them).

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/peterbourgon/ff/v3/ffcli"

	"github.com/membership-api/controlplane/mail"
	"github.com/membership-api/controlplane/store"
)

// mailConfig configures invitation email delivery (serve and mail-worker).
type mailConfig struct {
	smtp     mail.SMTPConfig
	tls      string
	dir      string
	dispatch mail.DispatcherConfig
}

func (m *mailConfig) bind(fs *flag.FlagSet) {
	def := mail.DefaultDispatcherConfig()
	fs.StringVar(&m.smtp.Host, "smtp-host", "", "SMTP server; empty: write each email as an .eml file under --mail-dir instead")
	fs.IntVar(&m.smtp.Port, "smtp-port", 0, "SMTP port (default: 25 for none, 587 for starttls, 465 for tls)")
	fs.StringVar(&m.smtp.Username, "smtp-username", "", "SMTP user (empty: no AUTH)")
	fs.StringVar(&m.smtp.Password, "smtp-password", "", "SMTP password (prefer the CONTROLPLANE_SMTP_PASSWORD variable)")
	fs.StringVar(&m.tls, "smtp-tls", "starttls", "none, starttls or tls (implicit TLS)")
	fs.StringVar(&m.smtp.From, "smtp-from", "no-reply@localhost", "From address of invitation emails")
	fs.StringVar(&m.smtp.FromName, "smtp-from-name", "Blaxel", "From display name")
	fs.DurationVar(&m.smtp.Timeout, "smtp-timeout", mail.DefaultSMTPTimeout, "timeout per SMTP connection and command")
	fs.StringVar(&m.dir, "mail-dir", "", "where .eml files go without SMTP (default: <data-dir>/mail)")
	fs.StringVar(&m.dispatch.AcceptURLTemplate, "accept-url-template", def.AcceptURLTemplate, "accept link in emails; {workspace} and {email} are replaced")
	fs.DurationVar(&m.dispatch.GiveUpAfter, "mail-give-up-after", def.GiveUpAfter, "retry transient failures until a message is this old (since queued or requeued by mail-retry), then mark it failed")
	fs.DurationVar(&m.dispatch.BackoffBase, "mail-backoff-base", def.BackoffBase, "wait after the first failed attempt (doubles each time, with jitter)")
	fs.DurationVar(&m.dispatch.BackoffMax, "mail-backoff-max", def.BackoffMax, "longest wait between attempts")
	fs.DurationVar(&m.dispatch.PollInterval, "mail-poll-interval", def.PollInterval, "how often the dispatcher looks for due messages")
	fs.DurationVar(&m.dispatch.Lease, "mail-lease", def.Lease, "how long a claimed message is reserved before another dispatcher may retry it")
	fs.IntVar(&m.dispatch.Concurrency, "mail-concurrency", def.Concurrency, "emails sent at once by the dispatcher (a slow or failing send holds one of them, not the queue)")
}

// dispatcher builds the outbox dispatcher: SMTP when --smtp-host is set,
// else .eml files under the mail directory.
func (m *mailConfig) dispatcher(st *store.Store, dataDir string, log *slog.Logger) (*mail.Dispatcher, error) {
	if _, err := mail.AcceptURL(m.dispatch.AcceptURLTemplate, "w", "e@x.y"); err != nil {
		return nil, fmt.Errorf("--accept-url-template: %w", err)
	}
	// A zero duration would silently become the default (DispatcherConfig's
	// zero fields are defaults) and a negative one makes no sense.
	for name, d := range map[string]time.Duration{"--mail-give-up-after": m.dispatch.GiveUpAfter,
		"--mail-backoff-base": m.dispatch.BackoffBase, "--mail-backoff-max": m.dispatch.BackoffMax,
		"--mail-poll-interval": m.dispatch.PollInterval, "--mail-lease": m.dispatch.Lease} {
		if d <= 0 {
			return nil, fmt.Errorf("%s must be positive, got %v", name, d)
		}
	}
	if m.dispatch.Concurrency < 1 {
		return nil, fmt.Errorf("--mail-concurrency must be at least 1, got %d", m.dispatch.Concurrency)
	}
	var sender mail.Sender
	domain := "localhost"
	if m.smtp.Host != "" {
		m.smtp.TLS = mail.TLSMode(m.tls)
		smtp, err := mail.NewSMTPSender(m.smtp)
		if err != nil {
			return nil, err
		}
		sender = smtp
		if _, d, ok := strings.Cut(m.smtp.From, "@"); ok {
			domain = d
		}
		log.Info("mail: sending through SMTP", "smtp", m.smtp)
	} else {
		dir := m.dir
		if dir == "" {
			dir = filepath.Join(dataDir, "mail")
		}
		sender = mail.NewFileSender(dir, log)
		log.Info("mail: no --smtp-host, writing invitation emails as .eml files", "dir", dir)
	}
	cfg := m.dispatch
	cfg.MessageIDDomain = domain
	return mail.NewDispatcher(st, sender, cfg, log), nil
}

// mailWorkerConfig is every flag of mail-worker.
type mailWorkerConfig struct {
	data    dataConfig
	log     logConfig
	metrics metricsConfig
	mail    mailConfig
	gc      gcConfig
}

func (c *mailWorkerConfig) bind(fs *flag.FlagSet) {
	c.data.bind(fs)
	c.data.bindPool(fs)
	c.log.bind(fs)
	c.metrics.bind(fs)
	c.mail.bind(fs)
	c.gc.bind(fs)
}

func mailWorkerCommand(stderr io.Writer) *ffcli.Command {
	fs := newFlagSet("mail-worker")
	var cfg mailWorkerConfig
	cfg.bind(fs)
	return &ffcli.Command{
		Name: "mail-worker", ShortUsage: "controlplane mail-worker [flags]",
		ShortHelp: "deliver invitation emails from the outbox (for serve --mail-dispatcher=false)",
		FlagSet:   fs, Options: envOptions(),
		Exec: func(ctx context.Context, _ []string) error { return mailWorker(ctx, cfg, stderr) },
	}
}

// mailWorker delivers the outbox until ctx ends, observed as serve is.
func mailWorker(ctx context.Context, cfg mailWorkerConfig, stderr io.Writer) error {
	return runWorker(ctx, cfg.data, cfg.log, cfg.metrics, cfg.gc, stderr, func(st *store.Store, mon *metricsServer, log *slog.Logger) error {
		d, err := cfg.mail.dispatcher(st, cfg.data.dataDir, log)
		if err != nil {
			return err
		}
		mon.watchMail(d)
		mon.serve(st, log)
		d.Run(ctx)
		return nil
	})
}

// runWorker runs a worker command (mail-worker, webhook-worker): logging
// and metrics as serve has them (a separate worker is observed like the
// dispatcher inside serve), its GC target, the store, then run until ctx
// ends.
func runWorker(ctx context.Context, data dataConfig, lc logConfig, mc metricsConfig, gc gcConfig, stderr io.Writer,
	run func(st *store.Store, mon *metricsServer, log *slog.Logger) error) error {
	gc.apply()
	log, mon, err := startObserved(ctx, lc, mc, stderr)
	if err != nil {
		return err
	}
	defer mon.close(ctx, log)
	st, err := data.open(ctx, mon.hooks(), log)
	if err != nil {
		return err
	}
	defer closeLogged(log, "store", st.Close)
	return run(st, mon, log)
}

// mailStatusConfig is every flag of mail-status.
type mailStatusConfig struct {
	data   dataConfig
	failed int
}

func (c *mailStatusConfig) bind(fs *flag.FlagSet) {
	c.data.bind(fs)
	fs.IntVar(&c.failed, "failed", 20, "list at most this many failed emails, the latest first (0: none)")
}

func mailStatusCommand(stdout io.Writer) *ffcli.Command {
	fs := newFlagSet("mail-status")
	var cfg mailStatusConfig
	cfg.bind(fs)
	return &ffcli.Command{
		Name: "mail-status", ShortUsage: "controlplane mail-status [--failed N] [flags]",
		ShortHelp: "print invitation email counts, the oldest pending email's age, the failed emails",
		LongHelp: "Prints pending N, sent N, failed N, cancelled N (one line each, in this order, for scripts),\n" +
			"then oldest_pending_age D (0s when nothing is pending), then the failed emails with their last error.",
		FlagSet: fs, Options: envOptions(),
		Exec: func(ctx context.Context, _ []string) error { return mailStatus(ctx, cfg, stdout) },
	}
}

// mailStatus prints the outbox counts, the oldest pending email and the
// latest failed ones.
func mailStatus(ctx context.Context, cfg mailStatusConfig, stdout io.Writer) error {
	if cfg.failed < 0 {
		return fmt.Errorf("--failed must be 0 or more, got %d", cfg.failed)
	}
	return cfg.data.withStore(ctx, func(st *store.Store) (err error) {
		// Written to a buffer (whose writes cannot fail) and then to stdout
		// at once, also on an error, as before: one write error to check.
		var out bytes.Buffer
		defer func() {
			if _, werr := stdout.Write(out.Bytes()); err == nil {
				err = werr
			}
		}()
		counts, err := st.OutboxCounts(ctx)
		if err != nil {
			return err
		}
		for _, status := range []string{store.OutboxPending, store.OutboxSent, store.OutboxFailed, store.OutboxCancelled} {
			fmt.Fprintf(&out, "%s %d\n", status, counts[status])
		}
		oldest, ok, err := st.OldestPendingOutbox(ctx)
		if err != nil {
			return err
		}
		if !ok {
			out.WriteString("oldest_pending_age 0s\n")
		} else {
			// Why it is still pending is the question an operator asks
			// next (SMTP down, or just queued), so say it.
			fmt.Fprintf(&out, "oldest_pending_age %v (id %d, %d attempts, last error: %s)\n",
				time.Since(oldest.QueuedSince).Round(time.Second), oldest.ID, oldest.Attempts, oneLine(cmp.Or(oldest.LastError, "none")))
		}
		if counts[store.OutboxFailed] == 0 || cfg.failed == 0 {
			return nil
		}
		failed, err := st.FailedOutbox(ctx, cfg.failed)
		if err != nil {
			return err
		}
		fmt.Fprintf(&out, "\nfailed emails, latest first (%d of %d; requeue with controlplane mail-retry):\n", len(failed), counts[store.OutboxFailed])
		// The tabwriter writes to out, so its writes cannot fail either.
		tw := tabwriter.NewWriter(&out, 0, 0, 2, ' ', 0)
		_, _ = fmt.Fprintln(tw, "ID\tWORKSPACE\tEMAIL\tATTEMPTS\tFAILED AT\tLAST ERROR")
		for _, e := range failed {
			_, _ = fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t%s\t%s\n", e.ID, e.Workspace, e.Email, e.Attempts,
				e.UpdatedAt.UTC().Format(time.RFC3339), oneLine(e.LastError))
		}
		return tw.Flush()
	})
}

// oneLine keeps an SMTP error (a server's reply can span lines) on its
// table row.
func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// mailRetryConfig is every flag of mail-retry.
type mailRetryConfig struct {
	data   dataConfig
	filter store.OutboxFilter
}

func (c *mailRetryConfig) bind(fs *flag.FlagSet) {
	c.data.bind(fs)
	fs.StringVar(&c.filter.Workspace, "workspace", "", "requeue only this workspace's failed emails")
	fs.Int64Var(&c.filter.ID, "id", 0, "requeue only this email (an id from mail-status)")
}

func mailRetryCommand(stdout io.Writer) *ffcli.Command {
	fs := newFlagSet("mail-retry")
	var cfg mailRetryConfig
	cfg.bind(fs)
	return &ffcli.Command{
		Name: "mail-retry", ShortUsage: "controlplane mail-retry [--workspace NAME | --id N] [flags]",
		ShortHelp: "requeue failed invitation emails: sent again now, with a full retry period",
		LongHelp: "Prints requeued N, and skipped N when failed emails were left as they are because their\n" +
			"invitation already has a pending email (a re-invite queued it). Emails of invitations that are no longer\n" +
			"pending are cancelled by the dispatcher instead of sent.",
		FlagSet: fs, Options: envOptions(),
		Exec: func(ctx context.Context, args []string) error {
			if len(args) > 0 {
				return fmt.Errorf("mail-retry takes no arguments (got %q): use --workspace NAME or --id N", args)
			}
			return mailRetry(ctx, cfg, stdout)
		},
	}
}

// mailRetry requeues the failed emails cfg's filter selects.
func mailRetry(ctx context.Context, cfg mailRetryConfig, stdout io.Writer) error {
	filter := cfg.filter
	if filter.Workspace != "" && filter.ID != 0 {
		return errors.New("give --workspace or --id, not both")
	}
	if filter.ID < 0 {
		return fmt.Errorf("--id must be positive, got %d", filter.ID)
	}
	return cfg.data.withStore(ctx, func(st *store.Store) error {
		requeued, skipped, err := st.RequeueFailedOutbox(ctx, filter)
		if err != nil {
			return err
		}
		out := fmt.Sprintf("requeued %d\n", requeued)
		if skipped > 0 {
			out += fmt.Sprintf("skipped %d (their invitation already has a pending email)\n", skipped)
		}
		_, err = io.WriteString(stdout, out)
		return err
	})
}
