package e2e_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/membership-api/controlplane/internal/cli"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"

	"github.com/membership-api/controlplane/gen"
	"github.com/membership-api/controlplane/server"
	"github.com/membership-api/controlplane/store"
	"github.com/membership-api/controlplane/store/storetest"
)

// The end-to-end tests run the real CLI (run) in-process: `serve` on port 0
// with a temporary data directory, and the other commands as a user would.

// cliResult is what one CLI invocation printed.
type cliResult struct {
	stdout, stderr string
	code           int
}

// runCLI runs one command to completion.
func runCLI(t testing.TB, args ...string) cliResult {
	t.Helper()
	var out, errOut bytes.Buffer
	code := cli.Run(context.Background(), args, &out, &errOut)
	return cliResult{stdout: out.String(), stderr: errOut.String(), code: code}
}

// mustCLI runs a command that must succeed and returns its trimmed stdout.
func mustCLI(t testing.TB, args ...string) string {
	t.Helper()
	r := runCLI(t, args...)
	if r.code != 0 {
		t.Fatalf("%v: exit %d: %s", args, r.code, r.stderr)
	}
	return strings.TrimSpace(r.stdout)
}

// env is one deployment under test: a data directory and a database.
type env struct {
	t       *testing.T
	dialect string
	dataDir string
	dsn     string
}

func newEnv(t *testing.T, dialect string) *env {
	return &env{t: t, dialect: dialect, dataDir: t.TempDir(), dsn: storetest.DSN(t, dialect)}
}

// args appends the deployment's --data-dir and --db to a command line.
func (e *env) args(args ...string) []string {
	return append(args, "--data-dir", e.dataDir, "--db", e.dsn)
}

// store opens a second handle on the deployment's database, for assertions.
func (e *env) store() *store.Store {
	return storetest.OpenDSN(e.t, e.dsn, store.Options{})
}

// token signs a development-issuer token for sub with the given scopes.
func (e *env) token(sub, email string, scopes ...string) string {
	e.t.Helper()
	dev, err := server.LoadDevIssuer(e.dataDir)
	if err != nil {
		e.t.Fatal(err)
	}
	tok, err := dev.Sign(server.TokenRequest{Sub: sub, Email: email, Scopes: scopes, TTL: time.Hour}, time.Now())
	if err != nil {
		e.t.Fatal(err)
	}
	return tok
}

// runningServer is a `serve` process started by start.
type runningServer struct {
	URL    string // base URL, e.g. http://127.0.0.1:41234
	cancel context.CancelFunc
	done   chan int
	logs   *syncBuffer
}

var listeningLine = regexp.MustCompile(`msg=listening addr=(http://\S+)`)

// start runs `serve` on a free port and waits until it listens.
func (e *env) start(extra ...string) *runningServer {
	e.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	s := &runningServer{cancel: cancel, done: make(chan int, 1), logs: &syncBuffer{}}
	args := append(e.args("serve", "--addr", "127.0.0.1:0"), extra...)
	go func() {
		code := cli.Run(ctx, args, io.Discard, pw)
		pw.Close()
		s.done <- code
	}()
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			line := sc.Text()
			s.logs.WriteString(line + "\n")
			if m := listeningLine.FindStringSubmatch(line); m != nil {
				addr <- m[1]
			}
		}
	}()
	select {
	case s.URL = <-addr:
	case code := <-s.done:
		e.t.Fatalf("serve exited with %d before listening:\n%s", code, s.logs.String())
	case <-time.After(30 * time.Second):
		e.t.Fatalf("serve did not start:\n%s", s.logs.String())
	}
	e.t.Cleanup(s.stop)
	return s
}

// stop shuts the server down gracefully and waits for it.
func (s *runningServer) stop() {
	if s.cancel == nil {
		return
	}
	s.cancel()
	<-s.done
	s.cancel = nil
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) WriteString(s string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf.WriteString(s)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// specRouter finds operations for response validation; built once.
var specRouter = sync.OnceValues(func() (routers.Router, error) {
	doc, err := server.LoadSpec(context.Background())
	if err != nil {
		return nil, err
	}
	return gorillamux.NewRouter(doc)
})

func loadSpec(t testing.TB) *openapi3.T {
	t.Helper()
	doc, err := server.LoadSpec(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return doc
}

// validatingTransport checks every response against openapi/controlplane.yml:
// the status must be declared (IncludeResponseStatus) and the body must match.
// Answers to requests outside the spec (unknown routes) must still be the
// spec's Error JSON.
type validatingTransport struct {
	t testing.TB
}

func (v validatingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	checkResponse(v.t, req, resp, body)
	return resp, nil
}

func checkResponse(t testing.TB, req *http.Request, resp *http.Response, body []byte) {
	t.Helper()
	if req.URL.Opaque != "" {
		// A request line Go's HTTP server itself rejects (malformed escape):
		// it answers a plain "400 Bad Request" before any handler runs.
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("%s %s: got %d, want 400", req.Method, req.URL.Opaque, resp.StatusCode)
		}
		return
	}
	router, err := specRouter()
	if err != nil {
		t.Errorf("spec: %v", err)
		return
	}
	route, params, err := router.FindRoute(req)
	if err != nil {
		// Not an operation of the spec: only the error shape can be checked.
		if resp.StatusCode < 400 {
			t.Errorf("%s %s: non-spec route answered %d %q, want a 4xx Error JSON", req.Method, req.URL.Path, resp.StatusCode, body)
		}
		checkErrorBody(t, req, resp, body)
		return
	}
	input := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route},
		Status:                 resp.StatusCode,
		Header:                 resp.Header,
		Body:                   io.NopCloser(bytes.NewReader(body)),
		Options:                &openapi3filter.Options{IncludeResponseStatus: true},
	}
	if err := openapi3filter.ValidateResponse(context.Background(), input); err != nil {
		t.Errorf("%s %s: response %d does not match the spec: %v\nbody: %s", req.Method, req.URL.Path, resp.StatusCode, err, body)
	} else {
		recordPair(route.Operation.OperationID, resp.StatusCode)
	}
	if resp.StatusCode >= 400 {
		checkErrorBody(t, req, resp, body)
	}
	if resp.StatusCode == http.StatusUnauthorized && resp.Header.Get("WWW-Authenticate") == "" {
		t.Errorf("%s %s: 401 without WWW-Authenticate", req.Method, req.URL.Path)
	}
}

// checkErrorBody: an error answer is upstream's Error, filled: code is the
// status, error a kind the README's error table lists, message says what
// was wrong, request_id is the X-Request-Id header's.
func checkErrorBody(t testing.TB, req *http.Request, resp *http.Response, body []byte) {
	t.Helper()
	if req.Method == http.MethodHead {
		return // no body
	}
	var e gen.Error
	if err := json.Unmarshal(body, &e); err != nil || e.Code == nil || *e.Code != resp.StatusCode || deref(e.Message) == "" {
		t.Errorf("%s %s: %d without an Error body giving the status and saying what was wrong: %q", req.Method, req.URL.Path, resp.StatusCode, body)
		return
	}
	if kinds := readmeErrorKinds(t); !kinds[e.Error] {
		t.Errorf("%s %s: error kind %q is not in the README's error table", req.Method, req.URL.Path, e.Error)
	}
	if e.RequestId == nil || *e.RequestId != resp.Header.Get("X-Request-Id") {
		t.Errorf("%s %s: request_id %v, want the X-Request-Id header's %q", req.Method, req.URL.Path, e.RequestId, resp.Header.Get("X-Request-Id"))
	}
}

// readmeErrorKinds are the kinds the README's error table lists (rows
// starting with | `kind` |, under the heading "### Error kinds").
var readmeErrorKinds = func() func(testing.TB) map[string]bool {
	var once sync.Once
	kinds := map[string]bool{}
	return func(t testing.TB) map[string]bool {
		once.Do(func() {
			raw, err := os.ReadFile("../README.md")
			if err != nil {
				t.Fatal(err)
			}
			_, table, _ := strings.Cut(string(raw), "### Error kinds")
			for line := range strings.Lines(table) {
				if strings.HasPrefix(line, "#") {
					break
				}
				if m := errorKindRow.FindStringSubmatch(line); m != nil {
					kinds[m[1]] = true
				}
			}
		})
		return kinds
	}
}()

var errorKindRow = regexp.MustCompile("^\\| `([a-z_]+)` \\|")

// httpClient returns a client whose responses are all validated against the spec.
func httpClient(t testing.TB) *http.Client {
	return &http.Client{Transport: validatingTransport{t: t}, Timeout: 30 * time.Second}
}

// client returns the generated client for s, validating every response.
func (s *runningServer) client(t testing.TB) *gen.ClientWithResponses {
	t.Helper()
	c, err := gen.NewClientWithResponses(s.URL+server.APIBasePath, gen.WithHTTPClient(httpClient(t)))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// withAuth returns a request editor sending the credential and workspace the
// way Blaxel's SDKs do (header name given) or as plain Authorization.
func withAuth(header, credential, workspace string) gen.RequestEditorFn {
	return func(_ context.Context, req *http.Request) error {
		if credential != "" {
			req.Header.Set(header, "Bearer "+credential)
		}
		if workspace != "" {
			req.Header.Set(server.WorkspaceHeader, workspace)
		}
		return nil
	}
}

func TestCLI(t *testing.T) {
	storetest.EachDialect(t, func(t *testing.T, dialect string) {
		e := newEnv(t, dialect)
		if r := runCLI(t, e.args("migrate")...); r.code != 0 || !strings.Contains(r.stderr, "schema up to date") {
			t.Fatalf("migrate: %+v", r)
		}
		if got := mustCLI(t, e.args("workspace", "create", "acme", "--admin-sub", "u1", "--admin-email", "a@acme.test", "--display-name", "Acme Inc")...); got != "acme" {
			t.Errorf("workspace create printed %q, want the name", got)
		}
		r := runCLI(t, e.args("workspace", "create", "acme", "--admin-sub", "u1", "--admin-email", "a@acme.test")...)
		if r.code == 0 || !strings.Contains(r.stderr, "already exists") || strings.Count(r.stderr, "\n") != 1 {
			t.Errorf("duplicate workspace: got %+v, want one-line error", r)
		}
		key := mustCLI(t, e.args("apikey", "create", "--workspace", "acme", "--sub", "u1")...)
		if !strings.HasPrefix(key, store.APIKeyPrefix) || strings.ContainsAny(key, " \n") {
			t.Errorf("apikey create printed %q, want the key alone", key)
		}
		tok := mustCLI(t, "token", "--data-dir", e.dataDir, "--sub", "u1", "--email", "a@acme.test", "--scope", "workspaces:invite", "--ttl", "5m")
		if strings.Count(tok, ".") != 2 {
			t.Errorf("token printed %q, want a JWT alone", tok)
		}

		s := e.start()
		resp, err := s.client(t).InviteWorkspaceUserWithResponse(context.Background(), nil,
			gen.InviteWorkspaceUserJSONRequestBody{Email: ptr("x@y.test")}, withAuth("Authorization", tok, "acme"))
		if err != nil || resp.StatusCode() != 200 {
			t.Fatalf("invite with CLI token: %v %d %s", err, resp.StatusCode(), resp.Body)
		}
		resp, err = s.client(t).InviteWorkspaceUserWithResponse(context.Background(), nil,
			gen.InviteWorkspaceUserJSONRequestBody{Email: ptr("y@y.test")}, withAuth("X-Blaxel-Authorization", key, ""))
		if err != nil || resp.StatusCode() != 200 {
			t.Fatalf("invite with CLI key: %v %d %s", err, resp.StatusCode(), resp.Body)
		}
		mustCLI(t, e.args("apikey", "revoke", key)...)
		resp, _ = s.client(t).InviteWorkspaceUserWithResponse(context.Background(), nil,
			gen.InviteWorkspaceUserJSONRequestBody{Email: ptr("z@y.test")}, withAuth("X-Blaxel-Authorization", key, ""))
		if resp.StatusCode() != 401 {
			t.Errorf("revoked key: got %d, want 401", resp.StatusCode())
		}
	})
	t.Run("Errors", func(t *testing.T) {
		for _, args := range [][]string{
			{"serve", "--no-such-flag"},
			{"serve", "--db", "postgres://nobody@127.0.0.1:1/x?connect_timeout=2", "--data-dir", t.TempDir()},
			{"serve", "--log-level", "loud", "--data-dir", t.TempDir()},
			{"workspace", "create", "--data-dir", t.TempDir()},
			{"apikey", "create", "--data-dir", t.TempDir()},
			{"token"},
			{"nonsense"},
		} {
			r := runCLI(t, args...)
			lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
			if last := lines[len(lines)-1]; r.code == 0 || !strings.HasPrefix(last, "error: ") || strings.Count(r.stderr, "\nerror: ")+strings.Count(r.stderr[:min(len(r.stderr), 7)], "error: ") != 1 || strings.Contains(r.stderr, "goroutine") {
				t.Errorf("%v: got exit %d, stderr %q; want non-zero and a one-line error", args, r.code, r.stderr)
			}
		}
	})
	t.Run("Env", func(t *testing.T) {
		dir := t.TempDir()
		t.Setenv("CONTROLPLANE_DATA_DIR", dir)
		mustCLI(t, "workspace", "create", "envws", "--admin-sub", "u", "--admin-email", "u@e.test")
		if _, err := os.Stat(filepath.Join(dir, "controlplane.db")); err != nil {
			t.Errorf("CONTROLPLANE_DATA_DIR not honoured: %v", err)
		}
	})
}

func ptr[T any](v T) *T { return &v }
