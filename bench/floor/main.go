// Command floor is the spec-first floor of `make bench` (bench/run.sh): what
// any server of openapi/controlplane.yml must spend on an invite before it
// touches storage. Echo v4 serves POST /v0/users behind kin-openapi's request
// validator over the YAML (route, header parameters, body schema, the email
// format, and the operation's security requirements through an
// AuthenticationFunc); the bearer credential is looked up in an in-memory
// table (a warm verified-token cache: no signature check) with its expiry
// and scopes checked; the validated body gives the email, and a fixed
// invitation carrying it is encoded. No storage, no logging.
//
// It imports nothing of the server's packages (and reads the YAML from
// disk rather than the generated embedded copy), so a change to the server
// cannot move the floor it is measured against; only a change to the
// contract itself, or to Echo or kin-openapi, can.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"runtime/debug"
	"strings"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"
	"github.com/labstack/echo/v4"
)

// bodyLimit is the server's default --body-limit.
const bodyLimit = 64 << 10

// principal is a verified token's content, as a token cache holds it.
type principal struct {
	sub    string
	scopes map[string]bool
	exp    time.Time
}

// pendingInvitation is the spec's PendingInvitation, written by hand: the
// generated type belongs to the server.
type pendingInvitation struct {
	CreatedAt string `json:"createdAt"`
	CreatedBy string `json:"createdBy"`
	Email     string `json:"email"`
	ExpiresAt string `json:"expiresAt"`
	InvitedBy string `json:"invitedBy"`
	Role      string `json:"role"`
	UpdatedAt string `json:"updatedAt"`
	UpdatedBy string `json:"updatedBy"`
	Workspace string `json:"workspace"`
}

func main() {
	addr := flag.String("addr", "127.0.0.1:8091", "listen address")
	spec := flag.String("spec", "openapi/controlplane.yml", "the contract to validate against")
	token := flag.String("token", "", "the bearer credential to accept (required)")
	scopes := flag.String("scopes", "workspaces:invite", "space-separated scopes of that credential")
	gcPercent := flag.Int("gc-percent", 400, "Go garbage collector target, as serve's --gc-percent (GOGC, when set, wins)")
	flag.Parse()
	// The server collects at 400% by default; tuning that any server can
	// have for free belongs in the floor too.
	if _, set := os.LookupEnv("GOGC"); !set {
		debug.SetGCPercent(*gcPercent)
	}
	if *token == "" {
		log.Fatal("floor: -token is required")
	}
	tokens := map[string]principal{*token: {sub: "bench-admin", scopes: scopeSet(*scopes), exp: time.Now().Add(24 * time.Hour)}}
	e, err := newServer(context.Background(), *spec, tokens)
	if err != nil {
		log.Fatal(err)
	}
	if err := e.Start(*addr); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Fatal(err)
	}
}

func scopeSet(s string) map[string]bool {
	set := map[string]bool{}
	for _, sc := range strings.Split(s, " ") {
		if sc != "" {
			set[sc] = true
		}
	}
	return set
}

// newServer loads the contract from specPath and returns the Echo serving
// the invite operation, accepting the credentials in tokens.
func newServer(ctx context.Context, specPath string, tokens map[string]principal) (*echo.Echo, error) {
	doc, err := openapi3.NewLoader().LoadFromFile(specPath)
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", specPath, err)
	}
	// The spec's absolute servers would make the router refuse localhost.
	doc.Servers = openapi3.Servers{{URL: "/v0"}}
	for _, item := range doc.Paths.Map() {
		item.Servers = nil
		for _, op := range item.Operations() {
			op.Servers = nil
		}
	}
	// kin-openapi checks no format unless given a validator; a server of
	// this contract must check the invitee's email.
	doc.SetStringFormatValidator("email", openapi3.NewRegexpFormatValidator(openapi3.FormatOfStringForEmail))
	if err := doc.Validate(ctx); err != nil {
		return nil, fmt.Errorf("%s is invalid: %w", specPath, err)
	}
	router, err := gorillamux.NewRouter(doc)
	if err != nil {
		return nil, fmt.Errorf("build router: %w", err)
	}
	v := &validator{router: router, tokens: tokens}
	v.options = &openapi3filter.Options{
		AuthenticationFunc:      v.authenticate,
		KeepValidatedValue:      true,
		SchemaValidationOptions: append(doc.GetSchemaValidationOptions(), openapi3.DisableSchemaErrorDetails()),
	}
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.Group("/v0", v.middleware).POST("/users", invite)
	return e, nil
}

type validator struct {
	router  routers.Router
	tokens  map[string]principal
	options *openapi3filter.Options
}

// middleware validates the request against the contract, security included.
func (v *validator) middleware(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		req := c.Request()
		route, params, err := v.router.FindRoute(req)
		if err != nil {
			return fail(c, http.StatusNotFound, "not_found", err.Error())
		}
		// Read once under the limit, so validation and handler share it.
		body, err := io.ReadAll(io.LimitReader(req.Body, bodyLimit+1))
		if err != nil || len(body) > bodyLimit {
			return fail(c, http.StatusRequestEntityTooLarge, "invalid_request", "request body too large or unreadable")
		}
		req.Body = io.NopCloser(bytes.NewReader(body))
		input := &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route, Options: v.options}
		if err := openapi3filter.ValidateRequest(req.Context(), input); err != nil {
			var secErr *openapi3filter.SecurityRequirementsError
			if errors.As(err, &secErr) {
				return fail(c, http.StatusUnauthorized, "unauthorized", "no security requirement was met")
			}
			msg := err.Error()
			if i := strings.IndexByte(msg, '\n'); i >= 0 {
				msg = msg[:i]
			}
			return fail(c, http.StatusBadRequest, "invalid_request", msg)
		}
		c.SetRequest(input.Request)
		return next(c)
	}
}

var (
	errNoToken   = errors.New("no bearer token, or an unknown one")
	errExpired   = errors.New("token expired")
	errScope     = errors.New("the token lacks a required scope")
	errNoAPIKeys = errors.New("the floor accepts no API keys")
	errBadScheme = errors.New("unknown security scheme")
)

const (
	bearerPrefix = "Bearer "
	fixedCreated = "2025-01-01T00:00:00Z"
	fixedExpires = "2025-01-08T00:00:00Z"
)

// authenticate is the validator's AuthenticationFunc: the OAuth2 scheme
// looks the bearer token up (a warm cache of verified tokens) and checks
// its expiry and the requirement's scopes; API keys are not served.
func (v *validator) authenticate(_ context.Context, in *openapi3filter.AuthenticationInput) error {
	switch in.SecuritySchemeName {
	case "OAuth2":
		h := in.RequestValidationInput.Request.Header.Get("Authorization")
		if len(h) <= len(bearerPrefix) || !strings.EqualFold(h[:len(bearerPrefix)], bearerPrefix) {
			return errNoToken
		}
		p, ok := v.tokens[h[len(bearerPrefix):]]
		if !ok {
			return errNoToken
		}
		if !time.Now().Before(p.exp) {
			return errExpired
		}
		for _, s := range in.Scopes {
			if !p.scopes[s] {
				return errScope
			}
		}
		return nil
	case "ApiKeyAuth", "BlaxelApiKeyAuth":
		return errNoAPIKeys
	}
	return errBadScheme
}

// invite answers a fixed invitation for the validated email in the
// workspace the header names (optional in the YAML for API keys, which
// carry their own; a token must name one).
func invite(c echo.Context) error {
	workspace := c.Request().Header.Get("X-Blaxel-Workspace")
	if workspace == "" {
		return fail(c, http.StatusBadRequest, "invalid_request", "X-Blaxel-Workspace is required with a token")
	}
	var email string
	if vb, ok := c.Request().Body.(interface{ ValidatedValue() any }); ok {
		if m, ok := vb.ValidatedValue().(map[string]any); ok {
			email, _ = m["email"].(string)
		}
	} else {
		var body struct {
			Email string `json:"email"`
		}
		if err := json.NewDecoder(c.Request().Body).Decode(&body); err != nil {
			return fail(c, http.StatusBadRequest, "invalid_json", "request body is not JSON")
		}
		email = body.Email
	}
	if email == "" {
		return fail(c, http.StatusBadRequest, "invalid_email", "email is required")
	}
	return c.JSON(http.StatusOK, pendingInvitation{
		CreatedAt: fixedCreated, CreatedBy: "bench-admin", Email: email, ExpiresAt: fixedExpires,
		InvitedBy: "bench-admin", Role: "member", UpdatedAt: fixedCreated, UpdatedBy: "bench-admin",
		Workspace: workspace,
	})
}

// errorBody is the contract's Error.
type errorBody struct {
	Code    int    `json:"code"`
	Error   string `json:"error"`
	Message string `json:"message"`
}

// fail answers status with the contract's Error body.
func fail(c echo.Context, status int, kind, message string) error {
	return c.JSON(status, errorBody{Code: status, Error: kind, Message: message})
}
