// Package controlplanetest runs the real control-plane server in a test's
// process, for the tests of the code that calls it:
//
//	srv := controlplanetest.Start(t)
//	ws := srv.CreateWorkspace("acme")
//	c := srv.Client(ws.AdminToken, ws.Name)
//	c.InviteWorkspaceUserWithResponse(ctx, nil, gen.InviteWorkspaceUserJSONRequestBody{Email: &email})
//	mails := srv.Emails("bob@example.com") // the invitation, with its accept link
//	srv.Advance(8 * 24 * time.Hour)        // the invitation has expired
//
// The server is the one `controlplane serve` runs (the same store, request
// validation and handlers) on a random loopback port, with SQLite in
// t.TempDir() (or a PostgreSQL database, WithPostgres), stopped when the
// test ends. Its emails go to an in-memory mailbox instead of being sent,
// and its clock is a test clock: moving it forward expires invitations, API
// keys, tokens and idempotency keys and makes webhook retries fall due. It
// also serves the dev routes of `serve --dev` (server.DevBasePath).
package controlplanetest

import (
	"cmp"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx", to create and drop a test's PostgreSQL database

	"github.com/membership-api/controlplane/auth"
	"github.com/membership-api/controlplane/gen"
	"github.com/membership-api/controlplane/internal/devserver"
	"github.com/membership-api/controlplane/server"
	"github.com/membership-api/controlplane/store"
)

// Option configures Start.
type Option func(*config)

type config struct {
	postgres  string
	fixtures  *store.Fixtures
	inviteTTL time.Duration
	logs      io.Writer
	localMail bool
}

// WithPostgres runs the server on PostgreSQL: a fresh database made on the
// server dsn names (whose user may create databases), dropped at the end.
func WithPostgres(dsn string) Option { return func(c *config) { c.postgres = dsn } }

// WithFixtures loads the fixtures (ParseFixtures reads the YAML form) at
// start and on every Reset.
func WithFixtures(f Fixtures) Option { return func(c *config) { c.fixtures = &f } }

// WithInviteTTL sets how long invitations stay acceptable (default 7 days).
func WithInviteTTL(d time.Duration) Option { return func(c *config) { c.inviteTTL = d } }

// WithLogs sends the server's logs (JSON lines) to w; by default they are
// dropped.
func WithLogs(w io.Writer) Option { return func(c *config) { c.logs = w } }

// WithLocalEmailDomains accepts emails at localhost or single-label
// domains (user@localhost), as --allow-local-email-domains does.
func WithLocalEmailDomains() Option { return func(c *config) { c.localMail = true } }

// Server is a running server. Its methods fail the test that started it
// on any error.
type Server struct {
	// URL is the server's root (http://127.0.0.1:PORT); the API is at APIURL.
	URL string
	// APIURL is URL + "/v0", what clients and Blaxel's SDKs are given.
	APIURL string

	tb  testing.TB
	dev *devserver.Server
}

// Clock is the server's test clock.
type Clock = devserver.Clock

// Email is an email the server sent.
type Email = devserver.Email

// Start starts a server for the test; it stops when the test ends.
func Start(tb testing.TB, opts ...Option) *Server {
	tb.Helper()
	var cfg config
	for _, o := range opts {
		o(&cfg)
	}
	ctx := context.Background()
	dir := tb.TempDir()
	dsn := ""
	if cfg.postgres != "" {
		dsn = freshPostgres(tb, cfg.postgres)
	}
	log := slog.New(slog.DiscardHandler)
	if cfg.logs != nil {
		log = slog.New(slog.NewJSONHandler(cfg.logs, nil))
	}
	dev, err := devserver.Build(ctx, devserver.Options{DataDir: dir, DSN: dsn, Fixtures: cfg.fixtures, Log: log,
		API: server.Config{InviteTTL: cfg.inviteTTL, AllowLocalEmailDomains: cfg.localMail}, CopySchema: true})
	if err != nil {
		tb.Fatalf("controlplanetest: start: %v", err)
	}
	dev.Serve()
	tb.Cleanup(func() {
		if err := dev.Close(); err != nil {
			tb.Errorf("controlplanetest: stop: %v", err)
		}
	})
	return &Server{URL: dev.URL, APIURL: dev.URL + server.APIBasePath, tb: tb, dev: dev}
}

// Workspace is a workspace CreateWorkspace made, with its first admin.
type Workspace struct {
	Name       string
	AdminSub   string
	AdminEmail string
	// AdminToken is a token of the admin's with every scope.
	AdminToken string
}

// CreateWorkspace creates a workspace with its first admin, named after it
// (sub "<name>-admin", email "admin@<name>.test").
func (s *Server) CreateWorkspace(name string) Workspace {
	s.tb.Helper()
	w := Workspace{Name: name, AdminSub: name + "-admin", AdminEmail: "admin@" + name + ".test"}
	_, err := s.dev.Store.CreateWorkspace(context.Background(), store.NewWorkspace{Name: name, AdminSub: w.AdminSub, AdminEmail: w.AdminEmail},
		store.EmailOptions{AllowLocalDomains: true})
	if err != nil {
		s.tb.Fatalf("controlplanetest: create workspace %s: %v", name, err)
	}
	w.AdminToken = s.Token(w.AdminSub, w.AdminEmail)
	return w
}

// Token mints a person's access token (the development issuer's), valid
// for an hour of the server's clock, with the scopes given (default
// "admin", which implies every scope).
func (s *Server) Token(sub, email string, scopes ...string) string {
	s.tb.Helper()
	if len(scopes) == 0 {
		scopes = []string{"admin"}
	}
	tok, err := s.dev.Issuer.Sign(auth.TokenRequest{Sub: sub, Email: email, Scopes: scopes, TTL: time.Hour}, s.dev.Clock.Now())
	if err != nil {
		s.tb.Fatalf("controlplanetest: token for %s: %v", sub, err)
	}
	return tok
}

// APIKey creates an API key acting as the member sub of the workspace.
func (s *Server) APIKey(workspace, sub string) string {
	s.tb.Helper()
	key, _, err := s.dev.Store.CreateAPIKey(context.Background(), workspace, sub)
	if err != nil {
		s.tb.Fatalf("controlplanetest: API key for %s in %s: %v", sub, workspace, err)
	}
	return key
}

// ServiceAccount is a service account ServiceAccount made: its OAuth
// client credentials.
type ServiceAccount struct {
	ClientID, ClientSecret string
}

// ServiceAccount creates a service account with role ("admin" or
// "member") in the workspace, as its admin adminSub.
func (s *Server) ServiceAccount(workspace, adminSub, name, role string) ServiceAccount {
	s.tb.Helper()
	secret, v, err := s.dev.Store.CreateServiceAccount(context.Background(), workspace, adminSub, store.NewServiceAccount{Name: name, Role: role})
	if err != nil {
		s.tb.Fatalf("controlplanetest: service account %s in %s: %v", name, workspace, err)
	}
	return ServiceAccount{ClientID: v.ClientID, ClientSecret: secret}
}

// Client is the generated client pointed at the server, sending
// credential: a token (with workspace as X-Blaxel-Workspace) or an API key
// (whose workspace is implied; workspace may be empty), as Blaxel's SDKs
// send them. It is gen's client, not the client module's (the same code
// generated from the same YAML): this module requiring that one would take
// a replace directive, and a replace directive in this go.mod breaks
// `go install` and `go run` of the module @version for everyone.
func (s *Server) Client(credential, workspace string) *gen.ClientWithResponses {
	s.tb.Helper()
	editor := func(_ context.Context, req *http.Request) error {
		if store.IsAPIKey(credential) {
			req.Header.Set("X-Blaxel-Authorization", "Bearer "+credential)
		} else if credential != "" {
			req.Header.Set("Authorization", "Bearer "+credential)
		}
		if workspace != "" {
			req.Header.Set("X-Blaxel-Workspace", workspace)
		}
		return nil
	}
	c, err := gen.NewClientWithResponses(s.APIURL, gen.WithRequestEditorFn(editor))
	if err != nil {
		s.tb.Fatalf("controlplanetest: client: %v", err)
	}
	return c
}

// Emails returns the emails sent so far, oldest first; with to, only those
// to that address. An invitation's email is there when the invite has been
// answered.
func (s *Server) Emails(to string) []Email { return s.dev.Emails(context.Background(), to) }

// ClearEmails empties the mailbox.
func (s *Server) ClearEmails() { s.dev.ClearEmails() }

// Clock is the server's clock.
func (s *Server) Clock() *Clock { return s.dev.Clock }

// Now is the server's time.
func (s *Server) Now() time.Time { return s.dev.Clock.Now() }

// Advance moves the server's clock forward by d and returns its new time.
func (s *Server) Advance(d time.Duration) time.Time {
	s.tb.Helper()
	now, err := s.dev.Clock.Advance(d)
	if err != nil {
		s.tb.Fatalf("controlplanetest: %v", err)
	}
	return now
}

// Reset empties the database and the mailbox, puts the clock back to real
// time and loads the fixtures again (if any).
func (s *Server) Reset() {
	s.tb.Helper()
	if _, err := s.dev.Reset(context.Background(), true); err != nil {
		s.tb.Fatalf("controlplanetest: reset: %v", err)
	}
}

// freshPostgres creates a database of its own for the test on the server
// dsn names and drops it when the test ends.
func freshPostgres(tb testing.TB, dsn string) string {
	tb.Helper()
	admin, err := sql.Open("pgx", dsn)
	if err != nil {
		tb.Fatalf("controlplanetest: PostgreSQL: %v", err)
	}
	defer admin.Close() //nolint:errcheck // closing a pool used for two statements
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	name := "cptest_" + hex.EncodeToString(b)
	if _, err := admin.ExecContext(context.Background(), "CREATE DATABASE "+name); err != nil {
		tb.Fatalf("controlplanetest: create database on %s: %v", store.RedactDSN(dsn), err)
	}
	tb.Cleanup(func() {
		drop, err := sql.Open("pgx", dsn)
		if err == nil {
			_, err = drop.ExecContext(context.Background(), "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
			err = cmp.Or(err, drop.Close())
		}
		if err != nil {
			tb.Logf("controlplanetest: drop database %s: %v", name, err)
		}
	})
	u, err := url.Parse(dsn)
	if err != nil {
		tb.Fatalf("controlplanetest: PostgreSQL DSN: %v", err)
	}
	u.Path = "/" + name
	return u.String()
}

// Fixtures are a declared starting state: workspaces, members, pending
// invitations, service accounts and API keys with fixed secrets.
type Fixtures = store.Fixtures

// ParseFixtures reads fixtures in their YAML form (the form of
// `serve --dev --fixtures FILE`, docs/api/testing.md); an error names the
// line at fault.
func ParseFixtures(yaml []byte) (Fixtures, error) {
	f, err := devserver.ParseFixtures(yaml, store.EmailOptions{})
	if err != nil {
		return Fixtures{}, err
	}
	return *f, nil
}
