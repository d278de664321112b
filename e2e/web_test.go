package e2e_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"maps"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"

	"github.com/membership-api/controlplane/gen"
	"github.com/membership-api/controlplane/server"
	"github.com/membership-api/controlplane/store"
)

// The answers tested here are outside the YAML's operations (the served
// contract, the docs page, OPTIONS, preflights) or a HEAD, which the YAML
// does not declare: each test checks them against what they promise
// instead, with rawDo. Answers to declared operations still go through the
// validating client (f.do), and 4xx answers anywhere must be the Error JSON.
// They run on SQLite only: nothing here touches the database differently.

// rawDo sends a request without the spec-validating transport.
func rawDo(t *testing.T, method, url string, header http.Header) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(context.Background(), method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	maps.Copy(req.Header, header)
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode >= 400 && method != http.MethodHead {
		var e gen.Error
		if json.Unmarshal(body, &e) != nil || e.Error == "" || deref(e.Message) == "" {
			t.Errorf("%s %s: %d without the Error JSON: %q", method, url, resp.StatusCode, body)
		}
	}
	return resp, body
}

// httpGet is http.Get with a context (noctx): a plain GET, no validation.
func httpGet(url string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	return http.DefaultClient.Do(req)
}

// noBody fails unless an answer that must be empty is.
func noBody(t *testing.T, what string, body []byte) {
	t.Helper()
	if len(body) != 0 {
		t.Errorf("%s: got a body %q, want none", what, body)
	}
}

// specJSON is a document as canonical JSON, for comparing documents.
func specJSON(t *testing.T, doc *openapi3.T) string {
	t.Helper()
	b, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestContract_Served(t *testing.T) {
	t.Parallel()
	f := newTenant(t, "sqlite")
	embedded, err := gen.GetSpec()
	if err != nil {
		t.Fatal(err)
	}
	embedded.Servers = openapi3.Servers{{URL: server.APIBasePath, Description: "this server"}}
	// The OAuth2 flows' token URL moves under the server's base path, where
	// the token endpoint answers (server/contract.go, pointTokenURLsAtAPIBase).
	for _, scheme := range embedded.Components.SecuritySchemes {
		if flows := scheme.Value.Flows; flows != nil {
			for _, flow := range []*openapi3.OAuthFlow{flows.Implicit, flows.Password, flows.ClientCredentials, flows.AuthorizationCode} {
				if flow != nil && strings.HasPrefix(flow.TokenURL, "/") {
					flow.TokenURL = server.APIBasePath + flow.TokenURL
				}
			}
		}
	}
	want := specJSON(t, embedded)

	etags := map[string]string{}
	for path, contentType := range map[string]string{
		server.ContractYAMLPath: "application/yaml; charset=utf-8",
		server.ContractJSONPath: "application/json",
	} {
		t.Run(path, func(t *testing.T) {
			// No credentials needed: the contract is public.
			resp, body := rawDo(t, http.MethodGet, f.srv.URL+path, nil)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("GET %s: got %d, want 200: %s", path, resp.StatusCode, body)
			}
			if got := resp.Header.Get("Content-Type"); got != contentType {
				t.Errorf("Content-Type: got %q, want %q", got, contentType)
			}
			if got := resp.Header.Get("Cache-Control"); got != "public, max-age=300" {
				t.Errorf("Cache-Control: got %q, want public, max-age=300", got)
			}
			sum := sha256.Sum256(body)
			etag := `"` + base64.RawURLEncoding.EncodeToString(sum[:16]) + `"`
			if got := resp.Header.Get("ETag"); got != etag {
				t.Errorf("ETag: got %s, want %s (a hash of the bytes served)", got, etag)
			}
			etags[path] = etag

			// The document is the embedded contract with the one relative
			// server, valid, and says so in its own terms.
			doc, err := openapi3.NewLoader().LoadFromData(body)
			if err != nil {
				t.Fatalf("served document does not load: %v", err)
			}
			if err := doc.Validate(context.Background()); err != nil {
				t.Errorf("served document is invalid: %v", err)
			}
			if len(doc.Servers) != 1 || doc.Servers[0].URL != server.APIBasePath {
				t.Errorf("servers: got %+v, want the one relative server %s", doc.Servers, server.APIBasePath)
			}
			if got := doc.Components.SecuritySchemes["OAuth2"].Value.Flows.ClientCredentials.TokenURL; got != server.APIBasePath+"/oauth/token" {
				t.Errorf("clientCredentials tokenUrl: got %q, want %s/oauth/token, the token endpoint (relative to the page, not to the server URL)", got, server.APIBasePath)
			}
			if got := specJSON(t, doc); got != want {
				t.Errorf("served document differs from the embedded contract beyond its servers")
			}
			if path == server.ContractYAMLPath && !bytes.Contains(body, []byte("# Additive extension")) {
				t.Errorf("served YAML lost the authors' comments: it should be openapi/controlplane.yml as written")
			}

			// Revalidation: 304 without a body; HEAD: the headers without it.
			resp, body = rawDo(t, http.MethodGet, f.srv.URL+path, http.Header{"If-None-Match": {etag}})
			if resp.StatusCode != http.StatusNotModified || resp.Header.Get("ETag") != etag {
				t.Errorf("If-None-Match: got %d ETag %s, want 304 with the same ETag", resp.StatusCode, resp.Header.Get("ETag"))
			}
			noBody(t, "304", body)
			resp, body = rawDo(t, http.MethodGet, f.srv.URL+path, http.Header{"If-None-Match": {`"stale"`}})
			if resp.StatusCode != http.StatusOK || len(body) == 0 {
				t.Errorf("stale If-None-Match: got %d with %d bytes, want 200 and the document", resp.StatusCode, len(body))
			}
			resp, body = rawDo(t, http.MethodHead, f.srv.URL+path, nil)
			if resp.StatusCode != http.StatusOK || resp.Header.Get("ETag") != etag || resp.Header.Get("Content-Type") != contentType {
				t.Errorf("HEAD: got %d ETag %s Content-Type %q, want GET's status and headers", resp.StatusCode, resp.Header.Get("ETag"), resp.Header.Get("Content-Type"))
			}
			noBody(t, "HEAD", body)

			// Read-only: other methods are 405 with Allow (not the /v0
			// catch-all's 404), OPTIONS says the same in a 204.
			resp, _ = rawDo(t, http.MethodPost, f.srv.URL+path, nil)
			if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != "GET, HEAD, OPTIONS" {
				t.Errorf("POST: got %d Allow %q, want 405 Allow GET, HEAD, OPTIONS", resp.StatusCode, resp.Header.Get("Allow"))
			}
			resp, body = rawDo(t, http.MethodOptions, f.srv.URL+path, nil)
			if resp.StatusCode != http.StatusNoContent || resp.Header.Get("Allow") != "GET, HEAD, OPTIONS" {
				t.Errorf("OPTIONS: got %d Allow %q, want 204 Allow GET, HEAD, OPTIONS", resp.StatusCode, resp.Header.Get("Allow"))
			}
			noBody(t, "OPTIONS", body)
		})
	}
	if etags[server.ContractYAMLPath] == etags[server.ContractJSONPath] {
		t.Error("the YAML and the JSON share an ETag, but their bytes differ")
	}
}

func TestDocs_Page(t *testing.T) {
	t.Parallel()
	f := newTenant(t, "sqlite")
	resp, page := rawDo(t, http.MethodGet, f.srv.URL+server.DocsPath, nil)
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("GET /docs: got %d %q, want 200 text/html", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	if !bytes.Contains(page, []byte(server.ContractYAMLPath)) {
		t.Errorf("docs page does not load %s", server.ContractYAMLPath)
	}
	// The CSP allows no inline code but the page's own, by hash, and no
	// other origin.
	csp := resp.Header.Get("Content-Security-Policy")
	for _, directive := range []string{"default-src 'none'", "connect-src 'self'", "frame-ancestors 'none'"} {
		if !strings.Contains(csp, directive) {
			t.Errorf("CSP %q lacks %q", csp, directive)
		}
	}
	if strings.Contains(csp, "unsafe-") || strings.Contains(csp, "*") || strings.Contains(csp, "http") {
		t.Errorf("CSP %q allows unsafe code or other origins", csp)
	}
	inline := regexp.MustCompile(`(?s)<script>(.*?)</script>`).FindAllSubmatch(page, -1)
	if len(inline) == 0 {
		t.Error("no inline script found: the hash check below checks nothing")
	}
	for _, m := range inline {
		sum := sha256.Sum256(m[1])
		if h := "'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"; !strings.Contains(csp, h) {
			t.Errorf("CSP lacks the hash %s of an inline script of the page", h)
		}
	}
	// Every asset the page names is served from the binary.
	assets := regexp.MustCompile(`(?:src|href)="(/docs/[^"]+)"`).FindAllSubmatch(page, -1)
	if len(assets) < 3 {
		t.Errorf("page names %d assets, want the bundle, preset and stylesheet at least", len(assets))
	}
	for _, m := range assets {
		resp, body := rawDo(t, http.MethodGet, f.srv.URL+string(m[1]), nil)
		if resp.StatusCode != http.StatusOK || len(body) == 0 {
			t.Errorf("GET %s: got %d with %d bytes, want 200 and the asset", m[1], resp.StatusCode, len(body))
		}
	}
	resp, _ = rawDo(t, http.MethodGet, f.srv.URL+server.DocsPath+"/no-such-asset.js", nil)
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("unknown asset: got %d, want 404", resp.StatusCode)
	}
	resp, body := rawDo(t, http.MethodHead, f.srv.URL+server.DocsPath, nil)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Security-Policy") != csp {
		t.Errorf("HEAD /docs: got %d, want 200 with GET's headers", resp.StatusCode)
	}
	noBody(t, "HEAD /docs", body)
}

// TestHEAD_EveryGETOperation: HEAD is answered wherever the YAML declares
// GET, as the GET with no body: same status and headers, the same security
// (no token: 401 with WWW-Authenticate).
func TestHEAD_EveryGETOperation(t *testing.T) {
	t.Parallel()
	f := newTenant(t, "sqlite")
	token := f.token(f.adminSub, f.adminEmail, "admin")
	_, sa, err := f.store().CreateServiceAccount(context.Background(), f.ws, f.adminSub, store.NewServiceAccount{Name: "ci"})
	if err != nil {
		t.Fatal(err)
	}
	// Path parameters: the fixture's workspace and a service account of it,
	// which the key and the token both reach; a webhook endpoint that does
	// not exist (a 404 for HEAD as for GET).
	params := strings.NewReplacer("{workspaceName}", f.ws, "{clientId}", sa.ClientID, "{webhookId}", "1")
	paths := 0
	for path, item := range loadSpec(t).Paths.Map() {
		if item.Get == nil {
			continue
		}
		paths++
		url := server.APIBasePath + params.Replace(path)
		if strings.Contains(url, "{") {
			t.Fatalf("%s: a GET with path parameters; give this test values for them", path)
		}
		t.Run(path, func(t *testing.T) {
			for name, h := range map[string]http.Header{"api key": f.bearer(f.adminKey), "token": f.bearer(token), "no credentials": with(f.bearer(""), "Authorization", "")} {
				get, _ := f.do(t, http.MethodGet, url, h, "") // validated against the YAML
				head, body := rawDo(t, http.MethodHead, f.srv.URL+url, h)
				if head.StatusCode != get.StatusCode {
					t.Errorf("%s: HEAD got %d, GET %d", name, head.StatusCode, get.StatusCode)
				}
				for _, k := range []string{"Content-Type", "WWW-Authenticate", "RateLimit-Policy", "Link"} {
					// Errors to a HEAD are written without Content-Type
					// (server/errors.go writeError); successes match GET.
					if k == "Content-Type" && get.StatusCode >= 400 {
						continue
					}
					if head.Header.Get(k) != get.Header.Get(k) {
						t.Errorf("%s: HEAD %s %q, GET %q", name, k, head.Header.Get(k), get.Header.Get(k))
					}
				}
				noBody(t, name+": HEAD", body)
			}
		})
	}
	if paths == 0 {
		t.Fatal("the YAML has no GET operation: this test checks nothing")
	}
	for _, path := range []string{"/healthz", "/readyz"} {
		resp, body := rawDo(t, http.MethodHead, f.srv.URL+path, nil)
		if resp.StatusCode != http.StatusOK {
			t.Errorf("HEAD %s: got %d, want 200", path, resp.StatusCode)
		}
		noBody(t, "HEAD "+path, body)
	}
}

// allowFor is the Allow header a path of the YAML must carry: its methods,
// HEAD with GET, and OPTIONS.
func allowFor(item *openapi3.PathItem) string {
	ops := item.Operations()
	var allow []string
	for _, m := range []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete} {
		if ops[m] != nil || (m == http.MethodHead && ops[http.MethodGet] != nil) {
			allow = append(allow, m)
		}
	}
	return strings.Join(append(allow, http.MethodOptions), ", ")
}

// TestMethods_AllowFromTheYAML: a method a path does not declare is a 405
// with the Error JSON and Allow listing what the YAML declares; OPTIONS is a
// 204 with the same Allow. Neither needs credentials, and neither counts as
// a failed authentication.
func TestMethods_AllowFromTheYAML(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "sqlite", "--rate-limit-failed-auth", "1/h")
	concrete := strings.NewReplacer("{subOrEmail}", f.memberEmail, "{workspaceName}", f.ws)
	for path, item := range loadSpec(t).Paths.Map() {
		url := server.APIBasePath + concrete.Replace(path)
		want := allowFor(item)
		for _, m := range []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete} {
			if item.GetOperation(m) != nil {
				continue
			}
			resp, _ := f.do(t, m, url, nil, "") // not an operation: the transport wants the Error JSON
			if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != want {
				t.Errorf("%s %s: got %d Allow %q, want 405 Allow %q", m, url, resp.StatusCode, resp.Header.Get("Allow"), want)
			}
		}
		resp, body := rawDo(t, http.MethodOptions, f.srv.URL+url, nil)
		if resp.StatusCode != http.StatusNoContent || resp.Header.Get("Allow") != want {
			t.Errorf("OPTIONS %s: got %d Allow %q, want 204 Allow %q", url, resp.StatusCode, resp.Header.Get("Allow"), want)
		}
		noBody(t, "OPTIONS "+url, body)
		if resp.Header.Get("Access-Control-Allow-Origin") != "" {
			t.Errorf("OPTIONS %s: CORS headers without --cors-allowed-origins", url)
		}
	}
	resp, _ := rawDo(t, http.MethodOptions, f.srv.URL+"/v0/no-such-route", nil)
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("OPTIONS on an unknown route: got %d, want 404", resp.StatusCode)
	}
	// None of that spent the one failed authentication allowed per hour.
	if resp, body := f.do(t, http.MethodGet, "/v0/users", f.bearer(f.adminKey), ""); resp.StatusCode != http.StatusOK {
		t.Errorf("after the 405s and OPTIONS: got %d %s, want 200", resp.StatusCode, body)
	}
}

func TestCORS(t *testing.T) {
	t.Parallel()
	const origin = "https://app.example.test"
	// One failed authentication per hour: preflights must go on being
	// answered once the address is refused everything else.
	f := newFixture(t, "sqlite", "--cors-allowed-origins", origin+", http://localhost:3000", "--rate-limit-failed-auth", "1/h")
	preflight := func(from, method string) (*http.Response, []byte) {
		return rawDo(t, http.MethodOptions, f.srv.URL+"/v0/users", http.Header{
			"Origin":                         {from},
			"Access-Control-Request-Method":  {method},
			"Access-Control-Request-Headers": {"authorization,content-type,x-blaxel-workspace"},
		})
	}
	csv := func(v string) []string {
		var out []string
		for _, s := range strings.Split(v, ",") {
			out = append(out, strings.ToLower(strings.TrimSpace(s)))
		}
		return out
	}

	resp, body := preflight(origin, http.MethodPost)
	if resp.StatusCode != http.StatusNoContent || resp.Header.Get("Access-Control-Allow-Origin") != origin {
		t.Fatalf("preflight: got %d Allow-Origin %q, want 204 %s", resp.StatusCode, resp.Header.Get("Access-Control-Allow-Origin"), origin)
	}
	noBody(t, "preflight", body)
	methods := csv(resp.Header.Get("Access-Control-Allow-Methods"))
	for _, m := range []string{"get", "head", "post", "put", "delete"} {
		if !slices.Contains(methods, m) {
			t.Errorf("Access-Control-Allow-Methods %v lacks %s (the spec uses it)", methods, m)
		}
	}
	headers := csv(resp.Header.Get("Access-Control-Allow-Headers"))
	for _, h := range []string{"authorization", "x-blaxel-authorization", "x-blaxel-workspace", "content-type", "x-request-id", "idempotency-key"} {
		if !slices.Contains(headers, h) {
			t.Errorf("Access-Control-Allow-Headers %v lacks %s", headers, h)
		}
	}
	if resp.Header.Get("Access-Control-Max-Age") == "" || !slices.Contains(resp.Header.Values("Vary"), "Origin") {
		t.Errorf("preflight: Max-Age %q Vary %v, want a max age and Vary: Origin", resp.Header.Get("Access-Control-Max-Age"), resp.Header.Values("Vary"))
	}
	if resp.Header.Get("Access-Control-Allow-Credentials") != "" {
		t.Error("Access-Control-Allow-Credentials set: credentials are headers, never cookies")
	}

	// A page of the allowed origin reads the answers, errors included, and
	// the headers it needs to back off and report.
	for name, h := range map[string]http.Header{"ok": f.bearer(f.adminKey), "401": with(f.bearer(""), "Authorization", "")} {
		resp, _ := f.do(t, http.MethodGet, "/v0/users", with(h, "Origin", origin), "")
		if resp.Header.Get("Access-Control-Allow-Origin") != origin {
			t.Errorf("%s: Allow-Origin %q, want %s", name, resp.Header.Get("Access-Control-Allow-Origin"), origin)
		}
		exposed := csv(resp.Header.Get("Access-Control-Expose-Headers"))
		for _, h := range []string{"x-request-id", "retry-after", "ratelimit", "ratelimit-policy"} {
			if !slices.Contains(exposed, h) {
				t.Errorf("%s: Access-Control-Expose-Headers %v lacks %s", name, exposed, h)
			}
		}
	}

	// Other origins get no CORS headers at all, so browsers refuse.
	resp, _ = preflight("https://evil.example.test", http.MethodPost)
	if resp.Header.Get("Access-Control-Allow-Origin") != "" || resp.Header.Get("Access-Control-Allow-Methods") != "" {
		t.Errorf("preflight from another origin: got Allow-Origin %q", resp.Header.Get("Access-Control-Allow-Origin"))
	}
	resp, _ = f.do(t, http.MethodGet, "/v0/users", with(f.bearer(f.adminKey), "Origin", "https://evil.example.test"), "")
	if resp.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("request from another origin: got Allow-Origin %q", resp.Header.Get("Access-Control-Allow-Origin"))
	}

	// Preflights need no credentials and no quota: after the address used
	// up its failed authentications, they are still answered.
	f.do(t, http.MethodGet, "/v0/users", with(f.bearer("bl_guessed"), "Origin", origin), "")
	if resp, _ := f.do(t, http.MethodGet, "/v0/users", f.bearer(f.adminKey), ""); resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("after a failed authentication with 1/h: got %d, want 429 (the setup of this check)", resp.StatusCode)
	}
	for range 5 {
		if resp, _ := preflight(origin, http.MethodPost); resp.StatusCode != http.StatusNoContent || resp.Header.Get("Access-Control-Allow-Origin") != origin {
			t.Fatalf("preflight from a refused address: got %d, want 204 with CORS headers", resp.StatusCode)
		}
	}
}

// TestCORS_Off: without --cors-allowed-origins no answer carries a CORS
// header, so browsers keep other origins out.
func TestCORS_Off(t *testing.T) {
	t.Parallel()
	f := newTenant(t, "sqlite")
	resp, _ := rawDo(t, http.MethodOptions, f.srv.URL+"/v0/users", http.Header{
		"Origin": {"https://app.example.test"}, "Access-Control-Request-Method": {"POST"},
	})
	if resp.StatusCode != http.StatusNoContent || resp.Header.Get("Allow") == "" {
		t.Errorf("preflight without CORS: got %d Allow %q, want the plain OPTIONS answer", resp.StatusCode, resp.Header.Get("Allow"))
	}
	for k := range resp.Header {
		if strings.HasPrefix(k, "Access-Control-") {
			t.Errorf("preflight without CORS: got %s", k)
		}
	}
	resp, _ = f.do(t, http.MethodGet, "/v0/users", with(f.bearer(f.adminKey), "Origin", "https://app.example.test"), "")
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("request without CORS: got %d Allow-Origin %q, want 200 and none", resp.StatusCode, resp.Header.Get("Access-Control-Allow-Origin"))
	}
}

func TestCORS_BadOrigins(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "sqlite")
	for _, bad := range []string{"app.example.test", "https://app.example.test/path", "ftp://app.example.test", "https://*.example.test", "https://user@app.example.test"} {
		r := runCLI(t, e.args("serve", "--addr", "127.0.0.1:0", "--cors-allowed-origins", bad)...)
		if r.code == 0 || !strings.Contains(r.stderr, "--cors-allowed-origins") {
			t.Errorf("--cors-allowed-origins %q: exit %d, stderr %q; want a refusal naming the flag", bad, r.code, r.stderr)
		}
	}
}
