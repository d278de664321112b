package cli

// The limits of `serve`: connections, headers and timeouts of the HTTP
// server, and the request rate limits (docs/operations/limits.md).

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"syscall"
	"time"

	"golang.org/x/net/netutil"

	"github.com/membership-api/controlplane/ratelimit"
	"github.com/membership-api/controlplane/server"
	"github.com/membership-api/controlplane/store"
)

// httpConfig bounds what one connection, and all of them, can hold.
type httpConfig struct {
	maxHeaderBytes    int
	maxConnections    int
	readHeaderTimeout time.Duration
	idleTimeout       time.Duration
}

func (h *httpConfig) bind(fs *flag.FlagSet) {
	fs.IntVar(&h.maxHeaderBytes, "max-header-bytes", 16<<10, "largest request line + headers in bytes (431 above); Go's default of 1 MiB lets slow clients hold a MiB each")
	fs.IntVar(&h.maxConnections, "max-connections", 2048, "open connections at once; more wait in the kernel's accept queue (0: no cap)")
	fs.DurationVar(&h.readHeaderTimeout, "read-header-timeout", 5*time.Second, "time a client has to send its request headers")
	fs.DurationVar(&h.idleTimeout, "idle-timeout", time.Minute, "how long an idle keep-alive connection stays open")
}

// listen opens the listening socket, capped at --max-connections.
func (h *httpConfig) listen(ctx context.Context, addr string) (net.Listener, error) {
	if _, port, err := net.SplitHostPort(addr); err != nil {
		return nil, fmt.Errorf("invalid address --addr %q: %w (expected HOST:PORT, e.g. 127.0.0.1:8080 or :8080)", addr, err)
	} else if _, err := net.DefaultResolver.LookupPort(ctx, "tcp", port); err != nil {
		return nil, fmt.Errorf("invalid address --addr %q: %w (a port is 0 to 65535; 0 picks a free one)", addr, err)
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	switch {
	case errors.Is(err, syscall.EADDRINUSE):
		return nil, fmt.Errorf("listen on %s: %w (is another server running? choose another --addr)", addr, err)
	case err != nil:
		return nil, fmt.Errorf("listen on %s: %w", addr, err)
	}
	if h.maxConnections > 0 {
		ln = netutil.LimitListener(ln, h.maxConnections)
	}
	return ln, nil
}

// server is the HTTP server for handler. Bodies are capped by --body-limit
// in the validator; a whole request must arrive within 30 s and its answer
// leave within 30 s.
func (h *httpConfig) server(handler http.Handler, log *slog.Logger) *http.Server {
	return &http.Server{Handler: handler, MaxHeaderBytes: h.maxHeaderBytes,
		ReadHeaderTimeout: h.readHeaderTimeout, ReadTimeout: 30 * time.Second, WriteTimeout: 30 * time.Second,
		IdleTimeout: h.idleTimeout, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
}

// limitConfig is the request rate limits.
type limitConfig struct {
	enabled                                 bool
	redisURL, redisPrefix                   string
	caller, workspaceWrites, invites, fails string
	trustedProxies                          string
}

func (l *limitConfig) bind(fs *flag.FlagSet) {
	fs.BoolVar(&l.enabled, "rate-limits", true, "enforce the --rate-limit-* limits (false turns them all off, e.g. for load tests)")
	fs.StringVar(&l.redisURL, "redis", "", "share rate limit counts between replicas through this Redis (redis://host:6379/0); empty: counted in this process")
	fs.StringVar(&l.redisPrefix, "redis-prefix", "controlplane:", "prefix of this deployment's keys in Redis (give each deployment sharing a Redis its own)")
	fs.StringVar(&l.caller, "rate-limit-caller", "100/s", "requests per caller (JWT sub or API key), every operation: N/s, N/m, N/h or off")
	fs.StringVar(&l.workspaceWrites, "rate-limit-workspace-writes", "600/m", "successful changes per workspace (invite, remove, role change)")
	fs.StringVar(&l.invites, "rate-limit-workspace-invites", "1000/h", "invitations per workspace; each sends an email, so this bounds the workspace's emails")
	fs.StringVar(&l.fails, "rate-limit-failed-auth", "30/m", "failed authentications (401) per client address; past it the address gets 429 for everything")
	fs.StringVar(&l.trustedProxies, "trusted-proxies", "", "comma-separated CIDRs of load balancers whose X-Forwarded-For names the client (empty: the TCP peer is the client)")
}

// build returns the rate limits and the proxies to trust, and a function
// releasing the Redis connection.
func (l *limitConfig) build(ctx context.Context, log *slog.Logger) (server.RateLimits, []*net.IPNet, func() error, error) {
	proxies, err := parseCIDRs(l.trustedProxies)
	if err != nil {
		return server.RateLimits{}, nil, nil, err
	}
	if !l.enabled {
		log.Info("rate limits off (--rate-limits=false)")
		return server.RateLimits{}, proxies, func() error { return nil }, nil
	}
	limits := server.RateLimits{}
	for _, q := range []struct {
		flag, name, value string
		dst               *ratelimit.Quota
	}{
		{"rate-limit-caller", server.QuotaCaller, l.caller, &limits.Caller},
		{"rate-limit-workspace-writes", server.QuotaWorkspaceWrites, l.workspaceWrites, &limits.WorkspaceWrites},
		{"rate-limit-workspace-invites", server.QuotaWorkspaceInvites, l.invites, &limits.WorkspaceInvites},
		{"rate-limit-failed-auth", server.QuotaFailedAuth, l.fails, &limits.FailedAuth},
	} {
		if *q.dst, err = ratelimit.ParseQuota(q.name, q.value); err != nil {
			return server.RateLimits{}, nil, nil, fmt.Errorf("--%s: %w", q.flag, err)
		}
	}
	closeFn := func() error { return nil }
	if l.redisURL == "" {
		limits.Limiter = ratelimit.NewMemory(0)
	} else {
		r, err := ratelimit.NewRedis(l.redisURL, l.redisPrefix, log)
		if err != nil {
			return server.RateLimits{}, nil, nil, err
		}
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		if err := r.Ping(pctx); err != nil {
			log.Warn("rate limits: Redis does not answer yet; counting in this replica until it does", "redis", store.RedactDSN(l.redisURL), "err", err)
		}
		cancel()
		limits.Limiter, closeFn = r, r.Close
	}
	log.Info("rate limits", "caller", limits.Caller.String(), "workspace_writes", limits.WorkspaceWrites.String(),
		"workspace_invites", limits.WorkspaceInvites.String(), "failed_auth", limits.FailedAuth.String(), "shared", l.redisURL != "")
	return limits, proxies, closeFn, nil
}

func parseCIDRs(list string) ([]*net.IPNet, error) {
	var nets []*net.IPNet
	for _, s := range strings.Split(list, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		_, n, err := net.ParseCIDR(s)
		if err != nil {
			return nil, fmt.Errorf("--trusted-proxies: %q is not a CIDR such as 10.0.0.0/8", s)
		}
		nets = append(nets, n)
	}
	return nets, nil
}
