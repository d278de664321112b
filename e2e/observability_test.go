package e2e_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/membership-api/controlplane/internal/cli"
)

// scrape is one read of /metrics: every sample by its series, e.g.
// `controlplane_auth_failures_total{reason="missing"}` (labels as written,
// in the order written; absent series read 0).
type scrape map[string]float64

var (
	metricsLine = regexp.MustCompile(`msg="metrics listening" addr=(http://\S+)`)
	sampleLine  = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{[^}]*\})?) (\S+)$`)
	labelValue  = regexp.MustCompile(`="((?:[^"\\]|\\.)*)"`)
)

// metricsURL is where the server s serves /metrics (logged at start).
func metricsURL(t *testing.T, s *runningServer) string {
	t.Helper()
	m := metricsLine.FindStringSubmatch(s.logs.String())
	if m == nil {
		t.Fatalf("no metrics listener logged:\n%s", s.logs.String())
	}
	return m[1]
}

func scrapeMetrics(t *testing.T, url string) scrape {
	t.Helper()
	resp, err := httpGet(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET %s: %d %s", url, resp.StatusCode, body)
	}
	s := scrape{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		m := sampleLine.FindStringSubmatch(line)
		if m == nil {
			t.Fatalf("not a sample line: %q", line)
		}
		v, err := strconv.ParseFloat(m[2], 64)
		if err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		s[m[1]] = v
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return s
}

// labelValues returns every label value of the scrape.
func (s scrape) labelValues() []string {
	var values []string
	for series := range s {
		for _, m := range labelValue.FindAllStringSubmatch(series, -1) {
			values = append(values, m[1])
		}
	}
	return values
}

// TestMetrics_Walk scrapes /metrics before and after a walk through the
// API and checks that each series moved as the walk should have moved it,
// and that no label value is an email, a workspace, a sub, a credential or
// a raw path.
func TestMetrics_Walk(t *testing.T) {
	t.Parallel()
	parallelDialects(t, func(t *testing.T, dialect string) {
		f := newFixture(t, dialect, "--metrics-addr", "127.0.0.1:0", "--rate-limit-failed-auth", "2/h")
		url := metricsURL(t, f.srv)
		before := scrapeMetrics(t, url)
		admin := f.token(f.adminSub, f.adminEmail, "workspaces:invite")
		noScope := f.token(f.adminSub, f.adminEmail, "workspaces:list")
		expired := f.devKeySign(t, claimsFor(f.adminSub, "workspaces:invite", time.Now().Add(-time.Hour)))

		status := func(resp *http.Response, _ []byte) int { return resp.StatusCode }
		checks := []struct {
			what         string
			status, want int
		}{
			{"invite", status(f.do(t, "POST", "/v0/users", f.bearer(admin), `{"email":"Walk@Example.com"}`)), 200},
			{"invite with an API key", status(f.do(t, "POST", "/v0/users", with(f.bearer(f.adminKey), "X-Blaxel-Workspace", ""), `{"email":"key@example.com"}`)), 200},
			{"no credential", status(f.do(t, "GET", "/v0/users", with(f.bearer(admin), "Authorization", ""), "")), 401},
			{"token without the scope", status(f.do(t, "POST", "/v0/users", f.bearer(noScope), `{"email":"x@example.com"}`)), 403},
			{"remove by email", status(f.do(t, "DELETE", "/v0/users/walk@example.com", f.bearer(admin), "")), 403},
			{"unknown route", status(f.do(t, "GET", "/v0/no/such/route", f.bearer(admin), "")), 404},
			// Last: two refused credentials spend the failed-auth quota
			// of 2/h, which then closes this address.
			{"expired token", status(f.do(t, "GET", "/v0/users", f.bearer(expired), "")), 401},
			{"revoked API key", status(f.do(t, "GET", "/v0/users", f.bearer(f.revokedKey), "")), 401},
			{"after the failed-auth quota", status(f.do(t, "GET", "/v0/users", f.bearer(admin), "")), 429},
		}
		for _, c := range checks {
			if c.status != c.want {
				t.Fatalf("%s: got %d, want %d", c.what, c.status, c.want)
			}
		}

		// The dispatcher sends the two emails in the background.
		var after scrape
		deadline := time.Now().Add(20 * time.Second)
		for {
			after = scrapeMetrics(t, url)
			if after[`controlplane_mails_total{outcome="sent"}`]-before[`controlplane_mails_total{outcome="sent"}`] >= 2 || time.Now().After(deadline) {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		// Prometheus' text format writes labels in name order.
		requests := func(operation, method string, code int) string {
			return fmt.Sprintf("controlplane_http_request_duration_seconds_count{code=\"%d\",method=\"%s\",operation=\"%s\"}", code, method, operation)
		}
		moved := func(series string, want float64) {
			t.Helper()
			if got := after[series] - before[series]; got != want {
				t.Errorf("%s moved by %v, want %v", series, got, want)
			}
		}
		moved(requests("InviteWorkspaceUser", "POST", 200), 2)
		moved(requests("InviteWorkspaceUser", "POST", 403), 1)
		moved(requests("ListWorkspaceUsers", "GET", 401), 3)
		moved(requests("ListWorkspaceUsers", "GET", 429), 1)
		moved(requests("RemoveWorkspaceUser", "DELETE", 403), 1)
		moved(requests("unmatched", "GET", 404), 1)
		moved(`controlplane_auth_failures_total{reason="missing"}`, 1)
		moved(`controlplane_auth_failures_total{reason="expired_token"}`, 1)
		moved(`controlplane_auth_failures_total{reason="unknown_api_key"}`, 1)
		moved(`controlplane_auth_failures_total{reason="insufficient_scope"}`, 2)
		moved(`controlplane_auth_failures_total{reason="invalid_token"}`, 0)
		moved(`controlplane_rate_limited_total{quota="failed-auth"}`, 1)
		moved(`controlplane_rate_limited_total{quota="caller"}`, 0)
		moved(`controlplane_mails_total{outcome="sent"}`, 2)
		moved(`controlplane_mails_total{outcome="failed"}`, 0)
		if got := after["controlplane_invite_batch_size_sum"] - before["controlplane_invite_batch_size_sum"]; got != 2 {
			t.Errorf("invite batches settled %v invites, want 2", got)
		}
		if dialect == "sqlite" {
			for _, s := range []string{"controlplane_sqlite_commit_duration_seconds_count", "controlplane_sqlite_fsync_duration_seconds_count"} {
				if after[s] <= before[s] {
					t.Errorf("%s: %v then %v, want it to grow with the invites", s, before[s], after[s])
				}
			}
		}
		for _, s := range []string{
			`go_sql_open_connections{db_name="` + map[string]string{"sqlite": "sqlite_read", "postgres": "postgres"}[dialect] + `"}`,
			"controlplane_outbox_pending", "controlplane_outbox_failed", "controlplane_outbox_oldest_pending_age_seconds",
			"go_goroutines", "process_resident_memory_bytes",
		} {
			if _, ok := after[s]; !ok {
				t.Errorf("%s: missing from the scrape", s)
			}
		}
		build := 0
		for s, v := range after {
			if strings.HasPrefix(s, "controlplane_build_info{") && strings.Contains(s, `go_version="go1.`) && v == 1 {
				build++
			}
		}
		if build != 1 {
			t.Errorf("controlplane_build_info: %d series with a Go version and value 1, want 1", build)
		}

		secrets := []string{admin, noScope, expired, f.adminKey, f.revokedKey}
		for _, v := range after.labelValues() {
			for _, bad := range []string{"@", f.ws, f.adminSub, "walk", "Bearer", "bl_", "/v0/users/"} {
				if strings.Contains(strings.ToLower(v), strings.ToLower(bad)) {
					t.Errorf("label value %q contains %q (an email, workspace, sub, credential or raw path)", v, bad)
				}
			}
			for _, s := range secrets {
				if strings.Contains(v, s) {
					t.Errorf("label value %q is a credential", v)
				}
			}
		}
	})
}

// TestMetrics_OutboxGauges: with no dispatcher the queued email waits, and
// the outbox gauges say so.
func TestMetrics_OutboxGauges(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "sqlite", "--metrics-addr", "127.0.0.1:0", "--mail-dispatcher=false")
	admin := f.token(f.adminSub, f.adminEmail, "workspaces:invite")
	for _, email := range []string{"a@example.com", "b@example.com"} {
		if resp, body := f.do(t, "POST", "/v0/users", f.bearer(admin), `{"email":"`+email+`"}`); resp.StatusCode != 200 {
			t.Fatalf("invite: %d %s", resp.StatusCode, body)
		}
	}
	time.Sleep(1100 * time.Millisecond) // an age of at least a second
	s := scrapeMetrics(t, metricsURL(t, f.srv))
	if s["controlplane_outbox_pending"] != 2 || s["controlplane_outbox_failed"] != 0 {
		t.Errorf("outbox_pending %v, outbox_failed %v; want 2, 0", s["controlplane_outbox_pending"], s["controlplane_outbox_failed"])
	}
	if age := s["controlplane_outbox_oldest_pending_age_seconds"]; age < 1 || age > 60 {
		t.Errorf("outbox_oldest_pending_age_seconds %v, want between 1 and 60", age)
	}
}

// TestMetrics_OffByDefault: without --metrics-addr nothing listens for
// metrics, and the API does not serve them either.
func TestMetrics_OffByDefault(t *testing.T) {
	t.Parallel()
	f := newTenant(t, "sqlite")
	if metricsLine.MatchString(f.srv.logs.String()) {
		t.Errorf("a metrics listener started without --metrics-addr:\n%s", f.srv.logs.String())
	}
	for _, path := range []string{"/metrics", "/v0/metrics"} {
		if resp, _ := f.do(t, "GET", path, nil, ""); resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s on the API listener: %d, want 404", path, resp.StatusCode)
		}
	}
}

// TestRequestID: a client's ID comes back on the answer, in the error body
// and on the request's log lines; an ID that is too long or has a control
// character is replaced; without one the server makes one. No credential
// reaches the log.
func TestRequestID(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "sqlite", "--mail-dispatcher=false") // the dispatcher logs recipients; this test looks for the invitee's email in request lines
	admin := f.token(f.adminSub, f.adminEmail, "workspaces:invite")
	generated := regexp.MustCompile(`^[0-9a-f]{32}$`)

	type answer struct {
		header, body string
	}
	send := func(id, method, path, cred, body string) answer {
		t.Helper()
		h := f.bearer(cred)
		if id != "" {
			h.Set("X-Request-Id", id)
		}
		resp, b := f.do(t, method, path, h, body)
		var e struct {
			RequestID string `json:"request_id"`
		}
		if resp.StatusCode >= 400 {
			if err := json.Unmarshal(b, &e); err != nil {
				t.Fatalf("%d without an Error body: %s", resp.StatusCode, b)
			}
		}
		return answer{resp.Header.Get("X-Request-Id"), e.RequestID}
	}

	given := "obs-test-1 (client) #42"
	if a := send(given, "POST", "/v0/users", admin, `{"email":"rid@example.com"}`); a.header != given {
		t.Errorf("given ID: answer has %q, want %q", a.header, given)
	}
	given401 := strings.Repeat("x", 128)
	if a := send(given401, "GET", "/v0/users", "not-a-token", ""); a.header != given401 || a.body != given401 {
		t.Errorf("given 128-character ID on a 401: header %q, body %q; want it in both", a.header, a.body)
	}
	for _, bad := range []string{strings.Repeat("y", 129), "tab\there", "é-not-ascii"} {
		a := send(bad, "GET", "/v0/no/such/route", admin, "")
		if !generated.MatchString(a.header) || a.body != a.header {
			t.Errorf("bad ID %q: header %q, body %q; want a generated ID in both", bad, a.header, a.body)
		}
	}
	a, b := send("", "GET", "/v0/nothing", admin, ""), send("", "GET", "/v0/nothing", admin, "")
	if !generated.MatchString(a.header) || a.header == b.header || a.body != a.header {
		t.Errorf("no ID: got %q and %q (bodies %q, %q), want two different generated IDs, each in its body", a.header, b.header, a.body, b.body)
	}

	f.srv.stop() // flush the log
	logs := f.srv.logs.String()
	var access []string
	for line := range strings.SplitSeq(logs, "\n") {
		if strings.Contains(line, fmt.Sprintf("request_id=%q", given)) {
			access = append(access, line)
		}
	}
	if len(access) != 1 {
		t.Fatalf("log lines with the given ID: %q, want the access line", access)
	}
	for _, want := range []string{"msg=request", "operation=InviteWorkspaceUser", "method=POST", "route=/v0/users", "status=200",
		"latency=", "bytes=", "remote=127.0.0.1", "user_agent=", "sub=" + f.adminSub, "workspace=" + f.ws} {
		if !strings.Contains(access[0], want) {
			t.Errorf("access line %q lacks %q", access[0], want)
		}
	}
	if !strings.Contains(logs, "request_id="+given401+" operation=ListWorkspaceUsers") {
		t.Errorf("no access line for the 401 with its ID:\n%s", logs)
	}
	for _, secret := range []string{admin, "not-a-token", f.adminKey, "rid@example.com"} {
		if strings.Contains(logs, secret) {
			t.Errorf("the log holds %q", secret)
		}
	}
}

// TestLogFormat_JSON: --log-format json writes one JSON object per line,
// the access line with the same fields as text.
func TestLogFormat_JSON(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "sqlite")
	mustCLI(t, e.args("workspace", "create", "acme", "--admin-sub", "u-admin", "--admin-email", "admin@acme.test")...)
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	done := make(chan int, 1)
	go func() {
		code := cli.Run(ctx, e.args("serve", "--addr", "127.0.0.1:0", "--log-format", "json"), io.Discard, pw)
		pw.Close()
		done <- code
	}()
	next, drain := jsonLogLines(t, pr)
	if m := next("starting"); m["version"] == nil || m["revision"] == nil || m["go"] == nil {
		t.Errorf("start line %v lacks version, revision or go", m)
	}
	api := next("listening")["api"].(string)
	req, _ := http.NewRequestWithContext(context.Background(), "GET", api+"/users", nil)
	req.Header.Set("Authorization", "Bearer "+e.token("u-admin", "admin@acme.test", "workspaces:list"))
	req.Header.Set("X-Blaxel-Workspace", "acme")
	req.Header.Set("X-Request-Id", "json-1")
	resp, err := httpClient(t).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	m := next("request")
	want := map[string]any{"request_id": "json-1", "operation": "ListWorkspaceUsers", "method": "GET", "route": "/v0/users",
		"status": float64(200), "sub": "u-admin", "workspace": "acme", "remote": "127.0.0.1"}
	for k, v := range want {
		if m[k] != v {
			t.Errorf("access line %s = %v, want %v (line %v)", k, m[k], v, m)
		}
	}
	cancel()
	if code := <-done; code != 0 {
		t.Errorf("serve exited with %d", code)
	}
	drain()
}

// TestVersion: `version` and `--version` print the module version, the VCS
// revision and the Go version on one line; a bad --log-format is refused.
func TestVersion(t *testing.T) {
	t.Parallel()
	line := regexp.MustCompile(`^controlplane \S+ revision \S+( \(modified\))? go1\.\d+`)
	for _, args := range [][]string{{"version"}, {"--version"}} {
		if out := mustCLI(t, args...); !line.MatchString(out) {
			t.Errorf("%v: %q, want %s", args, out, line)
		}
	}
	r := runCLI(t, "serve", "--log-format", "xml", "--data-dir", t.TempDir())
	if r.code != 1 || !strings.Contains(r.stderr, "--log-format") {
		t.Errorf("serve --log-format xml: exit %d, %q; want 1 naming the flag", r.code, r.stderr)
	}
}

// jsonLogLines reads r as JSON log lines (--log-format json) in the
// background; next(msg) returns the next line with that msg, failing the
// test if a line is not JSON, the log ends first, or none comes in 30 s;
// drain waits for the log's end (the reader must not outlive the test).
func jsonLogLines(t *testing.T, r io.Reader) (next func(msg string) map[string]any, drain func()) {
	lines := make(chan map[string]any, 100)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			var m map[string]any
			if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
				t.Errorf("not a JSON line: %q", sc.Text())
				continue
			}
			lines <- m
		}
	}()
	drain = func() {
		for range lines {
		}
	}
	return func(msg string) map[string]any {
		t.Helper()
		for {
			select {
			case m, ok := <-lines:
				if !ok {
					t.Fatalf("log ended before %q", msg)
				}
				if m["msg"] == msg {
					return m
				}
			case <-time.After(30 * time.Second):
				t.Fatalf("no %q line", msg)
			}
		}
	}, drain
}
