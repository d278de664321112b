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
	"unicode/utf8"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"
	"github.com/labstack/echo/v4"

	"github.com/membership-api/controlplane/gen"
	"github.com/membership-api/controlplane/metrics"
	"github.com/membership-api/controlplane/store"
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
		route, pathParams, err := v.findRoute(req)
		if err != nil {
			if errors.Is(err, routers.ErrMethodNotAllowed) {
				return v.methodNotAllowed(c)
			}
			return echo.ErrNotFound
		}
		if err := checkRequestText(req, route); err != nil {
			return tokenEndpointError(c, route.Operation, err)
		}
		jsonBody, err := v.readBody(req, route.Operation)
		if err != nil {
			return tokenEndpointError(c, route.Operation, err)
		}
		// The state comes with the request (observe.go); the validator
		// alone (its tests) makes its own.
		ctx := req.Context()
		state := stateFrom(ctx)
		if state == nil {
			state = &requestState{}
			ctx = context.WithValue(ctx, requestStateKey{}, state)
			req = req.WithContext(ctx)
		}
		input := &openapi3filter.RequestValidationInput{
			Request:    req,
			PathParams: pathParams,
			Route:      route,
			Options:    v.options,
		}
		if err := openapi3filter.ValidateRequest(ctx, input); err != nil {
			return tokenEndpointError(c, route.Operation, validationError(err))
		}
		// Decoders disagree on a repeated member name (Go's keeps the last,
		// others the first), so a proxy or log reading the body could see a
		// different request than the handler: refuse it (RFC 8259 §4 says
		// names SHOULD be unique; RFC 7493 I-JSON says MUST). Checked once
		// the caller is authenticated: scanning a 64 KiB body costs about
		// 3.5 times json.Valid, which nobody without credentials should get
		// to spend.
		if name, dup := duplicateName(jsonBody); dup {
			return tokenEndpointError(c, route.Operation,
				newError(http.StatusBadRequest, KindInvalidJSON, fmt.Sprintf("request body has the member %q twice in one object", name)))
		}
		c.SetRequest(input.Request)
		return next(c)
	}
}

// readBody enforces the declared media type and the size limit, and reads
// the body into memory once so validation and the handler share it. It
// returns the body when it is JSON (then valid JSON), else nil.
func (v *requestValidator) readBody(req *http.Request, op *openapi3.Operation) ([]byte, error) {
	if op.RequestBody == nil || op.RequestBody.Value == nil {
		return nil, nil
	}
	if req.ContentLength > v.bodyLimit {
		return nil, newError(http.StatusRequestEntityTooLarge, "", fmt.Sprintf("request body larger than %d bytes", v.bodyLimit))
	}
	body, err := readAtMost(req.Body, req.ContentLength, v.bodyLimit+1)
	if err != nil {
		return nil, newError(http.StatusBadRequest, "", "could not read the request body")
	}
	if int64(len(body)) > v.bodyLimit {
		return nil, newError(http.StatusRequestEntityTooLarge, "", fmt.Sprintf("request body larger than %d bytes", v.bodyLimit))
	}
	req.Body = io.NopCloser(bytes.NewReader(body))
	if len(body) == 0 && req.Header.Get(echo.HeaderContentType) == "" {
		return nil, nil // the validator reports the missing required body
	}
	content := op.RequestBody.Value.Content
	mediaType, _, err := mime.ParseMediaType(req.Header.Get(echo.HeaderContentType))
	if err != nil || content.Get(mediaType) == nil {
		return nil, newError(http.StatusUnsupportedMediaType, "",
			fmt.Sprintf("Content-Type must be one of %s", strings.Join(contentTypes(content), ", ")))
	}
	if mediaType != echo.MIMEApplicationJSON || len(body) == 0 {
		return nil, nil
	}
	// The validator's and handler's decoders stop after the first value, so
	// `{…} garbage` or two objects would pass: require exactly one JSON value.
	if !json.Valid(body) {
		return nil, newError(http.StatusBadRequest, KindInvalidJSON, "request body is not valid JSON (exactly one JSON value expected)")
	}
	return body, nil
}

// readAtMost reads r to its end, but not past limit bytes. A declared
// length (Content-Length, already checked against the limit) sizes the
// buffer once, where io.ReadAll would grow it from 512 bytes. A body
// shorter than declared is an error, as net/http reports a truncated one;
// a longer one (not possible through net/http) is read on to the limit.
func readAtMost(r io.Reader, declared, limit int64) ([]byte, error) {
	r = io.LimitReader(r, limit)
	if declared <= 0 || declared >= limit {
		return io.ReadAll(r)
	}
	buf := make([]byte, declared+1) // +1: room to see a longer body
	if _, err := io.ReadFull(r, buf[:declared]); err != nil {
		return nil, err
	}
	if n, _ := io.ReadFull(r, buf[declared:]); n == 0 {
		return buf[:declared], nil
	}
	rest, err := io.ReadAll(r)
	return append(buf, rest...), err
}

// duplicateName returns a member name that occurs twice in one object of
// body, which must be valid JSON (json.Valid). Names are compared without
// case: Go's encoding/json (and other lenient decoders) match members to
// fields case-insensitively, so {"email":a,"EMAIL":b} reads as b there and
// as a here. Bodies with fewer than two
// colons cannot have two members anywhere and skip the scan: that is every
// invite ({"email":…}) and role change, so the hot path pays a byte count.
// Otherwise one pass over a string copy of the body, whose names are
// substrings (no copy each), into one set sized up front.
func duplicateName(body []byte) (string, bool) {
	colons := bytes.Count(body, []byte{':'})
	if colons < 2 {
		return "", false
	}
	text := string(body)
	type member struct {
		object int // which object, numbered in order of opening
		name   string
	}
	seen := make(map[member]struct{}, colons) // a name has a colon, not every colon a name
	var open []int                            // the number of each open object, 0 for an array
	objects := 0
	wantName := false // the next string is a member name
	for i := 0; i < len(text); i++ {
		switch text[i] {
		case '{':
			objects++
			open = append(open, objects)
			wantName = true
		case '[':
			open = append(open, 0)
		case '}', ']':
			open = open[:len(open)-1]
		case ',':
			wantName = open[len(open)-1] != 0
		case '"':
			end := i + 1
			for text[end] != '"' {
				if text[end] == '\\' {
					end++ // an escaped character, maybe a quote
				}
				end++
			}
			if wantName {
				wantName = false
				m := member{open[len(open)-1], strings.ToLower(memberName(text[i : end+1]))}
				if _, dup := seen[m]; dup {
					return m.name, true
				}
				seen[m] = struct{}{}
			}
			i = end
		}
	}
	return "", false
}

// memberName is the name a decoder sees in a quoted JSON string: the text
// between the quotes, or, when escapes or invalid UTF-8 make it differ, the
// decoded text ("\u0065mail" is "email").
func memberName(quoted string) string {
	raw := quoted[1 : len(quoted)-1]
	if !strings.Contains(raw, `\`) && utf8.ValidString(raw) {
		return raw
	}
	var name string
	_ = json.Unmarshal([]byte(quoted), &name) // valid: json.Valid vouched for the body
	return name
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
		kind := KindInvalidRequest
		var schemaErr *openapi3.SchemaError
		if errors.As(err, &schemaErr) {
			if ptr := schemaErr.JSONPointer(); len(ptr) > 0 {
				switch ptr[0] {
				case "email":
					kind = KindInvalidEmail
				case "role":
					kind = KindInvalidRole
				}
			}
		}
		return newError(http.StatusBadRequest, kind, msg)
	}
	return err
}

// tokenEndpointError answers the token endpoint's malformed requests as
// RFC 6749 §5.2 says (400 invalid_request, with error_description), since
// OAuth clients read that shape; other operations' errors, and the token
// endpoint's other statuses (413, 415), pass unchanged.
func tokenEndpointError(c echo.Context, op *openapi3.Operation, err error) error {
	var apiErr *APIError
	if op.OperationID != oauthTokenOperation || !errors.As(err, &apiErr) || apiErr.Status != http.StatusBadRequest {
		return err
	}
	resp := invalidRequest("%s", apiErr.Message).response(c.Request().Context())
	return resp.VisitOauthTokenResponse(c.Response())
}

// authKinds are the error kinds of the security refusals, by their metrics
// reason (what is not here gets its status's kind).
var authKinds = map[string]string{
	metrics.AuthMissing:           KindMissingCredentials,
	metrics.AuthTwoCredentials:    KindAmbiguousCredentials,
	metrics.AuthUnknownAPIKey:     KindInvalidAPIKey,
	metrics.AuthInvalidToken:      KindInvalidToken,
	metrics.AuthExpiredToken:      KindExpiredToken,
	metrics.AuthInsufficientScope: KindInsufficientScope,
}

// invalidTokenChallenge is the WWW-Authenticate of a 401 to a credential
// that was presented and refused (RFC 6750 §3.1 error="invalid_token"), as
// opposed to no credential at all.
const invalidTokenChallenge = `Bearer realm="controlplane", error="invalid_token"` //nolint:gosec // G101: a WWW-Authenticate challenge, no credential in it

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
	apiErr := &APIError{Status: best.status, Kind: authKinds[best.reason], Message: best.message, Cause: best.cause, authReason: best.reason}
	if best.status == http.StatusUnauthorized && best.presented {
		apiErr.Challenge = invalidTokenChallenge
	}
	return apiErr
}
