package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/labstack/echo/v4"
)

// TestErrorHandler_ClientGone: a failure caused by the client leaving is a
// 499 without an ERROR line; a failure of the server's own stays a logged
// 500 even when the client has left meanwhile (clients give up exactly when
// the database is slow or down, and those errors must not vanish).
func TestErrorHandler_ClientGone(t *testing.T) {
	for name, tc := range map[string]struct {
		err        error
		wantStatus int
		wantError  bool
	}{
		"cut short by the client": {fmt.Errorf("list invitations: %w", context.Canceled), StatusClientClosedRequest, false},
		"API key lookup cut short": {&APIError{Status: 500, Message: "internal error: could not check the API key",
			Cause: fmt.Errorf("lookup: %w", context.Canceled)}, StatusClientClosedRequest, false},
		"database down": {errors.New("dial tcp 127.0.0.1:5432: connection refused"), http.StatusInternalServerError, true},
	} {
		t.Run(name, func(t *testing.T) {
			var logs bytes.Buffer
			log := slog.New(slog.NewTextHandler(&logs, nil))
			handle := errorHandler(log, newOutages(log, nil, func(context.Context) error { return nil }))
			ctx, cancel := context.WithCancel(context.Background())
			cancel() // the client went away
			rec := httptest.NewRecorder()
			c := echo.New().NewContext(httptest.NewRequestWithContext(ctx, "GET", "/v0/users", nil), rec)
			handle(tc.err, c)
			if got := c.Response().Status; got != tc.wantStatus {
				t.Errorf("status %d, want %d", got, tc.wantStatus)
			}
			if got := strings.Contains(logs.String(), "level=ERROR"); got != tc.wantError {
				t.Errorf("ERROR logged: %v, want %v:\n%s", got, tc.wantError, logs.String())
			}
		})
	}
}
