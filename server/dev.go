package server

// The dev routes (serve --dev, controlplanetest): a mailbox, the test
// clock and reset, under DevBasePath, described by openapi/dev.yml. They
// exist only on a server that MountDev was called for.

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"
	"github.com/labstack/echo/v4"

	"github.com/membership-api/controlplane/openapi"
)

// DevBasePath is where the dev routes are: outside APIBasePath, so nothing
// of the contract can collide with them, and short to type in a test.
const DevBasePath = "/_dev"

// DevContractPath serves openapi/dev.yml, beside the routes it describes.
const DevContractPath = DevBasePath + "/openapi.yml"

// DevEmail is an email a dev server sent (its mailbox).
type DevEmail struct {
	ID        int64     `json:"id"`
	To        string    `json:"to"`
	Subject   string    `json:"subject"`
	Text      string    `json:"text"`
	HTML      string    `json:"html"`
	AcceptURL string    `json:"acceptUrl"`
	Workspace string    `json:"workspace,omitempty"`
	SentAt    time.Time `json:"sentAt"`
}

// DevControl is what the dev routes drive: a dev server
// (internal/devserver).
type DevControl interface {
	// Emails returns the emails sent so far, oldest first; with to, those to
	// that address alone.
	Emails(ctx context.Context, to string) []DevEmail
	// Email returns one email by ID (false: none).
	Email(ctx context.Context, id int64) (DevEmail, bool)
	// ClearEmails empties the mailbox.
	ClearEmails()
	// Now is the server's clock; ClockOffset how far it is ahead of real time.
	Now() time.Time
	ClockOffset() time.Duration
	// AdvanceClock and SetClock move the clock forward (an error: backwards).
	AdvanceClock(d time.Duration) (time.Time, error)
	SetClock(t time.Time) (time.Time, error)
	// Token signs a person's token with the development issuer, valid for
	// ttl from the clock's time.
	Token(sub, email string, scopes []string, ttl time.Duration) (string, time.Time, error)
	// Reset empties the database, the mailbox and the clock's offset, then
	// loads the fixtures if asked and there are some (loaded says so).
	Reset(ctx context.Context, fixtures bool) (loaded bool, err error)
}

// devClock is openapi/dev.yml's Clock.
type devClock struct {
	Now           time.Time `json:"now"`
	OffsetSeconds int64     `json:"offsetSeconds"`
}

// MountDev adds the dev routes for d to e, each request validated against
// openapi/dev.yml first.
func MountDev(ctx context.Context, e *echo.Echo, d DevControl) error {
	validate, err := devValidator(ctx)
	if err != nil {
		return err
	}
	g := e.Group(DevBasePath, validate)
	clock := func(c echo.Context, now time.Time) error {
		return c.JSON(http.StatusOK, devClock{Now: now.UTC(), OffsetSeconds: int64(d.ClockOffset() / time.Second)})
	}
	g.GET("/mailbox", func(c echo.Context) error { //nolint:contextcheck // an Echo handler: it runs under the request's context (c.Request().Context()), not MountDev's
		return c.JSON(http.StatusOK, map[string][]DevEmail{"emails": d.Emails(c.Request().Context(), c.QueryParam("to"))})
	})
	g.DELETE("/mailbox", func(c echo.Context) error { d.ClearEmails(); return c.NoContent(http.StatusNoContent) })
	g.GET("/mailbox/:id", func(c echo.Context) error { //nolint:contextcheck // an Echo handler: it runs under the request's context (c.Request().Context()), not MountDev's
		id, _ := strconv.ParseInt(c.Param("id"), 10, 64) // the validator checked it is an int64
		m, ok := d.Email(c.Request().Context(), id)
		if !ok {
			return newError(http.StatusNotFound, KindNotFound, fmt.Sprintf("no email %d in the mailbox", id))
		}
		return c.JSON(http.StatusOK, m)
	})
	g.GET("/clock", func(c echo.Context) error { return clock(c, d.Now()) })
	g.PUT("/clock", func(c echo.Context) error {
		var body struct {
			Now time.Time `json:"now"`
		}
		if err := c.Bind(&body); err != nil {
			return newError(http.StatusBadRequest, KindInvalidRequest, "the body must be {\"now\": date-time}")
		}
		now, err := d.SetClock(body.Now)
		if err != nil {
			return newError(http.StatusConflict, KindConflict, err.Error())
		}
		return clock(c, now)
	})
	g.POST("/clock/advance", func(c echo.Context) error {
		var body struct {
			Seconds int64 `json:"seconds"`
		}
		if err := c.Bind(&body); err != nil {
			return newError(http.StatusBadRequest, KindInvalidRequest, "the body must be {\"seconds\": integer}")
		}
		if body.Seconds > int64((100*365*24*time.Hour)/time.Second) {
			return newError(http.StatusBadRequest, KindInvalidRequest, "seconds must be at most 100 years")
		}
		now, err := d.AdvanceClock(time.Duration(body.Seconds) * time.Second)
		if err != nil {
			return newError(http.StatusBadRequest, KindInvalidRequest, err.Error())
		}
		return clock(c, now)
	})
	g.POST("/tokens", func(c echo.Context) error {
		var body struct {
			Sub        string   `json:"sub"`
			Email      string   `json:"email"`
			Scopes     []string `json:"scopes"`
			TTLSeconds int64    `json:"ttlSeconds"`
		}
		if err := c.Bind(&body); err != nil {
			return newError(http.StatusBadRequest, KindInvalidRequest, "the body must be {\"sub\": string, \"email\": string, \"scopes\": [string], \"ttlSeconds\": integer}")
		}
		if len(body.Scopes) == 0 {
			body.Scopes = []string{"admin"}
		}
		ttl := time.Hour
		if body.TTLSeconds > 0 {
			ttl = time.Duration(body.TTLSeconds) * time.Second
		}
		tok, exp, err := d.Token(body.Sub, body.Email, body.Scopes, ttl)
		if err != nil {
			return newError(http.StatusBadRequest, KindInvalidRequest, err.Error())
		}
		return c.JSON(http.StatusOK, map[string]any{"token": tok, "expiresAt": exp.UTC()})
	})
	g.POST("/reset", func(c echo.Context) error { //nolint:contextcheck // an Echo handler: it runs under the request's context (c.Request().Context()), not MountDev's
		fixtures := c.QueryParam("fixtures") != "false"
		loaded, err := d.Reset(c.Request().Context(), fixtures)
		if err != nil {
			return &APIError{Status: http.StatusInternalServerError, Message: "reset failed", Cause: err}
		}
		return c.JSON(http.StatusOK, map[string]bool{"fixtures": loaded})
	})
	g.GET("/openapi.yml", func(c echo.Context) error { return c.Blob(http.StatusOK, "application/yaml", openapi.DevYAML) })
	// Anything else under the prefix: the JSON 404 of the rest of the server.
	g.Any("/*", echo.NotFoundHandler)
	return nil
}

// LoadDevSpec parses and checks openapi/dev.yml.
func LoadDevSpec(ctx context.Context) (*openapi3.T, error) {
	doc, err := openapi3.NewLoader().LoadFromData(openapi.DevYAML)
	if err != nil {
		return nil, fmt.Errorf("parse openapi/dev.yml: %w", err)
	}
	if err := doc.Validate(ctx); err != nil {
		return nil, fmt.Errorf("openapi/dev.yml is invalid: %w", err)
	}
	return doc, nil
}

// devValidator refuses a dev request that openapi/dev.yml does not allow
// (400 invalid_request, 404 for an unknown route, 405 for a wrong method).
func devValidator(ctx context.Context) (echo.MiddlewareFunc, error) {
	doc, err := LoadDevSpec(ctx)
	if err != nil {
		return nil, err
	}
	router, err := gorillamux.NewRouter(doc)
	if err != nil {
		return nil, fmt.Errorf("route openapi/dev.yml: %w", err)
	}
	return func(next echo.HandlerFunc) echo.HandlerFunc { //nolint:contextcheck // middleware: it runs under each request's context, not devValidator's
		return func(c echo.Context) error {
			req := c.Request()
			if req.URL.Path == DevContractPath && (req.Method == http.MethodGet || req.Method == http.MethodHead) {
				return next(c)
			}
			route, params, err := router.FindRoute(req)
			switch {
			case errors.Is(err, routers.ErrMethodNotAllowed):
				return newError(http.StatusMethodNotAllowed, KindMethodNotAllowed, "method not allowed")
			case err != nil:
				return newError(http.StatusNotFound, KindRouteNotFound, "no such dev route: see "+DevContractPath)
			}
			err = openapi3filter.ValidateRequest(req.Context(), &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route,
				Options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc}})
			if err != nil {
				return newError(http.StatusBadRequest, KindInvalidRequest, firstLine(err.Error()))
			}
			return next(c)
		}
	}, nil
}

// firstLine is an error's first line: kin-openapi's go on with the schema.
func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}
