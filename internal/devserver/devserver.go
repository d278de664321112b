// Package devserver builds the server that tests run against: the real
// server (store, validator, handlers) on a test clock, with its emails kept
// in a mailbox instead of sent, the dev routes (server.MountDev), fixtures
// and a reset. `serve --dev` (internal/cli) and controlplanetest both use
// it; neither is for production.
package devserver

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"sync"
	"time"

	"github.com/membership-api/controlplane/auth"
	"github.com/membership-api/controlplane/mail"
	"github.com/membership-api/controlplane/server"
	"github.com/membership-api/controlplane/store"
	"github.com/membership-api/controlplane/webhook"
)

// Options configure Build.
type Options struct {
	// DataDir holds the development issuer's key and, without DSN, the
	// SQLite database. Required.
	DataDir string
	// DSN is the database (store.Open's forms); "": DataDir/controlplane.db.
	DSN string
	// Listener is where the server will be served; nil: a free port on
	// 127.0.0.1. Its address is the OAuth issuer's URL.
	Listener net.Listener
	// API are the server's settings (InviteTTL, AllowLocalEmailDomains…);
	// Build sets the clock, the issuers and the mail and webhook wake-ups.
	API server.Config
	// Mail tunes the mail dispatcher (accept link template).
	Mail mail.DispatcherConfig
	// Webhooks tunes the webhook dispatcher.
	Webhooks webhook.Config
	// Fixtures are loaded at start (the database emptied first) and on
	// every Reset that asks for them.
	Fixtures *store.Fixtures
	// Log receives the server's logs; nil: discarded.
	Log *slog.Logger
	// CopySchema starts a new SQLite database (no DSN, none in DataDir
	// yet) as a copy of one migrated once per process, instead of
	// migrating it: for processes that start many servers (tests).
	CopySchema bool
}

// Server is a built dev server: call Serve (or serve Handler on Listener
// yourself), and Close at the end.
type Server struct {
	// URL is the server's root, e.g. http://127.0.0.1:41234 (the API is
	// under URL + server.APIBasePath).
	URL      string
	Listener net.Listener
	Handler  http.Handler
	Store    *store.Store
	Clock    *Clock
	Mailbox  *Mailbox
	Issuer   *auth.DevIssuer

	fixtures   *store.Fixtures
	fixtureOpt store.FixtureOptions
	mail       *mail.Dispatcher
	mailMu     sync.Mutex // one flush at a time: see flushMail
	wakeHooks  func()
	closers    []func() error
	httpServer *http.Server
	served     chan error
}

var _ server.DevControl = (*Server)(nil)

// Build opens the store, migrates it, loads the fixtures and builds the
// handler, without serving it yet.
func Build(ctx context.Context, opts Options) (s *Server, err error) {
	if opts.DataDir == "" {
		return nil, errors.New("devserver: a data directory is required")
	}
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s = &Server{Clock: &Clock{}}
	s.Mailbox = &Mailbox{now: s.Clock.Now}
	defer func() {
		if err != nil {
			err = errors.Join(err, s.close())
		}
	}()
	ln := opts.Listener
	if ln == nil {
		var lc net.ListenConfig
		if ln, err = lc.Listen(ctx, "tcp", "127.0.0.1:0"); err != nil {
			return nil, err
		}
	}
	s.Listener, s.URL = ln, "http://"+ln.Addr().String()
	s.closers = append(s.closers, func() error {
		if err := ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			return err
		}
		return nil
	})
	if s.Issuer, err = auth.LoadDevIssuer(opts.DataDir); err != nil {
		return nil, err
	}
	dsn := cmp.Or(opts.DSN, filepath.Join(opts.DataDir, "controlplane.db"))
	copied := false
	if opts.CopySchema && opts.DSN == "" {
		if copied, err = copySchema(dsn); err != nil {
			return nil, err
		}
	}
	st, err := store.Open(ctx, dsn, store.Options{Now: s.Clock.Now, Logger: log, MaxOpenConns: 8})
	if err != nil {
		return nil, err
	}
	s.Store = st
	s.closers = append(s.closers, st.Close)
	if !copied {
		if err := st.Migrate(ctx); err != nil {
			return nil, err
		}
	}
	api := opts.API
	s.fixtures = opts.Fixtures
	s.fixtureOpt = store.FixtureOptions{InviteTTL: cmp.Or(api.InviteTTL, server.DefaultInviteTTL),
		Emails: store.EmailOptions{AllowLocalDomains: api.AllowLocalEmailDomains}}
	if s.fixtures != nil {
		// From the fixtures, whatever the database held: a dev server
		// starts as it resets.
		opt := s.fixtureOpt
		opt.Reset = true
		if err := st.LoadFixtures(ctx, *s.fixtures, opt); err != nil {
			return nil, fmt.Errorf("fixtures: %w", err)
		}
	}

	// Background work lives until Close, not until ctx ends.
	bg, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.closers = append(s.closers, func() error { cancel(); return nil })
	mcfg := opts.Mail
	mcfg.Now = s.Clock.Now
	s.mail = mail.NewDispatcher(st, s.Mailbox, mcfg, log)
	wcfg := opts.Webhooks
	wcfg.Now, wcfg.AllowLoopback = s.Clock.Now, true
	hooks := webhook.NewDispatcher(st, wcfg, log)
	hooksDone := make(chan struct{})
	go func() { hooks.Run(bg); close(hooksDone) }()
	s.closers = append(s.closers, func() error { cancel(); <-hooksDone; return nil })
	s.wakeHooks = hooks.Wake
	s.Clock.moved = func() { hooks.Wake(); s.flushMail(bg) }

	api.Auth = auth.VerifierConfig{DevIssuer: s.Issuer, Now: s.Clock.Now}
	api.OAuth.Now = s.Clock.Now
	api.OAuth.PublicURL = cmp.Or(api.OAuth.PublicURL, s.URL)
	api.MailQueued = func() { s.flushMail(bg) }
	api.Webhooks = server.WebhookConfig{AllowLoopback: true, Queued: hooks.Wake}
	e, closeServer, err := server.New(bg, api, st, log)
	if err != nil {
		return nil, err
	}
	s.closers = append(s.closers, func() error { closeServer(); return nil })
	if err := server.MountDev(bg, e, s); err != nil {
		return nil, err
	}
	s.Handler = e
	return s, nil
}

// flushMail delivers every due email into the mailbox before it returns:
// the server calls it when an invite has queued one (MailQueued), so an
// email is in the mailbox by the time the invite is answered. One flush at
// a time, so a flush never returns while another still holds a message it
// claimed.
func (s *Server) flushMail(ctx context.Context) {
	s.mailMu.Lock()
	defer s.mailMu.Unlock()
	for range 1000 { // bounded: a message that keeps coming back must not hang a request
		n, err := s.mail.RunOnce(ctx)
		if err != nil || n == 0 {
			return
		}
	}
}

// Serve serves Handler on Listener in the background until Close.
func (s *Server) Serve() {
	s.httpServer = &http.Server{Handler: s.Handler, ReadHeaderTimeout: 10 * time.Second}
	s.served = make(chan error, 1)
	go func() { s.served <- s.httpServer.Serve(s.Listener) }()
}

// Close stops the server (if Serve started it) and everything Build started.
func (s *Server) Close() error {
	var err error
	if s.httpServer != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		err = s.httpServer.Shutdown(ctx)
		if serr := <-s.served; !errors.Is(serr, http.ErrServerClosed) {
			err = errors.Join(err, serr)
		}
		s.httpServer = nil
	}
	return errors.Join(err, s.close())
}

func (s *Server) close() error {
	var errs []error
	for i := len(s.closers) - 1; i >= 0; i-- {
		errs = append(errs, s.closers[i]())
	}
	s.closers = nil
	return errors.Join(errs...)
}

// Emails returns the emails sent so far (server.DevControl), after
// delivering any that fell due.
func (s *Server) Emails(ctx context.Context, to string) []server.DevEmail {
	s.flushMail(ctx)
	return s.Mailbox.Emails(to)
}

// Email returns one email (server.DevControl).
func (s *Server) Email(ctx context.Context, id int64) (server.DevEmail, bool) {
	s.flushMail(ctx)
	return s.Mailbox.Email(id)
}

// ClearEmails empties the mailbox (server.DevControl).
func (s *Server) ClearEmails() { s.Mailbox.Clear() }

// Now is the server's clock (server.DevControl).
func (s *Server) Now() time.Time { return s.Clock.Now() }

// ClockOffset is how far the clock is ahead of real time (server.DevControl).
func (s *Server) ClockOffset() time.Duration { return s.Clock.Offset() }

// AdvanceClock moves the clock forward by d (server.DevControl).
func (s *Server) AdvanceClock(d time.Duration) (time.Time, error) { return s.Clock.Advance(d) }

// SetClock moves the clock forward to t (server.DevControl).
func (s *Server) SetClock(t time.Time) (time.Time, error) { return s.Clock.Set(t) }

// Token signs a person's token, dated by the clock (server.DevControl).
func (s *Server) Token(sub, email string, scopes []string, ttl time.Duration) (string, time.Time, error) {
	now := s.Clock.Now()
	tok, err := s.Issuer.Sign(auth.TokenRequest{Sub: sub, Email: email, Scopes: scopes, TTL: ttl}, now)
	return tok, now.Add(ttl), err
}

// Reset empties the database (in one transaction with loading the
// fixtures, when asked and there are some), the mailbox, and puts the
// clock back to real time (server.DevControl).
func (s *Server) Reset(ctx context.Context, fixtures bool) (bool, error) {
	// Mail first: no email of the old data may reach the new mailbox.
	s.mailMu.Lock()
	defer s.mailMu.Unlock()
	s.Clock.reset()
	var err error
	load := fixtures && s.fixtures != nil
	if load {
		opt := s.fixtureOpt
		opt.Reset = true
		err = s.Store.LoadFixtures(ctx, *s.fixtures, opt)
	} else {
		err = s.Store.Reset(ctx)
	}
	s.Mailbox.Clear()
	return load, err
}
