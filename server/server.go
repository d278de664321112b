// Package server serves the control-plane API: Echo, the spec-driven request
// validator and authentication, and the handlers that map generated types
// to the store.
package server

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"

	"github.com/membership-api/controlplane/auth"
	"github.com/membership-api/controlplane/gen"
	"github.com/membership-api/controlplane/metrics"
	"github.com/membership-api/controlplane/store"
)

// Defaults of Config's zero fields; the serve flags take theirs from here,
// so each is written once.
const (
	DefaultInviteTTL = 7 * 24 * time.Hour
	DefaultBodyLimit = 64 << 10 // bytes
)

// Config holds the HTTP-facing settings.
type Config struct {
	// InviteTTL is how long an invitation stays acceptable.
	InviteTTL time.Duration
	// BodyLimit caps request bodies, in bytes.
	BodyLimit int64
	// Auth selects the trusted JWT issuer.
	Auth auth.VerifierConfig
	// MailQueued, if set, is called after an invitation email was queued,
	// so the in-process mail dispatcher sends it without waiting for a poll.
	MailQueued func()
	// RateLimits bounds request rates (off when its Limiter is nil).
	RateLimits RateLimits
	// TrustedProxies are the networks of the load balancers whose
	// X-Forwarded-For names the client (for per-address limits and logs);
	// empty: the client is the TCP peer and X-Forwarded-For is ignored.
	TrustedProxies []*net.IPNet
	// AllowLocalEmailDomains relaxes the email rule for development
	// (store.EmailOptions.AllowLocalDomains): user@localhost, user@127.0.0.1.
	AllowLocalEmailDomains bool
	// Metrics records request, authentication and rate-limit metrics; nil
	// records none (the access log and request IDs are there either way).
	Metrics *metrics.Metrics
	// CORSAllowedOrigins may call the API from a browser (ParseOrigins);
	// empty: no CORS headers at all.
	CORSAllowedOrigins []string
	// IdempotencyTTL is how long an Idempotency-Key is remembered
	// (idempotency.go); 0 means DefaultIdempotencyTTL.
	IdempotencyTTL time.Duration
	// OAuth configures the server's own issuer (the token endpoint of the
	// client-credentials flow, its keys and metadata).
	OAuth auth.IssuerConfig
	// Webhooks are the webhook endpoints' settings (webhooks.go).
	Webhooks WebhookConfig
	// SecretsInTheClear says /readyz's body, when set, that signing keys
	// and webhook secrets are stored unencrypted (no --secrets-key).
	SecretsInTheClear bool
}

// Server implements the generated strict server interface.
type Server struct {
	cfg Config
	// The store, by the groups of operations each handler uses (stores.go).
	workspaces      Workspaces
	members         Members
	serviceAccounts ServiceAccounts
	webhooks        Webhooks
	audit           Audit
	idempotency     Idempotency
	log             *slog.Logger
	// cursorKey signs list cursors (the same on every replica: Migrate
	// keeps it in the database).
	cursorKey []byte
	// limiter is the rate limiter (nil: off); bulk invites spend the
	// workspace's invitation quota row by row through it.
	limiter *rateLimiter
	// oauth issues service-account tokens (oauth.go).
	oauth *oauthServer
	// outages logs and counts the 503s of a database outage (unavailable.go).
	outages *outages
}

var _ gen.StrictServerInterface = (*Server)(nil)

// New builds the Echo instance serving the API under /v0 plus /healthz and
// /readyz, on st (a *store.Store, or in handler tests a fake). The returned
// close function stops background work (JWKS refresh).
func New(ctx context.Context, cfg Config, st Store, log *slog.Logger) (*echo.Echo, func(), error) {
	if cfg.InviteTTL <= 0 {
		cfg.InviteTTL = DefaultInviteTTL
	}
	if cfg.BodyLimit <= 0 {
		cfg.BodyLimit = DefaultBodyLimit
	}
	if cfg.IdempotencyTTL <= 0 {
		cfg.IdempotencyTTL = DefaultIdempotencyTTL
	}
	doc, err := LoadSpec(ctx, store.EmailOptions{AllowLocalDomains: cfg.AllowLocalEmailDomains})
	if err != nil {
		return nil, nil, err
	}
	iss, err := auth.NewIssuer(ctx, cfg.OAuth, st, log)
	if err != nil {
		return nil, nil, err
	}
	oauth := &oauthServer{issuer: iss, scopes: auth.NewScopePolicy(doc)}
	verifier, err := auth.NewJWTVerifier(ctx, cfg.Auth)
	if err != nil {
		return nil, nil, err
	}
	verifier.TrustOwnIssuer(iss)
	validator, err := newRequestValidator(doc, &authenticator{jwt: verifier, credentials: st, scopes: oauth.scopes}, cfg.BodyLimit)
	if err != nil {
		verifier.Close()
		return nil, nil, err
	}

	// Lines logged with a request's context carry its ID; the access
	// line adds it itself, first.
	access := log
	log = slog.New(requestIDHandler{log.Handler()})
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	outages := newOutages(log, cfg.Metrics, st.Ping)
	e.HTTPErrorHandler = errorHandler(log, outages) //nolint:contextcheck // an Echo handler: it runs under the request's context (c.Request().Context()), not New's
	e.IPExtractor = clientIP(cfg.TrustedProxies)
	// Outermost, so that panics, 404s and 429s are logged and counted too.
	e.Use(newObserver(doc, access, cfg.Metrics).middleware)
	e.Use(middleware.RecoverWithConfig(middleware.RecoverConfig{DisablePrintStack: true,
		LogErrorFunc: func(c echo.Context, err error, stack []byte) error { //nolint:contextcheck // an Echo handler: it runs under the request's context (c.Request().Context()), not New's
			log.ErrorContext(c.Request().Context(), "panic", "path", c.Request().URL.Path, "err", err, "stack", string(stack))
			return err
		}}))

	e.GET("/healthz", func(c echo.Context) error { return c.JSON(http.StatusOK, map[string]string{"status": "ok"}) })
	e.GET("/readyz", func(c echo.Context) error { //nolint:contextcheck // an Echo handler: it runs under the request's context (c.Request().Context()), not New's
		ctx, cancel := context.WithTimeout(c.Request().Context(), 2*time.Second)
		defer cancel()
		if err := st.Ping(ctx); err != nil {
			// A balancer drains the replica; an outage is logged once
			// (outages), not at every probe.
			if u := store.Unavailable(err); u != nil {
				outages.answered(ctx, u, false)
			} else {
				log.WarnContext(ctx, "readiness check failed", "err", err)
			}
			if errors.Is(err, store.ErrWritesStopped) {
				// Writes fail until a restart: drain, and say what to do.
				return c.JSON(http.StatusServiceUnavailable, map[string]string{"status": "writes stopped after a failed fsync of the SQLite WAL: restart the server"})
			}
			return c.JSON(http.StatusServiceUnavailable, map[string]string{"status": "database unreachable"})
		}
		body := map[string]any{"status": "ready"}
		// The schema version (goose_db_version), when the store tells it
		// (handler tests' fakes do not): a rolling upgrade shows on it.
		if sv, ok := st.(interface {
			SchemaVersion(context.Context) (int64, error)
		}); ok {
			v, err := sv.SchemaVersion(ctx)
			if err != nil {
				if u := store.Unavailable(err); u != nil {
					outages.answered(ctx, u, false)
				} else {
					log.WarnContext(ctx, "readiness check failed", "err", err)
				}
				return c.JSON(http.StatusServiceUnavailable, map[string]string{"status": "database unreachable"})
			}
			body["schema_version"] = v
		}
		if cfg.SecretsInTheClear {
			body["secrets"] = "stored in the clear: set --secrets-key (docs/operations/secrets.md)"
		}
		return c.JSON(http.StatusOK, body)
	})

	cursorKey, err := st.CursorKey(ctx)
	if err != nil {
		verifier.Close()
		return nil, nil, err
	}
	srv := &Server{cfg: cfg, workspaces: st, members: st, serviceAccounts: st, webhooks: st, audit: st, idempotency: st,
		log: log, cursorKey: cursorKey, oauth: oauth, outages: outages}
	middlewares := []echo.MiddlewareFunc{validator.middleware}
	if limiter := newRateLimiter(cfg.RateLimits, log); limiter != nil {
		srv.limiter = limiter
		middlewares = []echo.MiddlewareFunc{limiter.beforeAuth, validator.middleware, limiter.afterAuth(srv)} //nolint:contextcheck // an Echo handler: it runs under the request's context (c.Request().Context()), not New's
	}
	api := e.Group(APIBasePath, middlewares...)
	// Unknown routes under /v0 reach the validator (which answers 404/405)
	// only if some route matches them; these catch-alls make sure one does.
	api.Any("", echo.NotFoundHandler)
	api.Any("/*", echo.NotFoundHandler)
	gen.RegisterHandlersWithBaseURL(api, gen.NewStrictHandler(srv, []gen.StrictMiddlewareFunc{keepRawRequest, withActor}), "")
	oauth.serveWellKnown(e) //nolint:contextcheck // registers Echo handlers: they run under each request's context, not New's

	if err := serveWeb(ctx, e, cfg, doc); err != nil { // last: it adds HEAD to every GET route
		verifier.Close()
		return nil, nil, err
	}
	sweepCtx, stopSweep := context.WithCancel(context.WithoutCancel(ctx))
	go srv.sweepIdempotencyKeys(sweepCtx, sweepInterval(cfg.IdempotencyTTL))
	return e, func() { stopSweep(); verifier.Close(); outages.close() }, nil
}

// clientIP is how the client's address is found: the TCP peer, or with
// trusted proxies the right-most X-Forwarded-For entry not from one of them
// (Echo's default would believe any X-Forwarded-For a client sends).
func clientIP(trusted []*net.IPNet) echo.IPExtractor {
	if len(trusted) == 0 {
		return echo.ExtractIPDirect()
	}
	opts := []echo.TrustOption{echo.TrustLoopback(false), echo.TrustLinkLocal(false), echo.TrustPrivateNet(false)}
	for _, n := range trusted {
		opts = append(opts, echo.TrustIPRange(n))
	}
	return echo.ExtractIPFromXFFHeader(opts...)
}
