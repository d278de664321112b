package e2e_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/input"
	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/membership-api/controlplane/server"
)

// chromiumPath finds a Chromium to drive. Locally the browser test skips
// without one; under CI=true (.ci/run installs Debian's chromium) a missing
// browser fails it, so CI cannot go green without running it.
func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("CI=true but no chromium on PATH: .ci/run installs it (apt-get install -y chromium)")
	}
	t.Skip("no chromium on PATH: the docs page browser test needs it (apt-get install -y chromium); under CI=true it is required")
	return ""
}

// pageWatch collects what a page reports: console errors, uncaught
// exceptions, browser log errors (CSP violations land there) and the URL of
// every request the page makes.
type pageWatch struct {
	mu       sync.Mutex
	problems []string
	urls     []string
	// responses are the "try it" answers to the API, by request ID.
	responses map[network.RequestID]*network.Response
	requests  map[network.RequestID]*network.Request
	order     []network.RequestID // requests in the order they were sent
}

func (w *pageWatch) listen(ev any) {
	w.mu.Lock()
	defer w.mu.Unlock()
	switch ev := ev.(type) {
	case *runtime.EventConsoleAPICalled:
		if ev.Type == runtime.ConsoleAPICalledTypeError || ev.Type == runtime.ConsoleAPICalledTypeAssert {
			var args []string
			for _, a := range ev.Args {
				args = append(args, string(a.Value)+a.Description)
			}
			w.problems = append(w.problems, "console."+string(ev.Type)+": "+strings.Join(args, " "))
		}
	case *runtime.EventExceptionThrown:
		w.problems = append(w.problems, fmt.Sprintf("exception: %s %s", ev.ExceptionDetails.Text, describe(ev.ExceptionDetails.Exception)))
	case *log.EventEntryAdded:
		if ev.Entry.Level == log.EntryLevelError {
			w.problems = append(w.problems, "log ("+string(ev.Entry.Source)+"): "+ev.Entry.Text+" "+ev.Entry.URL)
		}
	case *network.EventRequestWillBeSent:
		w.urls = append(w.urls, ev.Request.URL)
		if _, seen := w.requests[ev.RequestID]; !seen {
			w.order = append(w.order, ev.RequestID)
		}
		w.requests[ev.RequestID] = ev.Request
	case *network.EventResponseReceived:
		w.responses[ev.RequestID] = ev.Response
	}
}

func (w *pageWatch) snapshot() (problems, urls []string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.problems), slices.Clone(w.urls)
}

// openBrowser starts headless Chromium with one tab whose console, log and
// network the returned watch records from the tab's first request; the
// context bounds the whole test (90 s) and ends with it.
func openBrowser(t *testing.T, chromium string) (context.Context, *pageWatch) {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium),
		chromedp.NoSandbox, // tests and CI run as root, where Chromium's sandbox refuses to start
		chromedp.WindowSize(1280, 1000),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancelAlloc)
	ctx, cancelCtx := chromedp.NewContext(allocCtx)
	t.Cleanup(cancelCtx)
	ctx, cancel := context.WithTimeout(ctx, 180*time.Second)
	t.Cleanup(cancel)

	watch := &pageWatch{responses: map[network.RequestID]*network.Response{}, requests: map[network.RequestID]*network.Request{}}
	// Open the tab first, so the listener sees the page from its first request.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Listen(ctx, watch.listen); err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Call(ctx, log.Enable, cdp.Empty{}); err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Call(ctx, network.Enable, network.EnableParams{}); err != nil {
		t.Fatal(err)
	}
	return ctx, watch
}

// TestDocs_Browser loads /docs in headless Chromium from a running server:
// the page lists every operation of the YAML, reports no console error or
// CSP violation, fetches nothing from elsewhere (the assets are embedded),
// and "try it" with an API key in the Authorize dialog invites someone.
// Screenshots are kept in the test's artifact directory (go test -artifacts
// keeps them; docs.png is the rendered list, docs-try-it.png the answer).
func TestDocs_Browser(t *testing.T) {
	t.Parallel()
	chromium := chromiumPath(t)
	f := newTenant(t, "sqlite")
	ctx, watch := openBrowser(t, chromium)

	// Every operation of the YAML, as Swagger UI labels them.
	var want []string
	for path, item := range loadSpec(t).Paths.Map() {
		for method := range item.Operations() {
			want = append(want, method+" "+path)
		}
	}
	slices.Sort(want)

	if err := chromedp.Do(ctx,
		chromedp.Navigate(f.srv.URL+server.DocsPath),
		chromedp.WaitVisible(chromedp.CSS(`.opblock`)),
	); err != nil {
		t.Fatalf("docs page did not render: %v", err)
	}
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](fmt.Sprintf(`document.querySelectorAll('.opblock').length >= %d`, len(want)))); err != nil {
		t.Fatalf("docs page did not list %d operations: %v", len(want), err)
	}
	listed, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](`Array.from(document.querySelectorAll('.opblock')).map(b =>
		b.querySelector('.opblock-summary-method').textContent + ' ' +
		b.querySelector('.opblock-summary-path').getAttribute('data-path'))`))
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(listed)
	if !slices.Equal(listed, want) {
		t.Errorf("docs page lists\n%v\nwant every operation of the YAML\n%v", listed, want)
	}
	screenshot(ctx, t, "docs.png")

	// "Try it": the API key goes into the Authorize dialog (ApiKeyAuth, an
	// HTTP bearer scheme); the key names its workspace, so no
	// X-Blaxel-Workspace is needed, which the YAML does not declare and
	// Swagger UI could not send.
	const invitee = "browser-invitee@example.com"
	const op = `#operations-workspaces-InviteWorkspaceUser`
	const bearerInput = `input[aria-label="auth-bearer-value"]`
	const bearerScheme = `.auth-container:has(` + bearerInput + `)`
	runSteps(ctx, t, "try it", []browserStep{
		{"open Authorize", chromedp.Click(chromedp.CSS(`.auth-wrapper .authorize`))},
		{"find the bearer field", chromedp.WaitVisible(chromedp.CSS(bearerInput))},
		{"type the API key", chromedp.SendKeys(chromedp.CSS(bearerInput), f.adminKey)},
		{"authorize", chromedp.Click(chromedp.CSS(bearerScheme + ` button.authorize`))},
		// The field gives way to "Authorized" and a Logout button.
		{"see it authorized", chromedp.WaitVisible(chromedp.CSS(`.auth-container form button[aria-label="Remove authorization"]`))},
		{"close the dialog", chromedp.Click(chromedp.CSS(`.modal-ux .close-modal`))},
		{"open the invite operation", chromedp.Click(chromedp.CSS(op + ` .opblock-summary-control`))},
		{"try it out", chromedp.Click(chromedp.CSS(op + ` .try-out__btn`))},
		// Replace the example body by typing, as a person would (Swagger
		// UI keeps the body in React state, which a plain value set skips).
		{"focus the body", chromedp.Focus(chromedp.CSS(op + ` textarea.body-param__text`))},
		{"select the example", chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
			_, err := chromedp.Evaluate[any](`document.querySelector('`+op+` textarea.body-param__text').select()`)(ctx, t)
			return err
		})},
		{"type the body", chromedp.KeyEvent(`{"email": "` + invitee + `"}`)},
		{"execute", chromedp.Click(chromedp.CSS(op + ` .btn.execute`))},
		{"see the answer", chromedp.WaitVisible(chromedp.CSS(op + ` .live-responses-table tbody .response-col_status`))},
	})
	status, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(op+` .live-responses-table tbody .response-col_status`)))
	if err != nil {
		t.Fatal(err)
	}
	screenshot(ctx, t, "docs-try-it.png")
	if strings.TrimSpace(status) != "200" {
		t.Errorf("try it: got status %q, want 200", status)
	}
	checkTryItResponse(ctx, t, watch, http.MethodPost, f.srv.URL+server.APIBasePath+"/users", "Bearer bl_", "the API key as a bearer token")

	// The invitation is real: the API lists it.
	resp, body := f.do(t, http.MethodGet, "/v0/users", f.bearer(f.adminKey), "")
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), invitee) {
		t.Errorf("after try it, GET /v0/users: %d %s, want the invitee listed", resp.StatusCode, body)
	}

	watch.check(t, f.srv.URL)
}

// check reports what the page complained of, and any request it made
// elsewhere than base (the assets are embedded: the page works offline).
func (w *pageWatch) check(t *testing.T, base string) {
	t.Helper()
	problems, urls := w.snapshot()
	for _, p := range problems {
		t.Errorf("docs page reported: %s", p)
	}
	for _, u := range urls {
		if !strings.HasPrefix(u, base+"/") && !strings.HasPrefix(u, "data:") {
			t.Errorf("docs page fetched %s: everything must come from this server (embedded assets, works offline)", u)
		}
	}
	if len(urls) == 0 {
		t.Error("no requests seen: the network watch is broken")
	}
}

// browserStep is one thing a person does on the page, named for the
// failure message.
type browserStep struct {
	name string
	do   chromedp.Action[chromedp.Void]
}

// runSteps runs steps in order, each waiting up to 15 s for what it needs
// (the selectors it waits for are the synchronisation: no sleeps). On a
// failure it keeps a screenshot and the page's HTML in the test's artifact
// directory (docs-failed.png, docs-failed.html) and stops the test.
func runSteps(ctx context.Context, t *testing.T, what string, steps []browserStep) {
	t.Helper()
	for _, step := range steps {
		sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err := chromedp.Do(sctx, step.do)
		cancel()
		if err != nil {
			screenshot(ctx, t, "docs-failed.png")
			if html, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.documentElement.outerHTML`)); err == nil {
				_ = os.WriteFile(filepath.Join(t.ArtifactDir(), "docs-failed.html"), []byte(html), 0o644)
			}
			t.Fatalf("%s: %s: %v", what, step.name, err)
		}
	}
}

// insertText focuses the field and inserts text into it as one input event
// (CDP Input.insertText), as pasting does. SendKeys sends two key events a
// character: a JWT of ~600 characters took over 15 s to type while the rest
// of make test loaded the machine.
func insertText(sel chromedp.CSS, text string) chromedp.Action[chromedp.Void] {
	return chromedp.Steps(
		chromedp.Focus(sel),
		func(ctx context.Context, target *chromedp.Target) (chromedp.Void, error) {
			_, err := cdp.Call(ctx, target, input.InsertText, input.InsertTextParams{Text: text})
			return chromedp.Void{}, err
		},
	)
}

// TestDocs_BrowserAuthorize: the Authorize dialog lists the schemes and
// flows the YAML declares, and those a browser can run here work end to
// end, each listing the workspace's users (GET /users) with a 200:
//   - clientCredentials with a service account's client ID and secret:
//     Swagger UI posts them to the served contract's tokenUrl, which must
//     resolve to this server's token endpoint (/v0/oauth/token; the YAML's
//     /oauth/token would resolve to the host's root, server/contract.go),
//     and sends the access token it gets; the token names its workspace;
//   - a JWT in the bearer field (ApiKeyAuth), with the X-Blaxel-Workspace
//     field filled in, after a reload has forgotten the first authorization.
//
// The API key in that bearer field is TestDocs_Browser's. authorizationCode
// is listed but cannot run: this server has no authorization endpoint.
func TestDocs_BrowserAuthorize(t *testing.T) {
	t.Parallel()
	chromium := chromiumPath(t)
	f := newTenant(t, "sqlite")
	clientID, secret := f.createServiceAccount(t, f.srv.client(t), f.saEditor(f.adminSub, f.adminEmail), "docs-browser", "")
	ctx, watch := openBrowser(t, chromium)
	users := f.srv.URL + server.APIBasePath + "/users"

	const op = `#operations-workspaces-ListWorkspaceUsers`
	const clientIDInput = `#client_id_clientCredentials`
	const clientCredentials = `.auth-container:has(` + clientIDInput + `)`
	const bearerInput = `input[aria-label="auth-bearer-value"]`
	const bearerScheme = `.auth-container:has(` + bearerInput + `)`
	const status = op + ` .live-responses-table tbody .response-col_status`
	css := func(sel string) chromedp.CSS { return chromedp.CSS(sel) }
	openPage := browserStep{"open the docs page", chromedp.Steps(
		chromedp.Navigate(f.srv.URL+server.DocsPath),
		chromedp.WaitVisible(css(op)),
	)}
	openAuthorize := browserStep{"open Authorize", chromedp.Click(css(`.auth-wrapper .authorize`))}
	closeAuthorize := browserStep{"close the dialog", chromedp.Click(css(`.modal-ux .close-modal`))}
	tryIt := []browserStep{
		{"open the list operation", chromedp.Click(css(op + ` .opblock-summary-control`))},
		{"try it out", chromedp.Click(css(op + ` .try-out__btn`))},
	}
	execute := []browserStep{
		{"execute", chromedp.Click(css(op + ` .btn.execute`))},
		{"see the answer", chromedp.WaitVisible(css(status))},
	}
	renderedStatus := func(what string) {
		t.Helper()
		got, err := chromedp.Run(ctx, chromedp.Text(css(status)))
		if err != nil {
			t.Fatal(err)
		}
		if strings.TrimSpace(got) != "200" {
			screenshot(ctx, t, "docs-authorize-failed.png")
			t.Errorf("%s: GET /users rendered status %q, want 200", what, got)
		}
	}

	// The dialog lists every flow of the YAML's schemes.
	runSteps(ctx, t, "the Authorize dialog", []browserStep{openPage, openAuthorize,
		{"find the client ID field", chromedp.WaitVisible(css(clientIDInput))}})
	headings, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](
		`Array.from(document.querySelectorAll('.modal-ux .auth-container h4')).map(h => h.textContent.replace(/\s+/g, ' ').trim())`))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"OAuth2 (OAuth2, authorizationCode)", "OAuth2 (OAuth2, clientCredentials)", "ApiKeyAuth (http, Bearer)"} {
		if !slices.ContainsFunc(headings, func(h string) bool { return strings.HasPrefix(h, want) }) {
			t.Errorf("the Authorize dialog lists %q, want %q among them", headings, want)
		}
	}

	// Client credentials: no workspace header, the token names its workspace.
	runSteps(ctx, t, "client credentials", slices.Concat([]browserStep{
		{"type the client ID", insertText(css(clientIDInput), clientID)},
		{"type the secret", insertText(css(`#client_secret_clientCredentials`), secret)},
		{"authorize", chromedp.Click(css(clientCredentials + ` button[aria-label="Apply given OAuth2 credentials"]`))},
		// A failed token request shows an error instead, and times out here.
		seeAuthorized("(OAuth2, clientCredentials)"),
		closeAuthorize,
	}, tryIt, execute))
	renderedStatus("client credentials")
	screenshot(ctx, t, "docs-client-credentials.png")
	_, tokenAnswer, tokenBody := watch.latest(ctx, t, http.MethodPost, f.srv.URL+server.APIBasePath+"/oauth/token")
	var token struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.Unmarshal(tokenBody, &token); tokenAnswer.Status != http.StatusOK || err != nil || token.AccessToken == "" {
		t.Fatalf("token request: %d %s (%v), want 200 with an access token", tokenAnswer.Status, tokenBody, err)
	}
	checkTryItResponse(ctx, t, watch, http.MethodGet, users, "Bearer "+token.AccessToken, "the access token from the token endpoint")

	// A bearer JWT, after a reload: tokens typed into Authorize live in the
	// page's memory only, so the client credentials are gone.
	jwt := f.userToken(f.adminSub, f.adminEmail)
	runSteps(ctx, t, "bearer token", slices.Concat([]browserStep{
		openPage, openAuthorize,
		{"find the bearer field", chromedp.WaitVisible(css(bearerInput))},
		{"see the client credentials forgotten", chromedp.WaitVisible(css(clientIDInput))},
		{"type the token", insertText(css(bearerInput), jwt)},
		{"authorize", chromedp.Click(css(bearerScheme + ` button.authorize`))},
		seeAuthorized("(http, Bearer)"),
		closeAuthorize,
	}, tryIt, []browserStep{
		// A JWT names no workspace: the operation's header parameter does.
		{"type the workspace", chromedp.SendKeys(css(op+` tr[data-param-name="`+server.WorkspaceHeader+`"] input`), f.ws)},
	}, execute))
	renderedStatus("bearer token")
	screenshot(ctx, t, "docs-bearer.png")
	checkTryItResponse(ctx, t, watch, http.MethodGet, users, "Bearer "+jwt, "the JWT typed into the bearer field")

	_, urls := watch.snapshot()
	for _, u := range urls {
		if u == f.srv.URL+"/oauth/token" {
			t.Errorf("the page requested %s: the served tokenUrl must lead to %s/oauth/token", u, server.APIBasePath)
		}
	}
	watch.check(t, f.srv.URL)
}

// seeAuthorized waits until the Authorize dialog's scheme whose heading
// contains heading shows "Authorized" and a Logout button (its input fields
// are gone by then, so it is found by its heading), and fails at once with
// the dialog's message if it shows an error instead (a refused token
// request, say).
func seeAuthorized(heading string) browserStep {
	return browserStep{"see " + heading + " authorized", chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		state, err := chromedp.Poll[string](fmt.Sprintf(`(() => {
			const c = Array.from(document.querySelectorAll('.modal-ux .auth-container'))
				.find(c => (c.querySelector('h4')?.textContent ?? '').includes(%q));
			if (!c) return '';
			if (c.querySelector('button[aria-label="Remove authorization"]')) return 'authorized';
			const e = c.querySelector('.errors');
			return e ? 'the dialog shows: ' + e.textContent.trim() : '';
		})()`, heading))(ctx, t)
		if err == nil && state != "authorized" {
			err = errors.New(state)
		}
		return err
	})}
}

// checkTryItResponse validates the browser's latest answered "try it"
// request method target against the YAML like every response the tests
// receive, and checks that it carried an Authorization header starting with
// authPrefix (what: the credential that should be).
func checkTryItResponse(ctx context.Context, t *testing.T, watch *pageWatch, method, target, authPrefix, what string) {
	t.Helper()
	sent, got, body := watch.latest(ctx, t, method, target)
	u, err := url.Parse(sent.URL)
	if err != nil {
		t.Fatal(err)
	}
	req := &http.Request{Method: sent.Method, URL: u, Header: http.Header{}}
	for k, v := range sent.Headers {
		req.Header.Set(k, fmt.Sprint(v))
	}
	if got := req.Header.Get("Authorization"); !strings.HasPrefix(got, authPrefix) {
		t.Errorf("try it sent Authorization %q, want %s", redact(got), what)
	}
	header := http.Header{}
	for k, v := range got.Headers {
		header.Set(k, fmt.Sprint(v))
	}
	checkResponse(t, req, &http.Response{StatusCode: int(got.Status), Header: header}, body)
}

// latest returns the page's latest request method target that got an
// answer, the answer and its body; the test stops if there is none.
func (w *pageWatch) latest(ctx context.Context, t *testing.T, method, target string) (*network.Request, *network.Response, []byte) {
	t.Helper()
	w.mu.Lock()
	var id network.RequestID
	var sent *network.Request
	for _, rid := range w.order {
		if r := w.requests[rid]; r.Method == method && r.URL == target && w.responses[rid] != nil {
			id, sent = rid, r
		}
	}
	var got *network.Response
	if sent != nil {
		got = w.responses[id]
	}
	w.mu.Unlock()
	if sent == nil {
		t.Fatalf("the browser sent no %s %s that got an answer", method, target)
	}
	res, err := chromedp.Call(ctx, network.GetResponseBody, network.GetResponseBodyParams{RequestID: id})
	if err != nil {
		t.Fatalf("reading the answer to %s %s: %v", method, target, err)
	}
	body := res.Body
	if res.Base64encoded {
		if body, err = base64.StdEncoding.DecodeString(string(res.Body)); err != nil {
			t.Fatal(err)
		}
	}
	return sent, got, body
}

// redact keeps a credential out of test output.
func redact(v string) string {
	if len(v) > 12 {
		return v[:12] + "…"
	}
	return v
}

// screenshot saves the whole page into the test's artifact directory.
func screenshot(ctx context.Context, t *testing.T, name string) {
	t.Helper()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Errorf("screenshot %s: %v", name, err)
		return
	}
	path := filepath.Join(t.ArtifactDir(), name)
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Error(err)
		return
	}
	t.Logf("screenshot: %s", path)
}

func describe(o *runtime.RemoteObject) string {
	if o == nil {
		return ""
	}
	return o.Description
}
