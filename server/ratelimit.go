package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/membership-api/controlplane/ratelimit"
)

// RateLimits configures request rate limiting (docs/operations/limits.md). A nil
// Limiter turns every limit off; an Off quota turns that one off.
type RateLimits struct {
	// Limiter counts: ratelimit.Memory in one process, ratelimit.Redis
	// shared by replicas.
	Limiter ratelimit.Limiter
	// Caller bounds the requests of one principal (JWT sub or API key),
	// every operation.
	Caller ratelimit.Quota
	// WorkspaceWrites bounds the successful changes in one workspace.
	WorkspaceWrites ratelimit.Quota
	// WorkspaceInvites bounds the invitations in one workspace; each
	// queues an email, so it is also the workspace's email quota.
	WorkspaceInvites ratelimit.Quota
	// FailedAuth bounds the failed authentications (401 to a request that
	// carried a credential) of one client address; past it every request
	// from that address is refused (API key and token guessing).
	FailedAuth ratelimit.Quota
}

// Quota names, as clients see them in RateLimit-Policy.
const (
	QuotaCaller           = "caller"
	QuotaWorkspaceWrites  = "workspace-writes"
	QuotaWorkspaceInvites = "workspace-invites"
	QuotaFailedAuth       = "failed-auth"
)

// quotaWhat says in words what each quota counts, for 429 messages.
var quotaWhat = map[string]string{
	QuotaCaller:           "requests per caller",
	QuotaWorkspaceWrites:  "changes per workspace",
	QuotaWorkspaceInvites: "invitations (each sends an email) per workspace",
	QuotaFailedAuth:       "failed authentications per client address",
}

// rateLimiter applies RateLimits around the validator. Quotas a stranger
// could spend for someone else are counted only once the request is known
// to be theirs: failed authentications by the sending address, changes and
// invitations by the workspace only after they succeeded (so a caller who is
// not a member cannot exhaust a workspace's budget with requests that fail).
// Keys over a quota are then refused from a local gate, without a round trip.
type rateLimiter struct {
	cfg  RateLimits
	gate *ratelimit.Gate
	log  *slog.Logger
}

func newRateLimiter(cfg RateLimits, log *slog.Logger) *rateLimiter {
	if cfg.Limiter == nil {
		return nil
	}
	return &rateLimiter{cfg: cfg, gate: ratelimit.NewGate(0), log: log}
}

// beforeAuth runs before the validator: it refuses addresses over the
// failed-authentication quota and counts the credentials the validator
// refuses (a 401 to a request without any is a client that forgot one, not
// one guessing, and does not count).
func (l *rateLimiter) beforeAuth(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		q := l.cfg.FailedAuth
		if q.Off() {
			return next(c)
		}
		client := addressKey(c.RealIP())
		if err := l.refuseIfClosed(c, q, client); err != nil {
			return err
		}
		err := next(c)
		var apiErr *APIError
		if errors.As(err, &apiErr) && apiErr.Status == http.StatusUnauthorized && apiErr.Challenge == invalidTokenChallenge {
			l.count(c.Request().Context(), q, client)
		} else if st := stateFrom(c.Request().Context()); st != nil && st.clientAuthFailed {
			// The token endpoint refused client credentials (oauth.go):
			// guessing client secrets spends the same quota.
			l.count(c.Request().Context(), q, client)
		}
		return err
	}
}

// addressKey is the key of a client address: the address itself for IPv4,
// its /64 for IPv6 (one subscriber usually holds a whole /64 and could
// rotate through it).
func addressKey(ip string) string {
	addr, err := netip.ParseAddr(ip)
	if err != nil || addr.Is4() || addr.Is4In6() {
		return ip
	}
	prefix, _ := addr.Prefix(64)
	return prefix.String()
}

// afterAuth runs after the validator, when the principal is known: it takes
// the caller's quota up front, and counts successful changes and
// invitations against the workspace afterwards.
func (l *rateLimiter) afterAuth(s *Server) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			ctx := c.Request().Context()
			p := PrincipalFrom(ctx)
			if p == nil {
				return next(c)
			}
			if q := l.cfg.Caller; !q.Off() {
				key := "sub:" + p.Sub
				if p.APIKey != nil {
					key = "key:" + strconv.FormatInt(p.APIKey.ID, 10)
				}
				if err := l.refuseIfClosed(c, q, key); err != nil {
					return err
				}
				res, err := l.cfg.Limiter.Take(ctx, key, q)
				if err != nil {
					l.log.WarnContext(ctx, "rate limit check failed, request allowed", "quota", q.Name, "err", err)
				} else if !res.Allowed {
					l.gate.Close(q, key, res.UntilNext(), time.Now())
					return tooManyRequests(c, q, res.RetryAfter)
				} else {
					setRateLimitHeaders(c.Response().Header(), res)
				}
			}
			// Workspace quotas count the changes made in the workspace a
			// request names (header or API key): the /users operations.
			// Join, decline and leave act on the workspace in their path, for
			// the caller alone, and spend only the caller's quota.
			req := c.Request()
			if req.Method == http.MethodGet || req.Method == http.MethodHead || !strings.HasPrefix(c.Path(), APIBasePath+"/users") {
				return next(c)
			}
			_, workspace, werr := s.workspaceName(ctx, req.Header.Get(WorkspaceHeader))
			if werr != nil {
				return next(c) // the handler answers the missing or foreign workspace
			}
			quotas := []ratelimit.Quota{l.cfg.WorkspaceWrites}
			if req.Method == http.MethodPost && c.Path() == APIBasePath+"/users" {
				quotas = append(quotas, l.cfg.WorkspaceInvites)
			}
			for _, q := range quotas {
				if wait := l.closed(q, workspace); wait > 0 {
					// Only a member learns that the workspace is over its
					// quota; anyone else gets the handler's 404 as always.
					if _, err := s.workspaces.Membership(ctx, workspace, p.Sub); err != nil {
						return next(c)
					}
					return tooManyRequests(c, q, wait)
				}
			}
			err := next(c)
			if err == nil && c.Response().Status < http.StatusBadRequest {
				for _, q := range quotas {
					l.count(context.WithoutCancel(ctx), q, workspace)
				}
			}
			return err
		}
	}
}

// refuseIfClosed answers 429 when key is over q in the local gate.
func (l *rateLimiter) refuseIfClosed(c echo.Context, q ratelimit.Quota, key string) error {
	if wait := l.closed(q, key); wait > 0 {
		return tooManyRequests(c, q, wait)
	}
	return nil
}

// closed is how long key stays over q in the local gate (0: open).
func (l *rateLimiter) closed(q ratelimit.Quota, key string) time.Duration {
	if q.Off() {
		return 0
	}
	return l.gate.Closed(q, key, time.Now())
}

// count records an event that already happened; when it used the last of
// key's budget the gate closes until budget is back.
func (l *rateLimiter) count(ctx context.Context, q ratelimit.Quota, key string) {
	if q.Off() {
		return
	}
	res, err := l.cfg.Limiter.Take(ctx, key, q)
	if err != nil {
		l.log.WarnContext(ctx, "rate limit count failed", "quota", q.Name, "err", err)
		return
	}
	l.gate.Close(q, key, res.UntilNext(), time.Now())
}

// tooManyRequests is the 429 answer: Retry-After, the IETF RateLimit-Policy
// and RateLimit fields of the quota reached, and the Error body.
func tooManyRequests(c echo.Context, q ratelimit.Quota, wait time.Duration) error {
	secs := ceilSeconds(wait)
	h := c.Response().Header()
	h.Set("Retry-After", strconv.Itoa(secs))
	h.Set("RateLimit-Policy", rateLimitPolicy(q))
	h.Set("RateLimit", `"`+q.Name+`";r=0;t=`+strconv.Itoa(secs))
	apiErr := newError(http.StatusTooManyRequests, "", fmt.Sprintf("rate limit reached: at most %d %s %s; retry in %d s",
		q.Rate, quotaWhat[q.Name], per(q.Period), secs))
	apiErr.quota = q.Name
	return apiErr
}

// per says a period in words: "per minute", "per 10m0s".
func per(d time.Duration) string {
	switch d {
	case time.Second:
		return "per second"
	case time.Minute:
		return "per minute"
	case time.Hour:
		return "per hour"
	}
	return "per " + d.String()
}

// setRateLimitHeaders tells a client its standing under the quota it spent
// (draft-ietf-httpapi-ratelimit-headers: RateLimit-Policy and RateLimit).
// Written on every answer, so built without fmt.
func setRateLimitHeaders(h http.Header, res ratelimit.Result) {
	h["Ratelimit-Policy"] = []string{rateLimitPolicy(res.Quota)}
	h["Ratelimit"] = []string{`"` + res.Quota.Name + `";r=` + strconv.Itoa(res.Remaining) + ";t=" + strconv.Itoa(ceilSeconds(res.ResetAfter))}
}

// rateLimitPolicy is the RateLimit-Policy item of q: its name, quota (q)
// and window in seconds (w).
func rateLimitPolicy(q ratelimit.Quota) string {
	return `"` + q.Name + `";q=` + strconv.Itoa(q.Rate) + ";w=" + strconv.Itoa(ceilSeconds(q.Period))
}

// ceilSeconds rounds up to whole seconds, at least 1 (Retry-After: 0 would
// invite an immediate retry that fails again).
func ceilSeconds(d time.Duration) int {
	return max(1, int(math.Ceil(d.Seconds())))
}
