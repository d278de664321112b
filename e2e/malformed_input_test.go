package e2e_test

import (
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
)

// malformedValues are parameter values, as sent on the wire, that reach
// the server as NUL, invalid UTF-8 or a malformed escape. PostgreSQL
// refuses NUL and invalid UTF-8 in text parameters ("invalid byte sequence
// for encoding UTF8") where SQLite stores or compares them, so the server
// must refuse them before any statement: a 400, never a 500.
var malformedValues = []string{"%00", "a%00b", "%FF", "%C3%28", "%zz"}

// malformedHeaderValues are header values with the same bytes: a header
// carries them raw. NUL is not among them: Go's client refuses to send it,
// and Go's server refuses it (a plain 400) before any handler.
var malformedHeaderValues = []string{"\xff", "\xc3\x28", "a\xffb"}

// specOperation is one operation of the YAML with its parameters, the
// path item's and its own.
type specOperation struct {
	method, path string
	op           *openapi3.Operation
	params       openapi3.Parameters
}

// specOperations lists every operation of the spec, so that an operation
// added to the YAML is covered without a change here.
func specOperations(doc *openapi3.T) []specOperation {
	var ops []specOperation
	for _, path := range doc.Paths.InMatchingOrder() {
		item := doc.Paths.Value(path)
		for method, op := range item.Operations() {
			params := slices.Concat(item.Parameters, op.Parameters)
			ops = append(ops, specOperation{method: method, path: path, op: op, params: params})
		}
	}
	return ops
}

// allScopes are every OAuth2 scope the spec's operations require, so one
// token gets past every operation's security.
func allScopes(doc *openapi3.T) []string {
	var scopes []string
	add := func(reqs *openapi3.SecurityRequirements) {
		if reqs == nil {
			return
		}
		for _, req := range *reqs {
			for _, s := range req {
				scopes = append(scopes, s...)
			}
		}
	}
	add(&doc.Security)
	for _, o := range specOperations(doc) {
		add(o.op.Security)
	}
	slices.Sort(scopes)
	return slices.Compact(scopes)
}

// pathValue is a valid value of a path parameter for the fixture's
// tenant, or a plausible one (a 404 is a fine answer here).
func (f *fixture) pathValue(p *openapi3.Parameter) string {
	switch p.Name {
	case "workspaceName":
		return f.ws
	case "subOrEmail":
		return f.memberSub
	}
	if p.Schema != nil && p.Schema.Value != nil && p.Schema.Value.Type.Is(openapi3.TypeInteger) {
		return "1"
	}
	return "x" + f.suffix
}

// malformedRequest is one request of TestMalformedInput: an operation with
// one parameter set to a malformed value.
type malformedRequest struct {
	name, method, path string
	header             http.Header
}

// malformedRequests builds, for every operation, one request per query,
// header and path parameter and malformed value; every other parameter is
// left out (query) or valid (path, and the workspace header).
func (f *fixture) malformedRequests(doc *openapi3.T, header http.Header) []malformedRequest {
	var reqs []malformedRequest
	for _, o := range specOperations(doc) {
		path := func(bad *openapi3.Parameter, value string) string {
			p := o.path
			for _, ref := range o.params {
				if ref.Value.In != openapi3.ParameterInPath {
					continue
				}
				v := url.PathEscape(f.pathValue(ref.Value))
				if ref.Value == bad {
					v = value
				}
				p = strings.ReplaceAll(p, "{"+ref.Value.Name+"}", v)
			}
			return "/v0" + p
		}
		for _, ref := range o.params {
			p := ref.Value
			name := o.op.OperationID + "/" + p.In + ":" + p.Name
			switch p.In {
			case openapi3.ParameterInQuery:
				for _, v := range malformedValues {
					reqs = append(reqs, malformedRequest{name + "=" + v, o.method, path(nil, "") + "?" + p.Name + "=" + v, header})
				}
			case openapi3.ParameterInHeader:
				for _, v := range malformedHeaderValues {
					h := header.Clone()
					h.Set(p.Name, v)
					reqs = append(reqs, malformedRequest{name + "=" + url.QueryEscape(v), o.method, path(nil, ""), h})
				}
			case openapi3.ParameterInPath:
				for _, v := range malformedValues {
					reqs = append(reqs, malformedRequest{name + "=" + v, o.method, path(p, v), header})
				}
			}
		}
	}
	return reqs
}

// TestMalformedInput sends NUL, invalid UTF-8 and malformed escapes in every
// query, header and path parameter of every operation of the YAML, as the
// tenant's admin with every scope (past authentication), and checks that
// none is answered with a 5xx; the validating transport checks each answer
// is one the YAML declares for its operation.
func TestMalformedInput(t *testing.T) {
	t.Parallel()
	parallelDialects(t, func(t *testing.T, dialect string) {
		f := newTenant(t, dialect)
		doc := loadSpec(t)
		header := f.bearer(f.token(f.adminSub, f.adminEmail, allScopes(doc)...))
		reqs := f.malformedRequests(doc, header)
		if len(reqs) == 0 {
			t.Fatal("no parameter found in the spec")
		}
		t.Logf("%d requests", len(reqs))
		for _, r := range reqs {
			resp, body := f.do(t, r.method, r.path, r.header, "")
			if resp.StatusCode >= 500 {
				t.Errorf("%s: %s %s: got %d %s, want no 5xx", r.name, r.method, r.path, resp.StatusCode, body)
			}
		}
	})
}

// TestMalformedInput_TokenEndpointQuery: Request.ParseForm parses the URL's
// query too, so a malformed escape there failed the form parse of a good
// body with a 500. It is the client's mistake: RFC 6749 §5.2's 400
// invalid_request.
func TestMalformedInput_TokenEndpointQuery(t *testing.T) {
	t.Parallel()
	parallelDialects(t, func(t *testing.T, dialect string) {
		f := newTenant(t, dialect)
		sa := f.oauthClient(t, f.uniq("malformed"), "member")
		form := url.Values{"grant_type": {"client_credentials"}, "client_id": {sa.clientID}, "client_secret": {sa.secret}}.Encode()
		for _, query := range []string{"%zz", "a=%zz", "a=%FF", "a=%00"} {
			h := http.Header{"Content-Type": {"application/x-www-form-urlencoded"}}
			resp, body := f.do(t, "POST", "/v0/oauth/token?"+query, h, form)
			if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), `"error":"invalid_request"`) {
				t.Errorf("?%s: got %d %s, want 400 invalid_request", query, resp.StatusCode, body)
			}
		}
		// The same body without the malformed query gets its token.
		resp, body := f.do(t, "POST", "/v0/oauth/token", http.Header{"Content-Type": {"application/x-www-form-urlencoded"}}, form)
		if resp.StatusCode != http.StatusOK {
			t.Errorf("without a query: got %d %s, want 200", resp.StatusCode, body)
		}
	})
}
