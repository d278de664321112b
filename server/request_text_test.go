package server

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/routers"
)

// TestCheckRequestText: a malformed query escape, NUL or invalid UTF-8 in
// the query or in a header the server reads is a 400 invalid_request; the
// same bytes in a header it does not read, and good text, pass.
func TestCheckRequestText(t *testing.T) {
	route := &routers.Route{Operation: &openapi3.Operation{Parameters: openapi3.Parameters{
		{Value: &openapi3.Parameter{In: openapi3.ParameterInHeader, Name: "Idempotency-Key"}},
	}}}
	for _, c := range []struct {
		name, query    string
		header, value  string
		wantBadRequest bool
	}{
		{"good", "actor=alice&action=member.added", "", "", false},
		{"good UTF-8", "actor=%C3%A9", WorkspaceHeader, "acme-é", false},
		{"malformed escape", "%zz", "", "", true},
		{"malformed value", "actor=%zz", "", "", true},
		{"NUL", "actor=a%00b", "", "", true},
		{"invalid UTF-8", "actor=%FF", "", "", true},
		{"truncated UTF-8", "action=%C3%28", "", "", true},
		{"invalid name", "%FF=1", "", "", true},
		{"workspace header", "", WorkspaceHeader, "acme\xff", true},
		{"credential header", "", "Authorization", "Bearer \xc3\x28", true},
		{"declared header", "", "Idempotency-Key", "k\xff", true},
		{"header not read", "", "User-Agent", "agent\xff", false},
	} {
		req := httptest.NewRequestWithContext(t.Context(), http.MethodGet, "/v0/audit", nil)
		req.URL.RawQuery = c.query
		if c.header != "" {
			req.Header.Set(c.header, c.value)
		}
		err := checkRequestText(req, route)
		var apiErr *APIError
		bad := errors.As(err, &apiErr) && apiErr.Status == http.StatusBadRequest && apiErr.Kind == KindInvalidRequest
		if bad != c.wantBadRequest || (err != nil && !bad) {
			t.Errorf("%s: got %v, want a 400 invalid_request: %v", c.name, err, c.wantBadRequest)
		}
	}
}
