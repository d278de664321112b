package server

import (
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
}

func (e *APIError) Error() string { return e.Message }

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

// errorHandler is Echo's HTTPErrorHandler: it renders every error as the
// spec's Error JSON. Internal errors are logged and reported as "internal error".
func errorHandler(log *slog.Logger) echo.HTTPErrorHandler {
	return func(err error, c echo.Context) {
		if c.Response().Committed {
			return
		}
		apiErr := toAPIError(err)
		if apiErr.Status >= 500 {
			log.Error("request failed", "method", c.Request().Method, "path", c.Request().URL.Path, "err", err)
		}
		writeError(c, apiErr)
	}
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
	_ = c.JSON(e.Status, gen.Error{Code: code, Message: e.Message})
}
