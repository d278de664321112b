package main

// The mail commands and the flags of invitation email delivery (serve and
// mail-worker share them).

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"time"

	"github.com/peterbourgon/ff/v3/ffcli"

	"controlplane/mail"
	"controlplane/store"
)

// mailFlags configure invitation email delivery (serve and mail-worker).
type mailFlags struct {
	smtp         mail.SMTPConfig
	tls          string
	dir          string
	acceptURL    string
	maxAttempts  int
	backoffBase  time.Duration
	backoffMax   time.Duration
	pollInterval time.Duration
	lease        time.Duration
}

func (m *mailFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&m.smtp.Host, "smtp-host", "", "SMTP server; empty: write each email as an .eml file under --mail-dir instead")
	fs.IntVar(&m.smtp.Port, "smtp-port", 0, "SMTP port (default: 25 for none, 587 for starttls, 465 for tls)")
	fs.StringVar(&m.smtp.Username, "smtp-username", "", "SMTP user (empty: no AUTH)")
	fs.StringVar(&m.smtp.Password, "smtp-password", "", "SMTP password (prefer the CONTROLPLANE_SMTP_PASSWORD variable)")
	fs.StringVar(&m.tls, "smtp-tls", "starttls", "none, starttls or tls (implicit TLS)")
	fs.StringVar(&m.smtp.From, "smtp-from", "no-reply@localhost", "From address of invitation emails")
	fs.StringVar(&m.smtp.FromName, "smtp-from-name", "Blaxel", "From display name")
	fs.DurationVar(&m.smtp.Timeout, "smtp-timeout", 15*time.Second, "timeout per SMTP connection and command")
	fs.StringVar(&m.dir, "mail-dir", "", "where .eml files go without SMTP (default: <data-dir>/mail)")
	fs.StringVar(&m.acceptURL, "accept-url-template", mail.DefaultAcceptURLTemplate, "accept link in emails; {workspace} and {email} are replaced")
	fs.IntVar(&m.maxAttempts, "mail-max-attempts", 8, "attempts before a message with transient failures is marked failed")
	fs.DurationVar(&m.backoffBase, "mail-backoff-base", 5*time.Second, "wait after the first failed attempt (doubles each time, with jitter)")
	fs.DurationVar(&m.backoffMax, "mail-backoff-max", time.Hour, "longest wait between attempts")
	fs.DurationVar(&m.pollInterval, "mail-poll-interval", 2*time.Second, "how often the dispatcher looks for due messages")
	fs.DurationVar(&m.lease, "mail-lease", 2*time.Minute, "how long a claimed message is reserved before another dispatcher may retry it")
}

// dispatcher builds the outbox dispatcher: SMTP when --smtp-host is set,
// else .eml files under the mail directory.
func (m *mailFlags) dispatcher(st *store.Store, dataDir string, log *slog.Logger) (*mail.Dispatcher, error) {
	if _, err := mail.AcceptURL(m.acceptURL, "w", "e@x.y"); err != nil {
		return nil, fmt.Errorf("--accept-url-template: %w", err)
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
	return mail.NewDispatcher(st, sender, mail.DispatcherConfig{
		AcceptURLTemplate: m.acceptURL, MessageIDDomain: domain, MaxAttempts: m.maxAttempts,
		BackoffBase: m.backoffBase, BackoffMax: m.backoffMax, PollInterval: m.pollInterval, Lease: m.lease,
	}, log), nil
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
	return &ffcli.Command{
		Name: "mail-status", ShortUsage: "controlplane mail-status [flags]",
		ShortHelp: "print how many invitation emails are pending, sent, failed and cancelled",
		FlagSet:   fs, Options: envOptions(),
		Exec: func(ctx context.Context, _ []string) error {
			return data.withStore(ctx, func(st *store.Store) error {
				counts, err := st.OutboxCounts(ctx)
				if err != nil {
					return err
				}
				for _, status := range []string{store.OutboxPending, store.OutboxSent, store.OutboxFailed, store.OutboxCancelled} {
					fmt.Fprintf(stdout, "%s %d\n", status, counts[status])
				}
				return nil
			})
		},
	}
}
