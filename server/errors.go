package server

import (
	"context"
	"errors"
	"log/slog"
	"net/http"

	"github.com/labstack/echo/v4"

	"controlplane/gen"
	"controlplane/store"
)

// APIError is an error with the HTTP status and the message the client sees.
// Everything the server answers with a 4xx or 5xx goes through errorBody, so
// all errors share the spec's Error schema.
type APIError struct {
	Status  int
	Message string
	// Challenge is the WWW-Authenticate value of a 401.
	Challenge string
	// Cause is what failed behind a 5xx: logged, never shown.
	Cause error
	// authReason (metrics.Auth…) marks a refusal by the security
	// requirements; quota the rate limit a 429 reached. Both for metrics.
	authReason, quota string
}

func (e *APIError) Error() string {
	if e.Cause != nil {
		return e.Message + ": " + e.Cause.Error()
	}
	return e.Message
}

func (e *APIError) Unwrap() error { return e.Cause }

func newError(status int, message string) *APIError {
	return &APIError{Status: status, Message: message}
}

// codeForStatus is the one table from HTTP status to the spec's error code.
var codeForStatus = map[int]gen.ErrorCode{
	http.StatusBadRequest:            gen.ErrorCodeInvalidRequest,
	http.StatusUnauthorized:          gen.ErrorCodeUnauthorized,
	http.StatusForbidden:             gen.ErrorCodeForbidden,
	http.StatusNotFound:              gen.ErrorCodeNotFound,
	http.StatusMethodNotAllowed:      gen.ErrorCodeMethodNotAllowed,
	http.StatusConflict:              gen.ErrorCodeConflict,
	http.StatusRequestEntityTooLarge: gen.ErrorCodePayloadTooLarge,
	http.StatusUnsupportedMediaType:  gen.ErrorCodeUnsupportedMediaType,
	http.StatusTooManyRequests:       gen.ErrorCodeTooManyRequests,
	http.StatusInternalServerError:   gen.ErrorCodeInternal,
}

// fromStoreError maps the store's sentinel errors to API errors; anything
// else is internal and its text stays in the log.
func fromStoreError(err error) error {
	var se *store.Error
	if !errors.As(err, &se) {
		return err
	}
	switch {
	case errors.Is(err, store.ErrNotFound):
		return newError(http.StatusNotFound, se.Message)
	case errors.Is(err, store.ErrConflict):
		return newError(http.StatusConflict, se.Message)
	case errors.Is(err, store.ErrInvalid):
		return newError(http.StatusBadRequest, se.Message)
	case errors.Is(err, store.ErrForbidden):
		return newError(http.StatusForbidden, se.Message)
	}
	return err
}

// StatusClientClosedRequest is nginx's status for a request whose client
// went away before the answer; it only ever appears in the access log.
const StatusClientClosedRequest = 499

// errorHandler is Echo's HTTPErrorHandler: it renders every error as the
// spec's Error JSON. Internal errors are logged and reported as "internal error".
func errorHandler(log *slog.Logger) echo.HTTPErrorHandler {
	return func(err error, c echo.Context) {
		if c.Response().Committed {
			return
		}
		apiErr := toAPIError(err)
		if apiErr.Status >= 500 && clientGone(c) && errors.Is(err, context.Canceled) {
			// The client disconnected or half-closed, which cancelled the
			// request's context, and what failed was cut short by that (a
			// database call refuses a cancelled context). The client's
			// doing, not a server error: no 5xx, no ERROR line. A failure
			// of its own (the database down) stays an ERROR, even if the
			// client gave up meanwhile.
			log.DebugContext(c.Request().Context(), "client went away before the answer", "method", c.Request().Method, "path", c.Request().URL.Path, "err", err)
			abandon(c)
			return
		}
		if apiErr.Status >= 500 {
			log.ErrorContext(c.Request().Context(), "request failed", "method", c.Request().Method, "path", c.Request().URL.Path, "err", err)
		}
		writeError(c, apiErr)
	}
}

// clientGone tells whether the request's client went away: net/http cancels
// the request's context when it reads EOF from the connection, and this
// server gives requests no other cancellation or deadline.
func clientGone(c echo.Context) bool {
	return errors.Is(c.Request().Context().Err(), context.Canceled)
}

// abandon ends a request whose client went away as nginx does: the access
// log says 499 and the connection is closed without an answer, since no
// status would be true to the spec (the failure was not the server's) and a
// client that half-closed gets EOF rather than a made-up one. Writes are
// whole or absent either way (store.detach).
func abandon(c echo.Context) {
	res := c.Response()
	res.Status = StatusClientClosedRequest
	conn, _, err := http.NewResponseController(res.Writer).Hijack()
	if err != nil {
		// Not hijackable (HTTP/2): answer, on a stream nobody reads.
		writeError(c, newError(StatusClientClosedRequest, "the client closed the request before the answer"))
		return
	}
	conn.Close()
	res.Committed = true // answered: Echo must not write to the hijacked connection
}

func toAPIError(err error) *APIError {
	err = fromStoreError(err)
	var apiErr *APIError
	if errors.As(err, &apiErr) {
		return apiErr
	}
	var he *echo.HTTPError
	if errors.As(err, &he) {
		msg, _ := he.Message.(string)
		switch he.Code {
		case http.StatusNotFound:
			msg = "no such route: see openapi/controlplane.yml for the API (served under /v0)"
		case http.StatusMethodNotAllowed:
			msg = "method not allowed on this route"
		case http.StatusRequestEntityTooLarge:
			msg = "request body too large"
		}
		if msg == "" {
			msg = http.StatusText(he.Code)
		}
		if _, known := codeForStatus[he.Code]; known {
			return newError(he.Code, msg)
		}
	}
	return newError(http.StatusInternalServerError, "internal error")
}

func writeError(c echo.Context, e *APIError) {
	if e.Status == http.StatusUnauthorized {
		challenge := e.Challenge
		if challenge == "" {
			challenge = `Bearer realm="controlplane"`
		}
		c.Response().Header().Set(echo.HeaderWWWAuthenticate, challenge)
	}
	code, ok := codeForStatus[e.Status]
	if !ok {
		code = gen.ErrorCodeInternal
	}
	if c.Request().Method == http.MethodHead {
		_ = c.NoContent(e.Status)
		return
	}
	body := gen.Error{Code: code, Message: e.Message}
	if st := stateFrom(c.Request().Context()); st != nil && st.id != "" {
		body.RequestId = &st.id
	}
	_ = c.JSON(e.Status, body)
}
