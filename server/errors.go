package server

import (
	"context"
	"errors"
	"log/slog"
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/membership-api/controlplane/gen"
	"github.com/membership-api/controlplane/store"
)

// APIError is an error with the HTTP status, the kind and the message the
// client sees. Everything the server answers with a 4xx or 5xx goes through
// writeError, so all errors are the spec's Error: {code, error, message,
// request_id}.
type APIError struct {
	Status int
	// Kind is the body's machine-readable `error` (the Kind… constants);
	// empty: the status's default kind (defaultKind).
	Kind    string
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

func newError(status int, kind, message string) *APIError {
	return &APIError{Status: status, Kind: kind, Message: message}
}

// The `error` kinds of error bodies: stable words a client can switch on
// (the message is for people and may change). docs/api/errors.md lists them; add
// one there when adding one here (e2e checks every answer against that table).
const (
	KindInvalidRequest       = "invalid_request"           // 400: the request does not match the spec
	KindInvalidJSON          = "invalid_json"              // 400: the body is not one JSON value, or repeats a member name
	KindInvalidEmail         = store.CodeInvalidEmail      // 400: the email is not one the server accepts
	KindInvalidRole          = store.CodeInvalidRole       // 400: role is not admin or member
	KindInvalidCursor        = "invalid_cursor"            // 400: a list cursor that is not this list's
	KindWorkspaceRequired    = "workspace_required"        // 400: no X-Blaxel-Workspace with a token
	KindAmbiguousCredentials = "ambiguous_credentials"     // 400: two credentials in one request
	KindUnauthorized         = "unauthorized"              // 401: credentials refused (malformed, wrong scheme for the operation)
	KindMissingCredentials   = "missing_credentials"       // 401: no credential sent
	KindInvalidToken         = "invalid_token"             // 401: a JWT refused (signature, issuer, claims)
	KindExpiredToken         = "expired_token"             // 401: a JWT past its exp: get a new one
	KindInvalidAPIKey        = "invalid_api_key"           // 401: an API key unknown or revoked
	KindForbidden            = "forbidden"                 // 403: the caller may not do this (e.g. not an admin)
	KindInsufficientScope    = "insufficient_scope"        // 403: the token lacks the operation's scope
	KindPersonRequired       = "person_required"           // 403: an API key where only a person's token will do
	KindEmailRequired        = "email_required"            // 403: the token has no email claim
	KindEmailNotVerified     = "email_not_verified"        // 403: email_verified is not true (--jwt-require-email-verified)
	KindNotFound             = "not_found"                 // 404: the resource does not exist or is not visible
	KindWorkspaceNotFound    = store.CodeWorkspaceNotFound // 404: no such workspace, or the caller is not in it
	// The store's own kinds (store.Code…): user_not_found,
	// invitation_not_found, not_admin, already_member, last_admin,
	// email_taken, service_account_not_found, service_account_name_taken,
	// api_key_not_found, invalid_expires_in, and the webhooks'
	// webhook_not_found, invalid_webhook_url, webhook_disabled,
	// too_many_webhooks, too_many_test_events; they reach the body
	// through storeKind.
	KindRouteNotFound        = "route_not_found"        // 404: no such operation
	KindMethodNotAllowed     = "method_not_allowed"     // 405
	KindConflict             = "conflict"               // 409: conflicts with the current state
	KindPayloadTooLarge      = "payload_too_large"      // 413
	KindUnsupportedMediaType = "unsupported_media_type" // 415
	KindTooManyRequests      = "too_many_requests"      // 429: a rate limit was reached
	KindInternal             = "internal_error"         // 500: logged with the request ID
	KindClientClosedRequest  = "client_closed_request"  // 499: only in the access log
	KindUnavailable          = "unavailable"            // 503: the database cannot be reached; retry after Retry-After
	// bulk invites, Idempotency-Key, email-domain policy.
	KindDomainNotAllowed     = store.CodeDomainNotAllowed // 403: the workspace's email-domain policy refuses the email
	KindDuplicateEmail       = "duplicate_email"          // 400: a bulk row repeats an earlier row's email
	KindIdempotencyKeyInUse  = "idempotency_key_in_use"   // 409: the key's first request is still running
	KindIdempotencyKeyReused = "idempotency_key_reused"   // 422: the key was used with another body
)

// defaultKind is the kind of an error that names none, by status: the one
// table from status to kind (every status the spec declares has a row).
var defaultKind = map[int]string{
	http.StatusBadRequest:            KindInvalidRequest,
	http.StatusUnauthorized:          KindUnauthorized,
	http.StatusForbidden:             KindForbidden,
	http.StatusNotFound:              KindNotFound,
	http.StatusMethodNotAllowed:      KindMethodNotAllowed,
	http.StatusConflict:              KindConflict,
	http.StatusRequestEntityTooLarge: KindPayloadTooLarge,
	http.StatusUnsupportedMediaType:  KindUnsupportedMediaType,
	http.StatusUnprocessableEntity:   KindIdempotencyKeyReused,
	http.StatusTooManyRequests:       KindTooManyRequests,
	http.StatusInternalServerError:   KindInternal,
	http.StatusServiceUnavailable:    KindUnavailable,
	StatusClientClosedRequest:        KindClientClosedRequest,
}

// storeErrors is the one table from the store's sentinel errors to statuses
// (the kind is the store error's own when it names one, else the status's).
var storeErrors = []struct {
	sentinel error
	status   int
}{
	{store.ErrNotFound, http.StatusNotFound},
	{store.ErrConflict, http.StatusConflict},
	{store.ErrInvalid, http.StatusBadRequest},
	{store.ErrForbidden, http.StatusForbidden},
}

// fromStoreError maps the store's errors to API errors; anything else is
// internal and its text stays in the log.
func fromStoreError(err error) error {
	var se *store.Error
	if !errors.As(err, &se) {
		return err
	}
	for _, row := range storeErrors {
		if errors.Is(err, row.sentinel) {
			return newError(row.status, storeKind(se), se.Message)
		}
	}
	return err
}

// StatusClientClosedRequest is nginx's status for a request whose client
// went away before the answer; it only ever appears in the access log.
const StatusClientClosedRequest = 499

// errorHandler is Echo's HTTPErrorHandler: it renders every error as the
// spec's Error JSON. Internal errors are logged and reported as "internal
// error"; a database outage is a 503, logged once per outage (outages).
func errorHandler(log *slog.Logger, outages *outages) echo.HTTPErrorHandler {
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
		var u *store.UnavailableError
		if apiErr.Status == http.StatusServiceUnavailable && errors.As(apiErr.Cause, &u) {
			outages.answered(c.Request().Context(), u, true)
		} else if apiErr.Status >= 500 {
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
		writeError(c, newError(StatusClientClosedRequest, "", "the client closed the request before the answer"))
		return
	}
	conn.Close()         //nolint:errcheck // the client is gone: closing its connection can fail only because of that
	res.Committed = true // answered: Echo must not write to the hijacked connection
}

// toAPIError is the one place errors become answers: the store's refusals
// their 4xx, a database that cannot be reached 503 (store.Unavailable
// decides what that is, also under a 500 that names it as its Cause),
// anything else 500.
func toAPIError(err error) *APIError {
	err = fromStoreError(err)
	var apiErr *APIError
	if errors.As(err, &apiErr) && apiErr.Status < http.StatusInternalServerError {
		return apiErr
	}
	if u := store.Unavailable(err); u != nil {
		return unavailableError(u)
	}
	if apiErr != nil {
		return apiErr
	}
	var he *echo.HTTPError
	if errors.As(err, &he) {
		msg, _ := he.Message.(string)
		kind := ""
		switch he.Code {
		case http.StatusNotFound:
			msg, kind = "no such route: the API is served under /v0 (its contract at /v0/openapi.yml, a browsable page at /docs)", KindRouteNotFound
		case http.StatusMethodNotAllowed:
			msg = "method not allowed on this route: the Allow header lists those that are"
		case http.StatusRequestEntityTooLarge:
			msg = "request body too large"
		}
		if msg == "" {
			msg = http.StatusText(he.Code)
		}
		if _, known := defaultKind[he.Code]; known {
			return newError(he.Code, kind, msg)
		}
	}
	return newError(http.StatusInternalServerError, "", "internal error: the server logged the cause with this request's ID")
}

func writeError(c echo.Context, e *APIError) {
	if e.Status == http.StatusUnauthorized {
		challenge := e.Challenge
		if challenge == "" {
			challenge = `Bearer realm="controlplane"`
		}
		c.Response().Header().Set(echo.HeaderWWWAuthenticate, challenge)
	}
	if e.Status == http.StatusServiceUnavailable {
		c.Response().Header()["Retry-After"] = unavailableRetryAfter
	}
	// HEAD answers get the same headers as GET's (Content-Type included);
	// net/http drops the body.
	_ = c.JSON(e.Status, errorBody(c.Request().Context(), e))
}

// errorBody is the Error JSON of e, with the request's ID when ctx has one.
func errorBody(ctx context.Context, e *APIError) gen.Error {
	kind := e.Kind
	if kind == "" {
		kind = defaultKind[e.Status]
	}
	if kind == "" {
		kind = KindInternal
	}
	status, message := e.Status, e.Message
	body := gen.Error{Code: &status, Error: kind, Message: &message}
	if st := stateFrom(ctx); st != nil && st.id != "" {
		body.RequestId = &st.id
	}
	return body
}

// storeKind is the kind a store error names, or "" for the status's default.
func storeKind(se *store.Error) string { return se.Code }
