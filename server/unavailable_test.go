package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/membership-api/controlplane/store"
)

// TestToAPIError_Unavailable: what store.Unavailable calls an outage is a
// 503 unavailable, also under an authentication 500 naming it as its cause;
// a refusal stays itself and any other failure a 500.
func TestToAPIError_Unavailable(t *testing.T) {
	startingUp := fmt.Errorf("list members: %w", &pgconn.PgError{Severity: "FATAL", Code: "57P03", Message: "the database system is starting up"})
	for name, tc := range map[string]struct {
		err    error
		status int
	}{
		"starting up":                   {startingUp, http.StatusServiceUnavailable},
		"under an API key lookup's 500": {&APIError{Status: 500, Message: "internal error: could not check the API key", Cause: startingUp}, http.StatusServiceUnavailable},
		"a refusal":                     {&APIError{Status: 401, Message: "invalid API key", Cause: startingUp}, http.StatusUnauthorized},
		"a truncated body":              {fmt.Errorf("decode: %w", io.ErrUnexpectedEOF), http.StatusInternalServerError},
		"a constraint":                  {&pgconn.PgError{Code: "23503"}, http.StatusInternalServerError},
	} {
		t.Run(name, func(t *testing.T) {
			got := toAPIError(tc.err)
			if got.Status != tc.status {
				t.Fatalf("status %d, want %d", got.Status, tc.status)
			}
			if tc.status == http.StatusServiceUnavailable {
				if got.Kind != KindUnavailable || strings.Contains(got.Message, "57P03") {
					t.Errorf("kind %q message %q, want unavailable without the cause", got.Kind, got.Message)
				}
			}
		})
	}
}

// syncWriter is a log destination the watch goroutine and the test share.
type syncWriter struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (w *syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Write(p)
}

func (w *syncWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

// TestOutages_SaidOnce: a thousand 503s of one cause log one warning, then
// summaries with their count while the database stays down, then one
// "reachable again" line with the total once a ping succeeds; a new outage
// afterwards is said again.
func TestOutages_SaidOnce(t *testing.T) {
	var logs syncWriter
	var up atomic.Bool
	o := newOutages(slog.New(slog.NewTextHandler(&logs, nil)), nil, func(context.Context) error {
		if up.Load() {
			return nil
		}
		return errors.New("still down")
	})
	defer o.close()
	o.summaryEvery, o.probeEvery = 20*time.Millisecond, 5*time.Millisecond
	u := &store.UnavailableError{Cause: store.CauseRefused, Err: errors.New("dial tcp: connection refused")}
	for range 1000 {
		o.answered(context.Background(), u, true)
	}
	waitForLog(t, &logs, `msg="database still unavailable" cause=refused`)
	if n := strings.Count(logs.String(), `msg="database unavailable`); n != 1 {
		t.Errorf("%d first lines for one cause, want 1:\n%s", n, logs.String())
	}
	if !strings.Contains(logs.String(), "answered_503_total=1000") {
		t.Errorf("no summary with the count of 1000:\n%s", logs.String())
	}
	up.Store(true)
	waitForLog(t, &logs, `msg="database reachable again" cause=refused`)
	if !strings.Contains(logs.String(), "answered_503=1000") {
		t.Errorf("the end line does not give the total:\n%s", logs.String())
	}
	up.Store(false)
	o.answered(context.Background(), u, true)
	if n := strings.Count(logs.String(), `msg="database unavailable`); n != 2 {
		t.Errorf("%d first lines after a second outage, want 2:\n%s", n, logs.String())
	}
}

func waitForLog(t *testing.T, logs *syncWriter, want string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(logs.String(), want); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no line %q in:\n%s", want, logs.String())
		}
	}
}
