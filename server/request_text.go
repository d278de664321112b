package server

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"unicode/utf8"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/routers"
)

// checkRequestText refuses, with a 400 before authentication and before any
// statement, a request whose query string does not parse or whose query or
// read headers hold NUL or invalid UTF-8. Path parameters are left to their
// handlers, which answer an impossible name or ID with a 404 on both
// databases (TestMalformedInput sends them too).
//
// A malformed escape (`?%zz`) is the client's mistake, but
// Request.ParseForm parses the query along with a form body and fails on it,
// which reached the client as a 500; elsewhere url.Values silently dropped
// the pair, so `?actor=%zz` listed every actor's events. PostgreSQL refuses
// NUL and invalid UTF-8 in text parameters (`invalid byte sequence for
// encoding "UTF8"`), a 500, where SQLite stores or compares them: refusing
// them here keeps both databases' answers the same and covers every
// operation, those added later too. The headers checked are the ones the
// server reads (credentials, the workspace, the operation's declared header
// parameters): a stray byte in User-Agent harms nobody.
func checkRequestText(req *http.Request, route *routers.Route) error {
	query, err := url.ParseQuery(req.URL.RawQuery)
	if err != nil {
		return newError(http.StatusBadRequest, KindInvalidRequest, fmt.Sprintf("the query string is malformed: %v", err))
	}
	for name, values := range query {
		if !isText(name) {
			return newError(http.StatusBadRequest, KindInvalidRequest, "a query parameter's name is not UTF-8 text without NUL")
		}
		for _, v := range values {
			if !isText(v) {
				return newError(http.StatusBadRequest, KindInvalidRequest, fmt.Sprintf("query parameter %q is not UTF-8 text without NUL", name))
			}
		}
	}
	for _, name := range readHeaders(route) {
		for _, v := range req.Header.Values(name) {
			if !isText(v) {
				return newError(http.StatusBadRequest, KindInvalidRequest, fmt.Sprintf("header %s is not UTF-8 text without NUL", name))
			}
		}
	}
	return nil
}

// readHeaders are the headers of a request the server reads: the
// credentials, the workspace, and the operation's declared header
// parameters (the path item's too).
func readHeaders(route *routers.Route) []string {
	names := append([]string{WorkspaceHeader}, credentialHeaders...)
	var params openapi3.Parameters
	if route.PathItem != nil {
		params = append(params, route.PathItem.Parameters...)
	}
	if route.Operation != nil {
		params = append(params, route.Operation.Parameters...)
	}
	for _, ref := range params {
		if ref != nil && ref.Value != nil && ref.Value.In == openapi3.ParameterInHeader {
			names = append(names, ref.Value.Name)
		}
	}
	return names
}

// isText tells whether s is UTF-8 without NUL: what PostgreSQL accepts as
// a text parameter.
func isText(s string) bool {
	return utf8.ValidString(s) && !strings.ContainsRune(s, 0)
}
