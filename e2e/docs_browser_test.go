package e2e_test

import (
	"context"
	"encoding/base64"
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

	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium),
		chromedp.NoSandbox, // tests and CI run as root, where Chromium's sandbox refuses to start
		chromedp.WindowSize(1280, 1000),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	ctx, cancelCtx := chromedp.NewContext(allocCtx)
	defer cancelCtx()
	ctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()

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
	steps := []struct {
		name string
		do   chromedp.Action[chromedp.Void]
	}{
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
	}
	for _, step := range steps {
		sctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		err := chromedp.Do(sctx, step.do)
		cancel()
		if err != nil {
			screenshot(ctx, t, "docs-failed.png")
			if html, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.documentElement.outerHTML`)); err == nil {
				_ = os.WriteFile(filepath.Join(t.ArtifactDir(), "docs-failed.html"), []byte(html), 0o644)
			}
			t.Fatalf("try it: %s: %v", step.name, err)
		}
	}
	status, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(op+` .live-responses-table tbody .response-col_status`)))
	if err != nil {
		t.Fatal(err)
	}
	screenshot(ctx, t, "docs-try-it.png")
	if strings.TrimSpace(status) != "200" {
		t.Errorf("try it: got status %q, want 200", status)
	}
	checkTryItResponse(ctx, t, watch, f.srv.URL+server.APIBasePath+"/users")

	// The invitation is real: the API lists it.
	resp, body := f.do(t, http.MethodGet, "/v0/users", f.bearer(f.adminKey), "")
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), invitee) {
		t.Errorf("after try it, GET /v0/users: %d %s, want the invitee listed", resp.StatusCode, body)
	}

	problems, urls := watch.snapshot()
	for _, p := range problems {
		t.Errorf("docs page reported: %s", p)
	}
	for _, u := range urls {
		if !strings.HasPrefix(u, f.srv.URL+"/") && !strings.HasPrefix(u, "data:") {
			t.Errorf("docs page fetched %s: everything must come from this server (embedded assets, works offline)", u)
		}
	}
	if len(urls) == 0 {
		t.Error("no requests seen: the network watch is broken")
	}
}

// checkTryItResponse validates the browser's "try it" answer against the
// YAML like every response the tests receive.
func checkTryItResponse(ctx context.Context, t *testing.T, watch *pageWatch, target string) {
	t.Helper()
	watch.mu.Lock()
	var id network.RequestID
	var sent *network.Request
	for rid, r := range watch.requests {
		if r.Method == http.MethodPost && r.URL == target && watch.responses[rid] != nil {
			id, sent = rid, r
		}
	}
	var got *network.Response
	if sent != nil {
		got = watch.responses[id]
	}
	watch.mu.Unlock()
	if sent == nil {
		t.Fatalf("the browser sent no POST %s that got an answer", target)
	}
	res, err := chromedp.Call(ctx, network.GetResponseBody, network.GetResponseBodyParams{RequestID: id})
	if err != nil {
		t.Fatalf("reading the try-it answer: %v", err)
	}
	body := res.Body
	if res.Base64encoded {
		if body, err = base64.StdEncoding.DecodeString(string(res.Body)); err != nil {
			t.Fatal(err)
		}
	}
	u, err := url.Parse(sent.URL)
	if err != nil {
		t.Fatal(err)
	}
	req := &http.Request{Method: sent.Method, URL: u, Header: http.Header{}}
	for k, v := range sent.Headers {
		req.Header.Set(k, fmt.Sprint(v))
	}
	if got := req.Header.Get("Authorization"); !strings.HasPrefix(got, "Bearer bl_") {
		t.Errorf("try it sent Authorization %q, want the API key as a bearer token", redact(got))
	}
	header := http.Header{}
	for k, v := range got.Headers {
		header.Set(k, fmt.Sprint(v))
	}
	checkResponse(t, req, &http.Response{StatusCode: int(got.Status), Header: header}, body)
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
