package main

// The mail commands and the flags of invitation email delivery (serve and
// mail-worker share them).

import (
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

	"controlplane/mail"
	"controlplane/store"
)

// mailFlags configure invitation email delivery (serve and mail-worker).
type mailFlags struct {
	smtp     mail.SMTPConfig
	tls      string
	dir      string
	dispatch mail.DispatcherConfig
}

func (m *mailFlags) register(fs *flag.FlagSet) {
	def := mail.DefaultDispatcherConfig()
	fs.StringVar(&m.smtp.Host, "smtp-host", "", "SMTP server; empty: write each email as an .eml file under --mail-dir instead")
	fs.IntVar(&m.smtp.Port, "smtp-port", 0, "SMTP port (default: 25 for none, 587 for starttls, 465 for tls)")
	fs.StringVar(&m.smtp.Username, "smtp-username", "", "SMTP user (empty: no AUTH)")
	fs.StringVar(&m.smtp.Password, "smtp-password", "", "SMTP password (prefer the CONTROLPLANE_SMTP_PASSWORD variable)")
	fs.StringVar(&m.tls, "smtp-tls", "starttls", "none, starttls or tls (implicit TLS)")
	fs.StringVar(&m.smtp.From, "smtp-from", "no-reply@localhost", "From address of invitation emails")
	fs.StringVar(&m.smtp.FromName, "smtp-from-name", "Blaxel", "From display name")
	fs.DurationVar(&m.smtp.Timeout, "smtp-timeout", 15*time.Second, "timeout per SMTP connection and command")
	fs.StringVar(&m.dir, "mail-dir", "", "where .eml files go without SMTP (default: <data-dir>/mail)")
	fs.StringVar(&m.dispatch.AcceptURLTemplate, "accept-url-template", def.AcceptURLTemplate, "accept link in emails; {workspace} and {email} are replaced")
	fs.DurationVar(&m.dispatch.GiveUpAfter, "mail-give-up-after", def.GiveUpAfter, "retry transient failures until a message is this old (since queued or requeued by mail-retry), then mark it failed")
	fs.DurationVar(&m.dispatch.BackoffBase, "mail-backoff-base", def.BackoffBase, "wait after the first failed attempt (doubles each time, with jitter)")
	fs.DurationVar(&m.dispatch.BackoffMax, "mail-backoff-max", def.BackoffMax, "longest wait between attempts")
	fs.DurationVar(&m.dispatch.PollInterval, "mail-poll-interval", def.PollInterval, "how often the dispatcher looks for due messages")
	fs.DurationVar(&m.dispatch.Lease, "mail-lease", def.Lease, "how long a claimed message is reserved before another dispatcher may retry it")
}

// dispatcher builds the outbox dispatcher: SMTP when --smtp-host is set,
// else .eml files under the mail directory.
func (m *mailFlags) dispatcher(st *store.Store, dataDir string, log *slog.Logger) (*mail.Dispatcher, error) {
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

func mailWorkerCommand(stderr io.Writer) *ffcli.Command {
	fs := newFlagSet("mail-worker")
	var data dataFlags
	data.register(fs)
	var mailCfg mailFlags
	mailCfg.register(fs)
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	return &ffcli.Command{
		Name: "mail-worker", ShortUsage: "controlplane mail-worker [flags]",
		ShortHelp: "deliver invitation emails from the outbox (for serve --mail-dispatcher=false)",
		FlagSet:   fs, Options: envOptions(),
		Exec: func(ctx context.Context, _ []string) error {
			log, err := newLogger(stderr, *logLevel)
			if err != nil {
				return err
			}
			return data.withStore(ctx, func(st *store.Store) error {
				d, err := mailCfg.dispatcher(st, data.dataDir, log)
				if err != nil {
					return err
				}
				return d.Run(ctx)
			})
		},
	}
}

func mailStatusCommand(stdout io.Writer) *ffcli.Command {
	fs := newFlagSet("mail-status")
	var data dataFlags
	data.register(fs)
	failedLimit := fs.Int("failed", 20, "list at most this many failed emails, the latest first (0: none)")
	return &ffcli.Command{
		Name: "mail-status", ShortUsage: "controlplane mail-status [--failed N] [flags]",
		ShortHelp: "print invitation email counts, the oldest pending email's age and the failed emails",
		LongHelp: "Prints `pending N`, `sent N`, `failed N`, `cancelled N` (one line each, in this order, for scripts),\n" +
			"then `oldest_pending_age D` (0s when nothing is pending), then the failed emails with their last error.",
		FlagSet: fs, Options: envOptions(),
		Exec: func(ctx context.Context, _ []string) error {
			if *failedLimit < 0 {
				return fmt.Errorf("--failed must be 0 or more, got %d", *failedLimit)
			}
			return data.withStore(ctx, func(st *store.Store) error {
				counts, err := st.OutboxCounts(ctx)
				if err != nil {
					return err
				}
				for _, status := range []string{store.OutboxPending, store.OutboxSent, store.OutboxFailed, store.OutboxCancelled} {
					fmt.Fprintf(stdout, "%s %d\n", status, counts[status])
				}
				oldest, ok, err := st.OldestPendingOutbox(ctx)
				if err != nil {
					return err
				}
				if !ok {
					fmt.Fprintln(stdout, "oldest_pending_age 0s")
				} else {
					// Why it is still pending is the question an operator
					// asks next (SMTP down, or just queued), so say it.
					fmt.Fprintf(stdout, "oldest_pending_age %v (id %d, %d attempts, last error: %s)\n",
						time.Since(oldest.QueuedSince).Round(time.Second), oldest.ID, oldest.Attempts, oneLine(cmp.Or(oldest.LastError, "none")))
				}
				if counts[store.OutboxFailed] == 0 || *failedLimit == 0 {
					return nil
				}
				failed, err := st.FailedOutbox(ctx, *failedLimit)
				if err != nil {
					return err
				}
				fmt.Fprintf(stdout, "\nfailed emails, latest first (%d of %d; requeue with controlplane mail-retry):\n", len(failed), counts[store.OutboxFailed])
				tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
				fmt.Fprintln(tw, "ID\tWORKSPACE\tEMAIL\tATTEMPTS\tFAILED AT\tLAST ERROR")
				for _, e := range failed {
					fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t%s\t%s\n", e.ID, e.Workspace, e.Email, e.Attempts,
						e.UpdatedAt.UTC().Format(time.RFC3339), oneLine(e.LastError))
				}
				return tw.Flush()
			})
		},
	}
}

// oneLine keeps an SMTP error (a server's reply can span lines) on its
// table row.
func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

func mailRetryCommand(stdout io.Writer) *ffcli.Command {
	fs := newFlagSet("mail-retry")
	var data dataFlags
	data.register(fs)
	var filter store.OutboxFilter
	fs.StringVar(&filter.Workspace, "workspace", "", "requeue only this workspace's failed emails")
	fs.Int64Var(&filter.ID, "id", 0, "requeue only this email (an id from mail-status)")
	return &ffcli.Command{
		Name: "mail-retry", ShortUsage: "controlplane mail-retry [--workspace NAME | --id N] [flags]",
		ShortHelp: "requeue failed invitation emails: they are sent again now, with a full retry period",
		LongHelp: "Prints `requeued N`, and `skipped N` when failed emails were left as they are because their\n" +
			"invitation already has a pending email (a re-invite queued it). Emails of invitations that are no longer\n" +
			"pending are cancelled by the dispatcher instead of sent.",
		FlagSet: fs, Options: envOptions(),
		Exec: func(ctx context.Context, args []string) error {
			if len(args) > 0 {
				return fmt.Errorf("mail-retry takes no arguments (got %q): use --workspace NAME or --id N", args)
			}
			if filter.Workspace != "" && filter.ID != 0 {
				return errors.New("give --workspace or --id, not both")
			}
			if filter.ID < 0 {
				return fmt.Errorf("--id must be positive, got %d", filter.ID)
			}
			return data.withStore(ctx, func(st *store.Store) error {
				requeued, skipped, err := st.RequeueFailedOutbox(ctx, filter)
				if err != nil {
					return err
				}
				fmt.Fprintf(stdout, "requeued %d\n", requeued)
				if skipped > 0 {
					fmt.Fprintf(stdout, "skipped %d (their invitation already has a pending email)\n", skipped)
				}
				return nil
			})
		},
	}
}
