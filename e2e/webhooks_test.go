package e2e_test

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/membership-api/controlplane/internal/cli"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/membership-api/controlplane/gen"
	"github.com/membership-api/controlplane/store"
	"github.com/membership-api/controlplane/store/storetest"
	"github.com/membership-api/controlplane/webhook"
)

// receiver is an in-process HTTPS endpoint that records what it receives.
type receiver struct {
	mu     sync.Mutex
	bodies [][]byte
	heads  []http.Header
	fail   int // answer 503 to this many requests first
}

func (r *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.bodies = append(r.bodies, body)
	r.heads = append(r.heads, req.Header.Clone())
	if r.fail > 0 {
		r.fail--
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (r *receiver) received() ([][]byte, []http.Header) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([][]byte(nil), r.bodies...), append([]http.Header(nil), r.heads...)
}

// testCA writes the certificate of httptest's TLS servers (the same for
// every one) to a PEM file for --webhook-ca-file, and returns its pool too.
func testCA(t *testing.T) string {
	t.Helper()
	srv := httptest.NewTLSServer(http.NotFoundHandler())
	defer srv.Close()
	file := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	return file
}

// freePort reserves a loopback address nobody listens on (yet).
func freePort(t *testing.T) string {
	t.Helper()
	ln, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// verifyDeliveries checks each delivery with the Standard Webhooks library
// and the endpoint's secret, and its body against the YAML's WebhookEvent.
func verifyDeliveries(t *testing.T, secret string, bodies [][]byte, heads []http.Header) []gen.WebhookEvent {
	t.Helper()
	wh, err := standardwebhooks.NewWebhook(secret)
	if err != nil {
		t.Fatal(err)
	}
	schema := loadSpec(t).Components.Schemas["WebhookEvent"].Value
	events := make([]gen.WebhookEvent, len(bodies))
	for i, body := range bodies {
		if err := wh.Verify(body, heads[i]); err != nil {
			t.Errorf("delivery %d does not verify: %v", i, err)
		}
		var raw any
		if err := json.Unmarshal(body, &raw); err != nil {
			t.Fatalf("delivery %d: %v: %s", i, err, body)
		}
		if err := schema.VisitJSON(raw); err != nil {
			t.Errorf("delivery %d does not match WebhookEvent: %v\n%s", i, err, body)
		}
		if err := json.Unmarshal(body, &events[i]); err != nil {
			t.Fatal(err)
		}
	}
	return events
}

// createEndpoint registers url for acme's events of the given types.
func (f *fixture) createEndpoint(t *testing.T, url string, types ...string) gen.WebhookEndpoint {
	t.Helper()
	in := map[string]any{"url": url, "description": "test"}
	if len(types) > 0 {
		in["eventTypes"] = types
	}
	body, _ := json.Marshal(in)
	resp, b := f.do(t, "POST", "/v0/webhooks", f.bearer(f.auditToken(f.adminSub, f.adminEmail)), string(body))
	if resp.StatusCode != 201 {
		t.Fatalf("create endpoint: %d %s", resp.StatusCode, b)
	}
	var e gen.WebhookEndpoint
	if err := json.Unmarshal(b, &e); err != nil {
		t.Fatal(err)
	}
	if e.Secret == nil || !strings.HasPrefix(*e.Secret, "whsec_") {
		t.Fatalf("create endpoint: no whsec_ secret in %s", b)
	}
	return e
}

func (f *fixture) deliveries(t *testing.T, id int64) []gen.WebhookDelivery {
	t.Helper()
	resp, b := f.do(t, "GET", fmt.Sprintf("/v0/webhooks/%d/deliveries", id), f.bearer(f.auditToken(f.adminSub, "")), "")
	if resp.StatusCode != 200 {
		t.Fatalf("deliveries: %d %s", resp.StatusCode, b)
	}
	var out []gen.WebhookDelivery
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// waitUntil polls cond (the dispatcher works in the background) for up to 60 s.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// quiet is the logger of the tests' own dispatchers.
var quiet = slog.New(slog.DiscardHandler)

var fastWebhooks = []string{"--webhooks-allow-loopback", "--webhook-backoff-base", "20ms", "--webhook-backoff-max", "100ms",
	"--webhook-poll-interval", "20ms"}

// TestWebhooks_DeliveredAtLeastOnce: an endpoint that is down (nothing
// listens), then answers 503, then is up, gets the subscribed event: every
// attempt carries the same webhook-id and verifies with the Standard
// Webhooks library; the delivery log shows the failures and the success;
// an event it did not subscribe to is not sent; the test event is.
func TestWebhooks_DeliveredAtLeastOnce(t *testing.T) {
	t.Parallel()
	parallelDialects(t, func(t *testing.T, dialect string) {
		f := newFixture(t, dialect, append([]string{"--webhook-ca-file", testCA(t)}, fastWebhooks...)...)
		admin := f.bearer(f.userToken(f.adminSub, f.adminEmail))
		addr := freePort(t)
		ep := f.createEndpoint(t, "https://"+addr+"/hook", "invitation.created")

		if resp, b := f.do(t, "POST", "/v0/users", admin, `{"email":"bob@example.com"}`); resp.StatusCode != 200 {
			t.Fatalf("invite: %d %s", resp.StatusCode, b)
		}
		waitUntil(t, "a failed attempt while the receiver is down", func() bool { return len(f.deliveries(t, ep.Id)) > 0 })

		rcv := &receiver{fail: 1}
		ln, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", addr)
		if err != nil {
			t.Skipf("the reserved port was taken meanwhile: %v", err)
		}
		srv := httptest.NewUnstartedServer(rcv)
		srv.Listener.Close()
		srv.Listener = ln
		srv.StartTLS()
		defer srv.Close()
		waitUntil(t, "the delivery", func() bool { b, _ := rcv.received(); return len(b) >= 2 })
		// The receiver has the body before the dispatcher records the
		// attempt that sent it.
		waitUntil(t, "the delivery in the log", func() bool {
			log := f.deliveries(t, ep.Id)
			return len(log) > 0 && log[0].Outcome == gen.Delivered
		})
		// Not subscribed: removing a member sends nothing.
		if resp, b := f.do(t, "DELETE", "/v0/users/"+f.memberSub, admin, ""); resp.StatusCode != 200 {
			t.Fatalf("remove: %d %s", resp.StatusCode, b)
		}

		log := f.deliveries(t, ep.Id)
		if n := len(log); n < 3 || log[0].Outcome != gen.Delivered || log[0].Status != 204 || log[1].Status != 503 ||
			log[n-1].Status != 0 || log[n-1].Outcome != gen.Retry || deref(log[n-1].Error) == "" {
			t.Errorf("delivery log (latest first): %+v; want refused attempts, a 503, then a 204", log)
		}
		for _, d := range log {
			if d.MessageId != log[0].MessageId || d.EventType != "invitation.created" {
				t.Errorf("attempt %+v: want one message, invitation.created", d)
			}
		}
		// The test event, to this endpoint alone.
		resp, b := f.do(t, "POST", fmt.Sprintf("/v0/webhooks/%d/test", ep.Id), f.bearer(f.auditToken(f.adminSub, "")), "")
		if resp.StatusCode != 202 || resp.Header.Get("webhook-id") == "" {
			t.Fatalf("test event: %d %s", resp.StatusCode, b)
		}
		testID := resp.Header.Get("webhook-id")
		waitUntil(t, "the test event", func() bool { b, _ := rcv.received(); return len(b) >= 3 })

		bodies, heads := rcv.received()
		events := verifyDeliveries(t, *ep.Secret, bodies, heads)
		if len(events) != 3 {
			t.Fatalf("%d deliveries, want the invitation twice (503, then 204) and the test event", len(events))
		}
		if heads[0].Get("webhook-id") != log[0].MessageId || heads[1].Get("webhook-id") != log[0].MessageId || heads[2].Get("webhook-id") != testID {
			t.Errorf("webhook-ids %q %q %q: want %s twice, then %s", heads[0].Get("webhook-id"), heads[1].Get("webhook-id"), heads[2].Get("webhook-id"), log[0].MessageId, testID)
		}
		if e := events[1]; e.Type != "invitation.created" || e.Data.Target.Id != "bob@example.com" || e.Data.Actor.Sub != f.adminSub || e.Data.Workspace != f.ws {
			t.Errorf("event: %+v", e)
		}
		if e := events[2]; e.Type != "webhook.test" || e.Data.Target.Id != strconv.FormatInt(ep.Id, 10) {
			t.Errorf("test event: %+v", e)
		}
	})
}

// TestWebhooks_TwoDispatchersNeverDeliverTwice: two dispatchers on one
// database, racing over the same messages, deliver each exactly once
// while the lease holds.
func TestWebhooks_TwoDispatchersNeverDeliverTwice(t *testing.T) {
	t.Parallel()
	parallelDialects(t, func(t *testing.T, dialect string) {
		f := newFixture(t, dialect, "--webhook-dispatcher=false", "--webhooks-allow-loopback")
		rcv := &receiver{}
		srv := httptest.NewTLSServer(rcv)
		defer srv.Close()
		ep := f.createEndpoint(t, srv.URL+"/hook")
		admin := f.bearer(f.userToken(f.adminSub, f.adminEmail))
		const n = 30
		for i := range n {
			if resp, b := f.do(t, "POST", "/v0/users", admin, fmt.Sprintf(`{"email":"u%d@example.com"}`, i)); resp.StatusCode != 200 {
				t.Fatalf("invite: %d %s", resp.StatusCode, b)
			}
		}
		pool := srv.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs
		var wg sync.WaitGroup
		for range 2 {
			d := webhook.NewDispatcher(f.store(), webhook.Config{AllowLoopback: true, RootCAs: pool, BatchSize: 3, Lease: time.Minute}, quiet)
			wg.Go(func() {
				for {
					claimed, err := d.RunOnce(context.Background())
					if err != nil {
						t.Error(err)
						return
					}
					if claimed == 0 {
						return
					}
				}
			})
		}
		wg.Wait()
		bodies, heads := rcv.received()
		verifyDeliveries(t, *ep.Secret, bodies, heads)
		seen := map[string]int{}
		for _, h := range heads {
			seen[h.Get("webhook-id")]++
		}
		// The invitations only: an endpoint is not sent its own creation
		// (store/webhooks.go, enqueueWebhooksSQL).
		if len(bodies) != n || len(seen) != n {
			t.Errorf("%d deliveries of %d messages, want %d each once: %v", len(bodies), len(seen), n, seen)
		}
	})
}

// TestWebhooks_PrivateAddressesRefused: registration refuses plain http,
// private, link-local and (without the flag) loopback endpoints, and
// changes nothing.
func TestWebhooks_PrivateAddressesRefused(t *testing.T) {
	t.Parallel()
	f := newTenant(t, "sqlite")
	h := f.bearer(f.auditToken(f.adminSub, f.adminEmail))
	var cases []badInput
	for _, u := range []string{"https://10.1.2.3/hook", "https://192.168.0.10/hook", "https://169.254.169.254/latest/meta-data",
		"https://[fd00::1]/hook", "https://127.0.0.1:8443/hook", "https://localhost/hook", "http://example.com/hook",
		"https://user:pass@example.com/hook", "ftp://example.com/", "not a url"} {
		cases = append(cases, badInput{u, "POST", "/v0/webhooks", h, `{"url":"` + u + `"}`, 400})
	}
	f.checkBadInputs(t, cases)
}

// TestWebhooks_AutoDisable: an endpoint whose deliveries keep failing past
// --webhook-disable-after is disabled, its pending messages cancelled, and
// the audit log says so (actor: system); enabling it again works, and the
// test event of a disabled endpoint is a 409.
func TestWebhooks_AutoDisable(t *testing.T) {
	t.Parallel()
	parallelDialects(t, func(t *testing.T, dialect string) {
		f := newFixture(t, dialect, "--webhook-dispatcher=false", "--webhooks-allow-loopback")
		ep := f.createEndpoint(t, "https://"+freePort(t)+"/hook")
		admin := f.bearer(f.userToken(f.adminSub, f.adminEmail))
		for _, email := range []string{"a@example.com", "b@example.com"} {
			if resp, b := f.do(t, "POST", "/v0/users", admin, `{"email":"`+email+`"}`); resp.StatusCode != 200 {
				t.Fatalf("invite: %d %s", resp.StatusCode, b)
			}
		}
		st := f.store()
		d := webhook.NewDispatcher(st, webhook.Config{AllowLoopback: true, BatchSize: 1, DisableAfter: time.Nanosecond}, quiet)
		if n, err := d.RunOnce(context.Background()); n != 1 || err != nil {
			t.Fatalf("RunOnce: %d %v", n, err)
		}
		e, err := st.Webhook(context.Background(), f.ws, ep.Id)
		if err != nil || e.DisabledAt == nil || e.DisabledReason == "" {
			t.Fatalf("endpoint after a failure past disable-after: %+v %v", e, err)
		}
		// The two invitations' (the first tried once); an endpoint is not
		// sent its own creation.
		msgs, err := st.WebhookMessages(context.Background(), ep.Id)
		if err != nil || len(msgs) != 2 {
			t.Fatalf("messages: %+v %v; want 2", msgs, err)
		}
		for _, m := range msgs {
			if m.Status != store.WebhookCancelled {
				t.Errorf("message %+v: want cancelled", m)
			}
		}
		events, _ := f.auditEvents(t, "action=webhook_endpoint.disabled")
		if len(events) != 1 || events[0].Actor.Kind != gen.AuditActorKindSystem || events[0].Target.Id != strconv.FormatInt(ep.Id, 10) {
			t.Errorf("disabled events: %+v", events)
		}
		path := fmt.Sprintf("/v0/webhooks/%d", ep.Id)
		if resp, b := f.do(t, "POST", path+"/test", f.bearer(f.auditToken(f.adminSub, "")), ""); resp.StatusCode != 409 {
			t.Errorf("test event to a disabled endpoint: %d %s", resp.StatusCode, b)
		}
		resp, b := f.do(t, "PUT", path, f.bearer(f.auditToken(f.adminSub, "")), `{"enabled":true}`)
		var got gen.WebhookEndpoint
		if resp.StatusCode != 200 || json.Unmarshal(b, &got) != nil || !got.Enabled || got.FailingSince != nil || got.Secret != nil {
			t.Errorf("enable: %d %s", resp.StatusCode, b)
		}
		if events, _ := f.auditEvents(t, "action=webhook_endpoint.updated"); len(events) != 1 {
			t.Errorf("updated events: %+v", events)
		}
	})
}

// TestWebhooks_Operations: the endpoints' lifecycle over the API and every
// refusal the YAML declares, none of which changes anything.
func TestWebhooks_Operations(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "sqlite", "--webhook-dispatcher=false")
	h := f.bearer(f.auditToken(f.adminSub, f.adminEmail))
	ep := f.createEndpoint(t, "https://hooks.example.com/a?token=s3cr3t", "member.removed", "invitation.created")
	path := fmt.Sprintf("/v0/webhooks/%d", ep.Id)

	resp, b := f.do(t, "GET", "/v0/webhooks", h, "")
	var list []gen.WebhookEndpoint
	if resp.StatusCode != 200 || json.Unmarshal(b, &list) != nil || len(list) != 1 || list[0].Secret != nil ||
		len(list[0].EventTypes) != 2 || list[0].Url != "https://hooks.example.com/a?token=s3cr3t" {
		t.Errorf("list: %d %s", resp.StatusCode, b)
	}
	resp, b = f.do(t, "PUT", path, h, `{"url":"https://hooks.example.com/b?token=0th3r","eventTypes":[]}`)
	if resp.StatusCode != 200 || !strings.Contains(string(b), `"eventTypes":[]`) {
		t.Errorf("update: %d %s", resp.StatusCode, b)
	}
	events, _ := f.auditEvents(t, "limit=2")
	for _, e := range events {
		raw, _ := json.Marshal(e)
		if strings.Contains(string(raw), "s3cr3t") || strings.Contains(string(raw), "0th3r") || strings.Contains(string(raw), "whsec_") {
			t.Errorf("a secret reached the audit log: %s", raw)
		}
	}
	if len(events) != 2 || events[0].Action != "webhook_endpoint.updated" || events[1].Action != "webhook_endpoint.created" {
		t.Errorf("events: %+v", events)
	}

	member := f.bearer(f.auditToken(f.memberSub, f.memberEmail))
	big := `{"url":"https://example.com/` + strings.Repeat("x", 70_000) + `"}`
	cases := []badInput{
		{"CreateMember", "POST", "/v0/webhooks", member, `{"url":"https://example.com/"}`, 403},
		{"CreateOtherWorkspace", "POST", "/v0/webhooks", with(h, "X-Blaxel-Workspace", "nope"), `{"url":"https://example.com/"}`, 404},
		{"CreateUnknownType", "POST", "/v0/webhooks", h, `{"url":"https://example.com/","eventTypes":["nope"]}`, 400},
		{"CreateTooLarge", "POST", "/v0/webhooks", h, big, 413},
		{"CreateNotJSON", "POST", "/v0/webhooks", with(h, "Content-Type", "text/plain"), `{"url":"https://example.com/"}`, 415},
		{"ListNoWorkspace", "GET", "/v0/webhooks", with(h, "X-Blaxel-Workspace", ""), "", 400},
		{"ListMember", "GET", "/v0/webhooks", member, "", 403},
		{"ListOtherWorkspace", "GET", "/v0/webhooks", with(h, "X-Blaxel-Workspace", "nope"), "", 404},
		{"UpdateBadID", "PUT", "/v0/webhooks/abc", h, `{}`, 400},
		{"UpdateMember", "PUT", path, member, `{}`, 403},
		{"UpdateUnknown", "PUT", "/v0/webhooks/999", h, `{}`, 404},
		{"UpdateBadURL", "PUT", path, h, `{"url":"http://example.com/"}`, 400},
		{"UpdateTooLarge", "PUT", path, h, big, 413},
		{"UpdateNotJSON", "PUT", path, with(h, "Content-Type", "text/plain"), `{}`, 415},
		{"DeleteBadID", "DELETE", "/v0/webhooks/abc", h, "", 400},
		{"DeleteMember", "DELETE", path, member, "", 403},
		{"DeleteUnknown", "DELETE", "/v0/webhooks/999", h, "", 404},
		{"TestBadID", "POST", "/v0/webhooks/abc/test", h, "", 400},
		{"TestMember", "POST", path + "/test", member, "", 403},
		{"TestUnknown", "POST", "/v0/webhooks/999/test", h, "", 404},
		{"DeliveriesBadID", "GET", "/v0/webhooks/abc/deliveries", h, "", 400},
		{"DeliveriesMember", "GET", path + "/deliveries", member, "", 403},
		{"DeliveriesUnknown", "GET", "/v0/webhooks/999/deliveries", h, "", 404},
		{"OtherWorkspacesEndpoint", "DELETE", path, with(f.bearer(f.auditToken(f.otherSub, "")), "X-Blaxel-Workspace", f.otherWS), "", 404},
	}
	f.checkBadInputs(t, cases)

	for i := 1; i < store.MaxWebhooks; i++ {
		f.createEndpoint(t, fmt.Sprintf("https://hooks.example.com/%d", i))
	}
	f.checkBadInputs(t, []badInput{{"TooMany", "POST", "/v0/webhooks", h, `{"url":"https://example.com/"}`, 409}})

	if resp, b := f.do(t, "DELETE", path, h, ""); resp.StatusCode != 204 {
		t.Errorf("delete: %d %s", resp.StatusCode, b)
	}
	if resp, _ := f.do(t, "GET", path+"/deliveries", h, ""); resp.StatusCode != 404 {
		t.Errorf("deleted endpoint's deliveries: %d, want 404", resp.StatusCode)
	}
}

// TestFaults_AuditAndWebhooks: with the audit and webhook tables dropped,
// their operations answer the spec's 500 (and changes that append an event
// fail whole).
func TestFaults_AuditAndWebhooks(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "sqlite") // its own database: the test drops tables
	h := f.bearer(f.auditToken(f.adminSub, f.adminEmail))
	for name, db := range f.store().DBs() {
		if name == "sqlite_read" {
			continue
		}
		for _, table := range []string{"webhook_attempts", "webhook_messages", "webhook_endpoints", "audit_events"} {
			if _, err := db.ExecContext(context.Background(), "DROP TABLE "+table); err != nil {
				t.Fatalf("drop %s: %v", table, err)
			}
		}
	}
	for _, tc := range []struct{ method, path, body string }{
		{"GET", "/v0/audit", ""},
		{"GET", "/v0/webhooks", ""},
		{"POST", "/v0/webhooks", `{"url":"https://example.com/"}`},
		{"PUT", "/v0/webhooks/1", `{}`},
		{"DELETE", "/v0/webhooks/1", ""},
		{"POST", "/v0/webhooks/1/test", ""},
		{"GET", "/v0/webhooks/1/deliveries", ""},
		{"POST", "/v0/users", `{"email":"bob@example.com"}`},
		{"DELETE", "/v0/users/" + f.memberSub, ""},
	} {
		h := h
		if strings.HasPrefix(tc.path, "/v0/users") {
			h = f.bearer(f.userToken(f.adminSub, f.adminEmail))
		}
		if resp, b := f.do(t, tc.method, tc.path, h, tc.body); resp.StatusCode != 500 {
			t.Errorf("%s %s: %d %s, want 500", tc.method, tc.path, resp.StatusCode, b)
		}
	}
	st := f.store()
	if _, err := storetest.PendingInvitation(context.Background(), st, f.ws, "bob@example.com"); err == nil {
		t.Errorf("an invite whose audit event failed was kept")
	}
	if _, err := st.Membership(context.Background(), f.ws, f.memberSub); err != nil {
		t.Errorf("a removal whose audit event failed was kept: %v", err)
	}
}

// TestWebhookWorker: with serve's dispatcher off, the webhook-worker
// command delivers the events, and stops when its context ends.
func TestWebhookWorker(t *testing.T) {
	t.Parallel()
	ca := testCA(t)
	f := newFixture(t, "sqlite", "--webhook-dispatcher=false", "--webhooks-allow-loopback")
	rcv := &receiver{}
	srv := httptest.NewTLSServer(rcv)
	defer srv.Close()
	ep := f.createEndpoint(t, srv.URL+"/hook", "invitation.created")
	if resp, b := f.do(t, "POST", "/v0/users", f.bearer(f.userToken(f.adminSub, f.adminEmail)), `{"email":"bob@example.com"}`); resp.StatusCode != 200 {
		t.Fatalf("invite: %d %s", resp.StatusCode, b)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	var logs syncBuffer
	go func() {
		w := &lineWriter{buf: &logs}
		done <- cli.Run(ctx, f.args(append([]string{"webhook-worker", "--webhook-ca-file", ca}, fastWebhooks...)...), io.Discard, w)
	}()
	waitUntil(t, "the worker's delivery", func() bool { b, _ := rcv.received(); return len(b) == 1 })
	cancel()
	if code := <-done; code != 0 {
		t.Errorf("webhook-worker exited %d:\n%s", code, logs.String())
	}
	bodies, heads := rcv.received()
	if events := verifyDeliveries(t, *ep.Secret, bodies, heads); events[0].Data.Target.Id != "bob@example.com" {
		t.Errorf("delivered %+v", events[0])
	}
}

// lineWriter collects a command's stderr for the test's failure message.
type lineWriter struct{ buf *syncBuffer }

func (w *lineWriter) Write(p []byte) (int, error) { w.buf.WriteString(string(p)); return len(p), nil }
