package server

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/membership-api/controlplane/auth"
	"github.com/membership-api/controlplane/gen"
	"github.com/membership-api/controlplane/metrics"
	"github.com/membership-api/controlplane/store"
	"github.com/membership-api/controlplane/store/storetest"
)

// lockedBuffer is a log destination the handler and the test share.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestRequestID_OnEveryLogLine: a line the handlers log with the request's
// context (here the error log of a 500: the database is gone) carries the
// request's ID, as the access line and the error body do.
func TestRequestID_OnEveryLogLine(t *testing.T) {
	st := storetest.Open(t, "sqlite", store.Options{})
	if _, err := st.CreateWorkspace(context.Background(), store.NewWorkspace{Name: "acme", AdminSub: "admin", AdminEmail: "admin@acme.test"}); err != nil {
		t.Fatal(err)
	}
	dev, err := auth.LoadDevIssuer(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	tok, err := dev.Sign(auth.TokenRequest{Sub: "admin", Scopes: []string{"workspaces:invite"}, TTL: time.Hour}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	var logs lockedBuffer
	log := slog.New(slog.NewJSONHandler(&logs, nil))
	e, closeFn, err := New(context.Background(), Config{Auth: auth.VerifierConfig{DevIssuer: dev}}, st, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(closeFn)
	st.Close() // every write now fails: a 500

	req := httptest.NewRequestWithContext(context.Background(), "POST", "/v0/users", strings.NewReader(`{"email":"bob@example.com"}`))
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set(WorkspaceHeader, "acme")
	req.Header.Set(echo.HeaderContentType, echo.MIMEApplicationJSON)
	req.Header.Set(HeaderRequestID, "rid-500")
	rec := httptest.NewRecorder()
	e.ServeHTTP(rec, req)
	var body gen.Error
	if rec.Code != http.StatusInternalServerError || json.Unmarshal(rec.Body.Bytes(), &body) != nil ||
		body.RequestId == nil || *body.RequestId != "rid-500" || rec.Header().Get(HeaderRequestID) != "rid-500" {
		t.Fatalf("got %d %s (X-Request-Id %q), want a 500 Error with request_id rid-500", rec.Code, rec.Body, rec.Header().Get(HeaderRequestID))
	}
	var msgs []string
	for line := range strings.SplitSeq(strings.TrimSpace(logs.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("not JSON: %q", line)
		}
		if m["request_id"] != "rid-500" {
			t.Errorf("log line without the request's ID: %s", line)
		}
		msgs = append(msgs, m["msg"].(string))
	}
	if strings.Join(msgs, ",") != "request failed,request" {
		t.Errorf("log lines %q, want the error and the access line", msgs)
	}
	if strings.Contains(logs.String(), tok) {
		t.Error("the token reached the log")
	}
}

// TestObserve_Allocations bounds what the request ID, access log and
// metrics add to a request: the middleware's closure (Echo wraps its
// middlewares per request, as it did the access logger this replaces), the
// request state, its context and the request's copy (which the validator
// made before and now reuses), plus a generated ID; nothing per label,
// nothing for a client's own ID.
func TestObserve_Allocations(t *testing.T) {
	doc, err := LoadSpec(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	m := metrics.New(metrics.Build{}, nil)
	o := newObserver(doc, slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelWarn})), m)
	handler := func(c echo.Context) error { return c.NoContent(http.StatusNoContent) }
	bareEcho, observedEcho := echo.New(), echo.New()
	bareEcho.POST(APIBasePath+"/users", handler)
	observedEcho.Use(o.middleware)
	observedEcho.POST(APIBasePath+"/users", handler)
	allocs := func(e *echo.Echo, id string) float64 {
		req := httptest.NewRequestWithContext(context.Background(), "POST", APIBasePath+"/users", nil)
		rec := httptest.NewRecorder()
		serve := func() {
			delete(req.Header, HeaderRequestID)
			if id != "" {
				req.Header[HeaderRequestID] = []string{id}
			}
			clear(rec.Header())
			e.ServeHTTP(rec, req)
		}
		serve() // the series' first use makes its child
		return testing.AllocsPerRun(200, serve)
	}
	for _, tc := range []struct {
		id   string
		want float64
	}{{"", 5}, {"client-id", 4}} {
		bare, observed := allocs(bareEcho, tc.id), allocs(observedEcho, tc.id)
		if observed-bare > tc.want {
			t.Errorf("X-Request-Id %q: %v allocations more per request, want at most %v", tc.id, observed-bare, tc.want)
		}
		t.Logf("X-Request-Id %q: %v allocations per request, %v without the middleware", tc.id, observed, bare)
	}
}
