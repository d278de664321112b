package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"
	"github.com/labstack/echo/v4"

	"controlplane/gen"
	"controlplane/store"
)

// APIBasePath is where the spec's operations are served, as upstream
// (https://api.blaxel.ai/v0).
const APIBasePath = "/v0"

// LoadSpec returns the embedded spec prepared for serving: one server at
// APIBasePath (upstream's absolute servers would make the router reject
// localhost), the email format registered, and the document validated.
// emails, at most one, relaxes the email rule (store.CheckEmail); without it
// the production rule applies.
func LoadSpec(ctx context.Context, emails ...store.EmailOptions) (*openapi3.T, error) {
	doc, err := gen.GetSpec()
	if err != nil {
		return nil, fmt.Errorf("load embedded spec: %w", err)
	}
	doc.Servers = openapi3.Servers{{URL: APIBasePath}}
	for _, item := range doc.Paths.Map() {
		item.Servers = nil
		for _, op := range item.Operations() {
			op.Servers = nil
		}
	}
	// kin-openapi checks no formats unless given validators; the options
	// built from doc (GetSchemaValidationOptions) carry this one.
	var rule store.EmailOptions
	if len(emails) > 0 {
		rule = emails[0]
	}
	doc.SetStringFormatValidator("email", openapi3.NewCallbackValidator(func(s string) error {
		return store.CheckEmail(s, rule)
	}))
	if err := doc.Validate(ctx); err != nil {
		return nil, fmt.Errorf("openapi/controlplane.yml is invalid: %w", err)
	}
	return doc, nil
}

// requestValidator enforces the spec on every request under APIBasePath:
// route, security requirements (through authenticate), parameters and body.
type requestValidator struct {
	router    routers.Router
	auth      *authenticator
	bodyLimit int64
	options   *openapi3filter.Options
}

func newRequestValidator(doc *openapi3.T, auth *authenticator, bodyLimit int64) (*requestValidator, error) {
	router, err := gorillamux.NewRouter(doc)
	if err != nil {
		return nil, fmt.Errorf("build router from spec: %w", err)
	}
	v := &requestValidator{router: router, auth: auth, bodyLimit: bodyLimit}
	v.options = &openapi3filter.Options{
		AuthenticationFunc: auth.authenticate,
		// The handler binds the value validated here (the generated strict
		// handler looks for it) instead of decoding the body a second time;
		// member names then match exactly, as the spec spells them.
		KeepValidatedValue: true,
		// The schema as JSON in every error costs time and helps nobody.
		SchemaValidationOptions: append(doc.GetSchemaValidationOptions(), openapi3.DisableSchemaErrorDetails()),
	}
	return v, nil
}

// middleware is the Echo middleware form of the validator.
func (v *requestValidator) middleware(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		req := c.Request()
		route, pathParams, err := v.router.FindRoute(req)
		if err != nil {
			if errors.Is(err, routers.ErrMethodNotAllowed) {
				return echo.ErrMethodNotAllowed
			}
			return echo.ErrNotFound
		}
		if err := v.readBody(req, route.Operation); err != nil {
			return err
		}
		state := &requestState{}
		ctx := context.WithValue(req.Context(), requestStateKey{}, state)
		input := &openapi3filter.RequestValidationInput{
			Request:    req.WithContext(ctx),
			PathParams: pathParams,
			Route:      route,
			Options:    v.options,
		}
		if err := openapi3filter.ValidateRequest(ctx, input); err != nil {
			return validationError(err)
		}
		state.workspace = req.Header.Get(WorkspaceHeader)
		c.SetRequest(input.Request)
		return next(c)
	}
}

// readBody enforces the declared media type and the size limit, and reads
// the body into memory once so validation and the handler share it.
func (v *requestValidator) readBody(req *http.Request, op *openapi3.Operation) error {
	if op.RequestBody == nil || op.RequestBody.Value == nil {
		return nil
	}
	if req.ContentLength > v.bodyLimit {
		return newError(http.StatusRequestEntityTooLarge, fmt.Sprintf("request body larger than %d bytes", v.bodyLimit))
	}
	body, err := io.ReadAll(io.LimitReader(req.Body, v.bodyLimit+1))
	if err != nil {
		return newError(http.StatusBadRequest, "could not read the request body")
	}
	if int64(len(body)) > v.bodyLimit {
		return newError(http.StatusRequestEntityTooLarge, fmt.Sprintf("request body larger than %d bytes", v.bodyLimit))
	}
	req.Body = io.NopCloser(bytes.NewReader(body))
	if len(body) == 0 && req.Header.Get(echo.HeaderContentType) == "" {
		return nil // the validator reports the missing required body
	}
	content := op.RequestBody.Value.Content
	mediaType, _, err := mime.ParseMediaType(req.Header.Get(echo.HeaderContentType))
	if err != nil || content.Get(mediaType) == nil {
		return newError(http.StatusUnsupportedMediaType,
			fmt.Sprintf("Content-Type must be one of %s", strings.Join(contentTypes(content), ", ")))
	}
	// The validator's and handler's decoders stop after the first value, so
	// `{…} garbage` or two objects would pass: require exactly one JSON value.
	if mediaType == echo.MIMEApplicationJSON && len(body) > 0 {
		if !json.Valid(body) {
			return newError(http.StatusBadRequest, "request body is not valid JSON (exactly one JSON value expected)")
		}
		// Decoders disagree on a repeated member name (Go's keeps the last,
		// others the first), so a proxy or log reading the body could see a
		// different request than the handler: refuse it (RFC 8259 §4 says
		// names SHOULD be unique; RFC 7493 I-JSON says MUST).
		if name, ok := duplicateName(body); ok {
			return newError(http.StatusBadRequest, fmt.Sprintf("request body has the member %q twice in one object", name))
		}
	}
	return nil
}

// duplicateName returns a member name that occurs twice in one object of
// body, which must be valid JSON. Bodies with fewer than two colons cannot
// have two members anywhere and skip the walk: that is every invite
// ({"email":…}) and role change, so the hot path pays a byte count only.
func duplicateName(body []byte) (string, bool) {
	if bytes.Count(body, []byte{':'}) < 2 {
		return "", false
	}
	// One entry per open object or array: the object's names so far (nil
	// for an array), and whether the next token is a name.
	type level struct {
		names    map[string]struct{}
		wantName bool
	}
	var stack []level
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber() // as text: 1e400 would fail as a float64 and end the walk early
	for {
		tok, err := dec.Token()
		if err != nil {
			return "", false // io.EOF: json.Valid vouched for the rest
		}
		if n := len(stack); n > 0 && stack[n-1].names != nil {
			top := &stack[n-1]
			if top.wantName {
				if name, ok := tok.(string); ok {
					if _, seen := top.names[name]; seen {
						return name, true
					}
					top.names[name] = struct{}{}
					top.wantName = false
					continue
				}
				// Not a name: the object's closing brace, handled below.
			} else {
				top.wantName = true // this token starts the member's value
			}
		}
		switch tok {
		case json.Delim('{'):
			stack = append(stack, level{names: map[string]struct{}{}, wantName: true})
		case json.Delim('['):
			stack = append(stack, level{})
		case json.Delim('}'), json.Delim(']'):
			stack = stack[:len(stack)-1]
		}
	}
}

func contentTypes(content openapi3.Content) []string {
	types := make([]string, 0, len(content))
	for mt := range content {
		types = append(types, mt)
	}
	return types
}

// validationError turns the validator's error into the client's answer.
func validationError(err error) error {
	var secErr *openapi3filter.SecurityRequirementsError
	if errors.As(err, &secErr) {
		return securityError(secErr)
	}
	var apiErr *APIError
	if errors.As(err, &apiErr) {
		return apiErr
	}
	var reqErr *openapi3filter.RequestError
	if errors.As(err, &reqErr) {
		msg := reqErr.Error()
		if i := strings.IndexByte(msg, '\n'); i >= 0 {
			msg = msg[:i]
		}
		return newError(http.StatusBadRequest, msg)
	}
	return err
}

// securityError picks the most useful of the per-requirement failures: a
// valid credential that lacks a scope is 403; otherwise 401, explaining the
// failure of the requirement the presented credential was meant for.
func securityError(secErr *openapi3filter.SecurityRequirementsError) *APIError {
	var best *authError
	for _, e := range secErr.Errors {
		var ae *authError
		if !errors.As(e, &ae) {
			continue
		}
		switch {
		case best == nil,
			ae.status == http.StatusForbidden && best.status != http.StatusForbidden,
			ae.applies && !best.applies && best.status != http.StatusForbidden:
			best = ae
		}
	}
	if best == nil {
		return &APIError{Status: http.StatusUnauthorized, Message: "authentication failed"}
	}
	apiErr := &APIError{Status: best.status, Message: best.message}
	if best.status == http.StatusUnauthorized && best.presented {
		apiErr.Challenge = `Bearer realm="controlplane", error="invalid_token"`
	}
	return apiErr
}
