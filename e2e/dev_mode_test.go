package e2e_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"

	"github.com/membership-api/controlplane/internal/cli"
	"github.com/membership-api/controlplane/server"
)

// devServer is a `serve --dev` started by startDev: what it printed on
// stdout (BL_API_URL, BL_API_KEY, …) and its logs.
type devServer struct {
	*runningServer
	vars map[string]string
}

var printedVar = regexp.MustCompile(`^([A-Z_]+)=(\S+)$`)

// startDev runs `serve --dev` with args on a free port until the test ends,
// and waits for its printed variables.
func startDev(t *testing.T, args ...string) *devServer {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	outR, outW := io.Pipe()
	errR, errW := io.Pipe()
	s := &devServer{runningServer: &runningServer{cancel: cancel, done: make(chan int, 1), logs: &syncBuffer{}}, vars: map[string]string{}}
	go func() {
		code := cli.Run(ctx, append([]string{"serve", "--dev", "--addr", "127.0.0.1:0"}, args...), outW, errW)
		outW.Close()
		errW.Close()
		s.done <- code
	}()
	go func() {
		sc := bufio.NewScanner(errR)
		for sc.Scan() {
			s.logs.WriteString(sc.Text() + "\n")
		}
	}()
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(outR)
		for sc.Scan() {
			if m := printedVar.FindStringSubmatch(sc.Text()); m != nil {
				s.vars[m[1]] = m[2]
				if m[1] == "CONTROLPLANE_DEV_URL" {
					close(ready)
				}
			}
		}
	}()
	select {
	case <-ready:
	case code := <-s.done:
		t.Fatalf("serve --dev exited with %d:\n%s", code, s.logs.String())
	case <-time.After(30 * time.Second):
		t.Fatalf("serve --dev did not start:\n%s", s.logs.String())
	}
	s.URL = strings.TrimSuffix(s.vars["BL_API_URL"], server.APIBasePath)
	t.Cleanup(s.stop)
	return s
}

// devRouter routes requests by openapi/dev.yml.
var devRouter = sync.OnceValues(func() (routers.Router, error) {
	doc, err := server.LoadDevSpec(context.Background())
	if err != nil {
		return nil, err
	}
	return gorillamux.NewRouter(doc)
})

// devCall calls a dev route and checks the answer against openapi/dev.yml
// (declared status, body schema; errors are the API's Error).
func devCall(t *testing.T, s *devServer, method, path, body string, into any) int {
	t.Helper()
	req, err := http.NewRequestWithContext(context.Background(), method, s.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	router, err := devRouter()
	if err != nil {
		t.Fatal(err)
	}
	route, params, err := router.FindRoute(req)
	if err != nil {
		t.Fatalf("%s %s is not in openapi/dev.yml: %v", method, path, err)
	}
	input := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route},
		Status:                 resp.StatusCode, Header: resp.Header, Body: io.NopCloser(bytes.NewReader(raw)),
		Options: &openapi3filter.Options{IncludeResponseStatus: true},
	}
	if err := openapi3filter.ValidateResponse(context.Background(), input); err != nil {
		t.Errorf("%s %s: %d does not match openapi/dev.yml: %v\n%s", method, path, resp.StatusCode, err, raw)
	}
	if resp.StatusCode >= 400 {
		checkErrorBody(t, req, resp, raw)
	}
	if into != nil && resp.StatusCode < 300 {
		if err := json.Unmarshal(raw, into); err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
	}
	return resp.StatusCode
}

type devEmails struct {
	Emails []server.DevEmail `json:"emails"`
}

type devClock struct {
	Now           time.Time `json:"now"`
	OffsetSeconds int64     `json:"offsetSeconds"`
}

// apiCall calls the API with a credential, every answer validated against
// openapi/controlplane.yml.
func apiCall(t *testing.T, s *devServer, method, path string, header http.Header, body string, into any) int {
	t.Helper()
	req, err := http.NewRequestWithContext(context.Background(), method, s.vars["BL_API_URL"]+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header = header.Clone()
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := httpClient(t).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	if into != nil && resp.StatusCode < 300 {
		if err := json.Unmarshal(raw, into); err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
	}
	return resp.StatusCode
}

func keyHeader(key string) http.Header {
	return http.Header{"X-Blaxel-Authorization": {"Bearer " + key}}
}

func tokenHeader(token, workspace string) http.Header {
	h := http.Header{"Authorization": {"Bearer " + token}}
	if workspace != "" {
		h.Set("X-Blaxel-Workspace", workspace)
	}
	return h
}

// TestDevMode_Walk: serve --dev --fixtures, over HTTP alone: the fixtures'
// keys work, an invite's email is in the mailbox with its accept link,
// the invitee accepts, the clock moves past a second invitation's expiry,
// and a reset brings the fixtures back (or an empty database). Every dev
// answer is checked against openapi/dev.yml, every API answer against the
// contract.
func TestDevMode_Walk(t *testing.T) {
	t.Parallel()
	s := startDev(t, "--fixtures", filepath.Join("testdata", "dev", "fixtures.yml"))
	if s.vars["BL_WORKSPACE"] != "acme" || s.vars["BL_API_KEY"] != "bl_alice_fixture_key_0001" {
		t.Fatalf("printed %v, want the first workspace and its admin's fixture key", s.vars)
	}
	alice := keyHeader(s.vars["BL_API_KEY"])
	var users []map[string]any
	if code := apiCall(t, s, "GET", "/users", alice, "", &users); code != 200 || len(users) != 3 {
		t.Fatalf("the fixtures' users: %d %v, want alice, bob and carol's invitation", code, users)
	}
	// The fixture service account's keys work too.
	for _, key := range []string{"bl_ci_fixture_key_000001", "bl_ci_weekly_key_0000001"} {
		if code := apiCall(t, s, "GET", "/users", keyHeader(key), "", nil); code != 200 {
			t.Fatalf("the service account's fixture key %s: %d", key, code)
		}
	}

	if code := apiCall(t, s, "POST", "/users", alice, `{"email":"dave@example.com"}`, nil); code != 200 {
		t.Fatalf("invite: %d", code)
	}
	var box devEmails
	devCall(t, s, "GET", "/_dev/mailbox?to=DAVE@example.com", "", &box)
	if len(box.Emails) != 1 || box.Emails[0].Workspace != "acme" || !strings.Contains(box.Emails[0].Text, box.Emails[0].AcceptURL) {
		t.Fatalf("dave's mailbox: %+v", box)
	}
	var one server.DevEmail
	if code := devCall(t, s, "GET", fmt.Sprintf("/_dev/mailbox/%d", box.Emails[0].ID), "", &one); code != 200 || one.To != "dave@example.com" {
		t.Fatalf("one email: %d %+v", code, one)
	}
	if code := devCall(t, s, "GET", "/_dev/mailbox/999999", "", nil); code != 404 {
		t.Fatalf("an unknown email: %d, want 404", code)
	}
	var tok struct {
		Token string `json:"token"`
	}
	devCall(t, s, "POST", "/_dev/tokens", `{"sub":"dave","email":"dave@example.com","scopes":["workspaces:accept"]}`, &tok)
	if code := apiCall(t, s, "POST", "/workspaces/acme/join", tokenHeader(tok.Token, ""), "", nil); code != 200 {
		t.Fatalf("dave accepts: %d", code)
	}

	// The clock: carol's fixture invitation (7 days) expires after 8.
	var clock devClock
	devCall(t, s, "GET", "/_dev/clock", "", &clock)
	if clock.OffsetSeconds != 0 {
		t.Fatalf("a fresh clock is %ds ahead", clock.OffsetSeconds)
	}
	devCall(t, s, "POST", "/_dev/clock/advance", `{"seconds":691200}`, &clock)
	if clock.OffsetSeconds != 691200 {
		t.Fatalf("after advancing 8 days: offset %d", clock.OffsetSeconds)
	}
	if code := devCall(t, s, "PUT", "/_dev/clock", `{"now":"2001-01-01T00:00:00Z"}`, nil); code != 409 {
		t.Fatalf("moving the clock back: %d, want 409", code)
	}
	if code := devCall(t, s, "POST", "/_dev/clock/advance", `{"seconds":-5}`, nil); code != 400 {
		t.Fatalf("a negative advance: %d, want 400", code)
	}
	users = nil
	apiCall(t, s, "GET", "/users", alice, "", &users)
	expired := false
	for _, u := range users {
		if u["email"] == "carol@example.com" {
			expired = u["expired"] == true
		}
	}
	if !expired {
		t.Fatalf("after 8 days carol's invitation is not expired: %v", users)
	}
	// The 7-day key has expired with the clock, the other has not.
	if code := apiCall(t, s, "GET", "/users", keyHeader("bl_ci_weekly_key_0000001"), "", nil); code != 401 {
		t.Fatalf("a 7-day key 8 days later: %d, want 401", code)
	}
	if code := apiCall(t, s, "GET", "/users", keyHeader("bl_ci_fixture_key_000001"), "", nil); code != 200 {
		t.Fatalf("a key without expiry 8 days later: %d, want 200", code)
	}
	// The token dave got before the move has expired with it.
	if code := apiCall(t, s, "GET", "/profile/invitations", tokenHeader(tok.Token, ""), "", nil); code != 401 {
		t.Fatalf("a token older than its TTL by the clock: %d, want 401", code)
	}
	carol := struct {
		Token string `json:"token"`
	}{}
	devCall(t, s, "POST", "/_dev/tokens", `{"sub":"carol","email":"carol@example.com"}`, &carol)
	if code := apiCall(t, s, "POST", "/workspaces/acme/join", tokenHeader(carol.Token, ""), "", nil); code != 404 {
		t.Fatalf("accepting an expired invitation: %d, want 404", code)
	}

	// Reset: the fixtures again, an empty mailbox, the real time.
	var reset struct {
		Fixtures bool `json:"fixtures"`
	}
	devCall(t, s, "POST", "/_dev/reset", "", &reset)
	if !reset.Fixtures {
		t.Fatal("reset did not load the fixtures")
	}
	users = nil
	apiCall(t, s, "GET", "/users", alice, "", &users)
	if len(users) != 3 {
		t.Fatalf("after reset: %v, want the fixtures' three", users)
	}
	box = devEmails{}
	devCall(t, s, "GET", "/_dev/mailbox", "", &box)
	devCall(t, s, "GET", "/_dev/clock", "", &clock)
	if len(box.Emails) != 0 || clock.OffsetSeconds != 0 {
		t.Fatalf("after reset: %d emails, clock %ds ahead", len(box.Emails), clock.OffsetSeconds)
	}
	devCall(t, s, "POST", "/_dev/reset?fixtures=false", "", &reset)
	if reset.Fixtures {
		t.Fatal("reset?fixtures=false loaded the fixtures")
	}
	if code := apiCall(t, s, "GET", "/users", alice, "", nil); code != 401 {
		t.Fatalf("the fixture key after an empty reset: %d, want 401", code)
	}
	if code := devCall(t, s, "DELETE", "/_dev/mailbox", "", nil); code != 204 {
		t.Fatalf("clear the mailbox: %d", code)
	}
	// The dev document is served beside the routes.
	req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, s.URL+server.DevContractPath, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("%s: %d", server.DevContractPath, resp.StatusCode)
	}
}

// TestDevMode_RoutesAbsentWithoutDev: a server without --dev has no dev
// route, not even its document: each answers the API's JSON 404.
func TestDevMode_RoutesAbsentWithoutDev(t *testing.T) {
	t.Parallel()
	f := newTenant(t, "sqlite")
	for _, r := range []struct{ method, path string }{
		{"GET", "/_dev/mailbox"}, {"DELETE", "/_dev/mailbox"}, {"GET", "/_dev/mailbox/1"}, {"GET", "/_dev/clock"},
		{"PUT", "/_dev/clock"}, {"POST", "/_dev/clock/advance"}, {"POST", "/_dev/tokens"}, {"POST", "/_dev/reset"}, {"GET", "/_dev/openapi.yml"},
	} {
		resp, body := f.do(t, r.method, r.path, nil, `{}`)
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("%s %s without --dev: %d %s, want 404", r.method, r.path, resp.StatusCode, body)
		}
	}
}

// TestDevMode_Refusals: serve --dev refuses an address other machines
// reach and PostgreSQL, and --fixtures needs --dev; bad fixtures are
// refused with their line, and the database is left as it was.
func TestDevMode_Refusals(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"serve", "--dev", "--addr", "0.0.0.0:0"}, "loopback only"},
		{[]string{"serve", "--dev", "--addr", ":0"}, "not on every interface"},
		{[]string{"serve", "--dev", "--addr", "127.0.0.1:0", "--db", "postgres://u@127.0.0.1:5432/x"}, "SQLite only"},
		{[]string{"serve", "--fixtures", "x.yml"}, "--fixtures needs --dev"},
	} {
		r := runCLI(t, append(c.args, "--data-dir", t.TempDir())...)
		if r.code == 0 || !strings.Contains(r.stderr, c.want) {
			t.Errorf("%v: exit %d, stderr %q; want a refusal saying %q", c.args, r.code, r.stderr, c.want)
		}
	}

	good, err := os.ReadFile(filepath.Join("testdata", "dev", "fixtures.yml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ name, from, to, want string }{
		{"unknown role", "role: member}\n    invitations", "role: owner}\n    invitations", `line 8: unknown role "owner"`},
		{"duplicate workspace", "name: globex", "name: acme", `line 21: workspace "acme" is declared twice (first at line 4)`},
		{"bad email", "carol@example.com", "carol@", `line 10: bad email "carol@"`},
		{"unknown key", "displayName: Acme Inc", "displayname: Acme Inc", `line 5: unknown key "displayname"`},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			file := filepath.Join(dir, "fixtures.yml")
			if err := os.WriteFile(file, []byte(strings.Replace(string(good), c.from, c.to, 1)), 0o600); err != nil {
				t.Fatal(err)
			}
			// A database with a workspace in it, which the refusal must leave.
			mustCLI(t, "workspace", "create", "kept", "--admin-sub", "k", "--admin-email", "k@kept.test", "--data-dir", dir)
			r := runCLI(t, "serve", "--dev", "--addr", "127.0.0.1:0", "--data-dir", dir, "--fixtures", file)
			if r.code == 0 || !strings.Contains(r.stderr, c.want) {
				t.Fatalf("exit %d, stderr %q; want a refusal saying %q", r.code, r.stderr, c.want)
			}
			if out := mustCLI(t, "workspace", "list", "--data-dir", dir); !strings.Contains(out, "kept") {
				t.Fatalf("after refused fixtures the database lost its workspace: %q", out)
			}
		})
	}
}

// TestDevMode_WebhookRetriesFollowTheClock: a dev server whose webhook
// retries wait an hour at least; the receiver refuses the first invitation
// event. The retry does not come while real seconds pass, and comes once
// the dev clock is moved past its hour (openapi/dev.yml: webhook retries
// fall due by the server's clock).
func TestDevMode_WebhookRetriesFollowTheClock(t *testing.T) {
	t.Parallel()
	var refused, delivered atomic.Int32
	rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if !strings.Contains(string(body), "invitation.created") {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		if refused.Add(1) == 1 {
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		delivered.Add(1)
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(rcv.Close)
	s := startDev(t, "--fixtures", filepath.Join("testdata", "dev", "fixtures.yml"), "--webhooks-allow-loopback",
		"--webhook-backoff-base", "1h", "--webhook-backoff-max", "2h")
	alice := keyHeader(s.vars["BL_API_KEY"])
	if code := apiCall(t, s, "POST", "/webhooks", alice, `{"url":"`+rcv.URL+`/hook","eventTypes":["invitation.created"]}`, nil); code != 201 {
		t.Fatalf("create the webhook endpoint: %d", code)
	}
	if code := apiCall(t, s, "POST", "/users", alice, `{"email":"erin@example.com"}`, nil); code != 200 {
		t.Fatalf("invite: %d", code)
	}
	deadline := time.Now().Add(30 * time.Second)
	for refused.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if refused.Load() != 1 {
		t.Fatalf("the first attempt never came (%d)", refused.Load())
	}
	// Several polls (250 ms each) of real time: the retry waits its hour.
	time.Sleep(1500 * time.Millisecond)
	if n := refused.Load() + delivered.Load(); n != 1 {
		t.Fatalf("%d attempts before the clock moved, want 1 (the retry waits at least 30 min)", n)
	}
	var clock devClock
	devCall(t, s, "POST", "/_dev/clock/advance", `{"seconds":10800}`, &clock)
	deadline = time.Now().Add(30 * time.Second)
	for delivered.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if delivered.Load() != 1 {
		t.Fatalf("after moving the clock 3 h: the retry was not delivered (attempts: %d refused, %d delivered)", refused.Load(), delivered.Load())
	}
}
