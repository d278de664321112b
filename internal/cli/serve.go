package cli

// The serve command: its flags (serveConfig) and serve, which runs the
// server a config describes until its context ends.

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime/pprof"
	"time"

	"github.com/peterbourgon/ff/v3/ffcli"

	"github.com/membership-api/controlplane/auth"
	"github.com/membership-api/controlplane/server"
	"github.com/membership-api/controlplane/store"
)

// serveConfig is every flag of serve.
type serveConfig struct {
	data    dataConfig
	log     logConfig
	metrics metricsConfig
	mail    mailConfig
	http    httpConfig
	limits  limitConfig
	hooks   webhookConfig
	schema  schemaConfig
	dev     devConfig
	tls     tlsConfig

	addr            string
	shutdownTimeout time.Duration
	// api holds the server settings that come straight from flags
	// (invite TTL, body limit, JWT issuer, local email domains); serve
	// adds what is built at start (rate limits, metrics, mail wake-up).
	api         server.Config
	corsOrigins string
	dispatch    bool
	cpuProfile  string
	gc          gcConfig
}

func (c *serveConfig) bind(fs *flag.FlagSet) {
	c.data.bind(fs)
	c.data.bindPool(fs)
	c.data.bindInviteBatches(fs)
	c.schema.bind(fs)
	fs.StringVar(&c.addr, "addr", "127.0.0.1:8080", "listen address (port 0 picks a free port, logged at start)")
	c.log.bind(fs)
	c.metrics.bind(fs)
	fs.DurationVar(&c.api.InviteTTL, "invite-ttl", server.DefaultInviteTTL, "how long an invitation stays acceptable")
	fs.DurationVar(&c.api.IdempotencyTTL, "idempotency-ttl", server.DefaultIdempotencyTTL, "how long an Idempotency-Key is remembered (its answer replayed); expired keys are swept")
	fs.Int64Var(&c.api.BodyLimit, "body-limit", server.DefaultBodyLimit, "largest accepted request body, in bytes")
	fs.StringVar(&c.api.Auth.JWKSURL, "jwks-url", "", "trust JWTs signed by the keys at this JWKS URL")
	fs.StringVar(&c.api.Auth.JWKSFile, "jwks-file", "", "trust JWTs signed by the keys in this JWKS file")
	fs.StringVar(&c.api.Auth.PublicKeyFile, "jwt-public-key", "", "trust JWTs signed by this PEM public key (Ed25519, P-256 or RSA)")
	fs.StringVar(&c.api.Auth.Issuer, "jwt-issuer", "", "required iss claim of external tokens (empty: not checked)")
	fs.StringVar(&c.api.Auth.Audience, "jwt-audience", "", "required aud claim (empty: not checked)")
	fs.BoolVar(&c.api.Auth.RequireEmailVerified, "jwt-require-email-verified", false, `trust a token's email for my-invitations/accept/decline only with "email_verified": true (default: a token without the claim is trusted; false is always refused)`)
	fs.StringVar(&c.api.OAuth.PublicURL, "public-url", "", "the URL clients reach this server at, e.g. https://api.example.com: the OAuth issuer (iss of the tokens it issues) and the base of /.well-known/oauth-authorization-server's URLs; the same on every replica (default: http:// and the address serve listens on)")
	fs.DurationVar(&c.api.OAuth.TokenTTL, "oauth-token-ttl", auth.DefaultTokenTTL, "lifetime of the access tokens the token endpoint issues (at most 24h)")
	fs.DurationVar(&c.api.OAuth.KeyRefresh, "oauth-key-refresh", auth.DefaultKeyRefresh, "how often the OAuth signing keys are re-read from the database (a rotation reaches every replica within it)")
	fs.BoolVar(&c.api.AllowLocalEmailDomains, "allow-local-email-domains", false, "development: accept emails at localhost, single-label or all-numeric domains (user@localhost, user@127.0.0.1)")
	fs.DurationVar(&c.shutdownTimeout, "shutdown-timeout", 15*time.Second, "how long in-flight requests may finish on SIGTERM")
	fs.StringVar(&c.corsOrigins, "cors-allowed-origins", "", `comma-separated origins (https://app.example.com) whose pages may call the API from a browser, or "*" for any (default: none, no CORS headers)`)
	c.mail.bind(fs)
	fs.BoolVar(&c.dispatch, "mail-dispatcher", true, "deliver invitation emails from this process (false: run controlplane mail-worker separately)")
	fs.StringVar(&c.cpuProfile, "cpu-profile", "", "write a CPU profile (pprof) to this file until shutdown, for performance work")
	c.gc.bind(fs)
	c.http.bind(fs)
	c.limits.bind(fs)
	fs.BoolVar(&c.hooks.dispatch, "webhook-dispatcher", true, "deliver webhook events from this process (false: run controlplane webhook-worker separately)")
	c.hooks.bind(fs)
	c.dev.bind(fs)
	c.tls.bind(fs, &c.api.OAuth.AllowPlainHTTP)
}

func serveCommand(stdout, stderr io.Writer) *ffcli.Command {
	fs := newFlagSet("serve")
	var cfg serveConfig
	cfg.bind(fs)
	return &ffcli.Command{
		Name: "serve", ShortUsage: "controlplane serve [flags]", ShortHelp: "migrate the database and serve the API",
		FlagSet: fs, Options: envOptions(),
		Exec: func(ctx context.Context, _ []string) error {
			if cfg.dev.on || cfg.dev.fixtures != "" {
				return serveDev(ctx, cfg, stdout, stderr)
			}
			return serve(ctx, cfg, stderr)
		},
	}
}

// serve migrates the database and serves the API as cfg says, logging to
// stderr, until ctx ends; then it lets requests in flight finish (up to
// --shutdown-timeout) and stops the mail dispatcher after them.
func serve(ctx context.Context, cfg serveConfig, stderr io.Writer) error {
	log, mon, err := startObserved(ctx, cfg.log, cfg.metrics, stderr)
	if err != nil {
		return err
	}
	defer mon.close(ctx, log)
	stopProfile, err := cfg.tuneRuntime()
	if err != nil {
		return err
	}
	defer closeLogged(log, "--cpu-profile", stopProfile)
	api := cfg.api
	if api.Auth, err = cfg.authConfig(log); err != nil {
		return err
	}
	// Listening first: a busy or invalid --addr is reported at once, not
	// after the migrations and with the dispatchers already started.
	ln, err := cfg.http.listen(ctx, cfg.addr)
	if err != nil {
		return err
	}
	// Until serveOn hands it to the HTTP server, whose shutdown closes it.
	served := false
	defer func() {
		if !served {
			closeLogged(log, "listener", ln.Close)
		}
	}()
	if ln, err = cfg.tls.wrap(ln, log); err != nil {
		return err
	}
	st, err := cfg.data.openWith(ctx, mon.hooks(), log, cfg.schema.prepare())
	if err != nil {
		return err
	}
	defer closeLogged(log, "store", st.Close)
	if err := cfg.schema.observe(ctx, st, mon, log); err != nil {
		return err
	}
	if api.SecretsInTheClear, err = checkSecretsAtStart(ctx, st, cfg.data.secretsFrom, log); err != nil {
		return err
	}
	mon.serve(st, log)
	limits, proxies, closeLimits, err := cfg.limits.build(ctx, log)
	if err != nil {
		return err
	}
	defer closeLogged(log, "rate limits", closeLimits)
	api.RateLimits, api.TrustedProxies, api.Metrics = limits, proxies, mon.metrics()
	if api.CORSAllowedOrigins, err = server.ParseOrigins(cfg.corsOrigins); err != nil {
		return err
	}
	// Deferred before the HTTP server is: it stops after it, finishing the
	// message in flight and releasing what it had claimed.
	wake, stopDispatcher, err := cfg.startDispatcher(ctx, st, mon, log)
	if err != nil {
		return err
	}
	defer stopDispatcher()
	api.MailQueued = wake
	wakeHooks, stopHooks, err := cfg.hooks.start(ctx, st, mon, log)
	if err != nil {
		return err
	}
	defer stopHooks()
	api.Webhooks = server.WebhookConfig{AllowLoopback: cfg.hooks.cfg.AllowLoopback, Queued: wakeHooks}
	// The default --public-url is the address actually listened on
	// (--addr may say port 0).
	if api.OAuth.PublicURL == "" {
		api.OAuth.PublicURL = cfg.tls.scheme() + "://" + ln.Addr().String()
	}
	e, closeServer, err := server.New(ctx, api, st, log)
	if err != nil {
		return err
	}
	defer closeServer()
	served = true
	return cfg.serveOn(ctx, ln, e, st.Dialect(), log)
}

// tuneRuntime sets the GC target and starts the CPU profile if asked; the
// returned function stops the profile.
func (c *serveConfig) tuneRuntime() (stop func() error, err error) {
	c.gc.apply()
	if c.cpuProfile == "" {
		return func() error { return nil }, nil
	}
	f, err := os.Create(c.cpuProfile)
	if err != nil {
		return nil, fmt.Errorf("--cpu-profile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		return nil, fmt.Errorf("--cpu-profile: %w", errors.Join(err, f.Close()))
	}
	return func() error { pprof.StopCPUProfile(); return f.Close() }, nil
}

// authConfig is the issuer configuration: the one external issuer the
// flags name, else the development issuer (with a warning, as it must not
// reach production).
func (c *serveConfig) authConfig(log *slog.Logger) (auth.VerifierConfig, error) {
	issuers := c.api.Auth
	if n := countSet(issuers.JWKSURL, issuers.JWKSFile, issuers.PublicKeyFile); n > 1 {
		return issuers, errors.New("set only one of --jwks-url, --jwks-file, --jwt-public-key")
	}
	if issuers.External() {
		return issuers, nil
	}
	dev, err := auth.LoadDevIssuer(c.data.dataDir)
	if err != nil {
		return issuers, err
	}
	issuers.DevIssuer = dev
	log.Warn("no external JWT issuer configured: trusting the built-in development issuer (tokens from `controlplane token`); set --jwks-url, --jwks-file or --jwt-public-key in production")
	return issuers, nil
}

func countSet(values ...string) int {
	n := 0
	for _, v := range values {
		if v != "" {
			n++
		}
	}
	return n
}

// startDispatcher starts the in-process mail dispatcher (unless
// --mail-dispatcher=false). wake tells it an email was queued (nil when
// off); stop stops it and waits until it has.
func (c *serveConfig) startDispatcher(ctx context.Context, st *store.Store, mon *metricsServer, log *slog.Logger) (wake, stop func(), err error) {
	if !c.dispatch {
		log.Info("mail: dispatcher off in this process (--mail-dispatcher=false); run `controlplane mail-worker`")
		return nil, func() {}, nil
	}
	d, err := c.mail.dispatcher(st, c.data.dataDir, log)
	if err != nil {
		return nil, nil, err
	}
	mon.watchMail(d)
	// Not ctx: the dispatcher must outlive the cancellation that starts the
	// shutdown, until the HTTP server has stopped queueing emails.
	dctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	go func() { d.Run(dctx); close(done) }()
	return d.Wake, func() { cancel(); <-done }, nil
}

// serveOn serves h on ln until ctx ends, then shuts the HTTP server down
// gracefully.
func (c *serveConfig) serveOn(ctx context.Context, ln net.Listener, h http.Handler, dialect string, log *slog.Logger) error {
	srv := c.http.server(h, log)
	base := c.tls.scheme() + "://" + ln.Addr().String()
	log.Info("listening", "addr", base, "api", base+server.APIBasePath,
		"database", dialect, "dsn", store.RedactDSN(c.data.dsn()))
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	log.Info("shutting down")
	// ctx is done by now: the requests in flight get their own time.
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.shutdownTimeout)
	defer cancel()
	return srv.Shutdown(sctx)
}
