package server_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/membership-api/controlplane/auth"
	"github.com/membership-api/controlplane/ratelimit"
	"github.com/membership-api/controlplane/server"
	"github.com/membership-api/controlplane/store"
	"github.com/membership-api/controlplane/store/storetest"
)

// benchServer is the full handler stack (validator, auth, handler, store) on
// a fresh database, served in-process without a network.
func benchServer(b *testing.B, dialect string) (http.Handler, string) {
	return benchServerWith(b, dialect, server.RateLimits{})
}

// benchServerWith is benchServer with rate limits.
func benchServerWith(b *testing.B, dialect string, limits server.RateLimits) (http.Handler, string) {
	b.Helper()
	st := storetest.Open(b, dialect, store.Options{})
	if _, err := st.CreateWorkspace(context.Background(), store.NewWorkspace{Name: "bench", AdminSub: "bench-admin", AdminEmail: "admin@bench.test"}); err != nil {
		b.Fatal(err)
	}
	dev, err := auth.LoadDevIssuer(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	tok, err := dev.Sign(auth.TokenRequest{Sub: "bench-admin", Scopes: []string{"workspaces:invite"}, TTL: time.Hour}, time.Now())
	if err != nil {
		b.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	e, closeFn, err := server.New(context.Background(), server.Config{Auth: auth.VerifierConfig{DevIssuer: dev}, RateLimits: limits}, st, log)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(closeFn)
	return e, tok
}

var benchSeq atomic.Int64

// serveInvite sends one invite request to h as the bench admin.
func serveInvite(h http.Handler, tok, body string) *httptest.ResponseRecorder {
	req := httptest.NewRequestWithContext(context.Background(), "POST", "/v0/users", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("X-Blaxel-Workspace", "bench")
	req.Header.Set("Content-Type", "application/json")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// BenchmarkInvite measures one full invite (credential check, validation,
// invitation and outbox rows committed) per iteration, each for a new email.
func BenchmarkInvite(b *testing.B) {
	for _, dialect := range storetest.Dialects {
		b.Run(dialect, func(b *testing.B) {
			h, tok := benchServer(b, dialect)
			b.ReportAllocs()
			// Many clients at once, as under real load: lets group commit
			// (SQLite) and PostgreSQL's own commit grouping work.
			b.SetParallelism(16)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					rec := serveInvite(h, tok, fmt.Sprintf(`{"email":"u%d@bench.test"}`, benchSeq.Add(1)))
					if rec.Code != 200 {
						b.Fatalf("got %d %s", rec.Code, rec.Body)
					}
				}
			})
		})
	}
}

// BenchmarkRejectedInvite measures the path up to the validator's answer
// (credential check and body validation, no database write).
func BenchmarkRejectedInvite(b *testing.B) {
	h, tok := benchServer(b, "sqlite")
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			rec := serveInvite(h, tok, `{"email":"not-an-email"}`)
			if rec.Code != 400 {
				b.Fatalf("got %d %s", rec.Code, rec.Body)
			}
		}
	})
}

// BenchmarkRateLimitChecks measures what the rate limits add to a request
// that passes them (compare with /off): a write answered by the handler
// without touching the database (an invite without an email), so the
// caller's quota is taken and the workspace quotas' gates are checked.
func BenchmarkRateLimitChecks(b *testing.B) {
	huge := func(name string) ratelimit.Quota {
		return ratelimit.Quota{Name: name, Rate: 1 << 30, Period: time.Second}
	}
	limits := server.RateLimits{Caller: huge(server.QuotaCaller), WorkspaceWrites: huge(server.QuotaWorkspaceWrites),
		WorkspaceInvites: huge(server.QuotaWorkspaceInvites), FailedAuth: huge(server.QuotaFailedAuth)}
	for _, backend := range []string{"off", "memory", "redis"} {
		b.Run(backend, func(b *testing.B) {
			switch backend {
			case "memory":
				limits.Limiter = ratelimit.NewMemory(0)
			case "redis":
				r, err := ratelimit.NewRedis("redis://127.0.0.1:6379/0", "cpbench:", slog.New(slog.NewTextHandler(io.Discard, nil)))
				if err != nil {
					b.Fatal(err)
				}
				if err := r.Ping(context.Background()); err != nil {
					b.Skipf("no Redis at 127.0.0.1:6379: %v", err)
				}
				defer r.Close()
				limits.Limiter = r
			}
			h, tok := benchServerWith(b, "sqlite", limits)
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if rec := serveInvite(h, tok, `{}`); rec.Code != 400 {
						b.Fatalf("got %d %s", rec.Code, rec.Body)
					}
				}
			})
		})
	}
}

// BenchmarkAPIKeyHeader measures the path up to the validator's answer for
// an API key in each header it may come in (Authorization: ApiKeyAuth;
// X-Blaxel-Authorization, as Blaxel's SDKs send it: BlaxelApiKeyAuth).
func BenchmarkAPIKeyHeader(b *testing.B) {
	for _, header := range []string{"Authorization", "X-Blaxel-Authorization"} {
		b.Run(header, func(b *testing.B) {
			st := storetest.Open(b, "sqlite", store.Options{})
			ctx := context.Background()
			if _, err := st.CreateWorkspace(ctx, store.NewWorkspace{Name: "bench", AdminSub: "bench-admin", AdminEmail: "admin@bench.test"}); err != nil {
				b.Fatal(err)
			}
			key, _, err := st.CreateAPIKey(ctx, "bench", "bench-admin")
			if err != nil {
				b.Fatal(err)
			}
			dev, err := auth.LoadDevIssuer(b.TempDir())
			if err != nil {
				b.Fatal(err)
			}
			h, closeFn, err := server.New(ctx, server.Config{Auth: auth.VerifierConfig{DevIssuer: dev}}, st, slog.New(slog.NewTextHandler(io.Discard, nil)))
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(closeFn)
			b.ReportAllocs()
			for b.Loop() {
				req := httptest.NewRequestWithContext(ctx, "POST", "/v0/users", strings.NewReader(`{"email":"not-an-email"}`))
				req.Header.Set(header, "Bearer "+key)
				req.Header.Set("Content-Type", "application/json")
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, req)
				if rec.Code != 400 {
					b.Fatalf("got %d %s", rec.Code, rec.Body)
				}
			}
		})
	}
}
