package e2e_test

import (
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/membership-api/controlplane/internal/cli"

	"github.com/membership-api/controlplane/mail/smtptest"
)

// TestMailWorker_Observed: mail-worker logs and exposes metrics as serve
// does: --log-format json makes every line a JSON object (the start line
// with the version, the metrics address, each delivery), and
// --metrics-addr serves the mail, outbox and SQLite series of its own work.
func TestMailWorker_Observed(t *testing.T) {
	t.Parallel()
	srv := smtptest.Start(t)
	f := newFixture(t, "sqlite", "--mail-dispatcher=false")
	f.invite(t, "bob@example.com")

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pr, pw := io.Pipe()
	done := make(chan int, 1)
	args := append(f.args("mail-worker", "--log-format", "json", "--metrics-addr", "127.0.0.1:0"), smtpFlags(srv.Port())...)
	go func() {
		code := cli.Run(ctx, args, io.Discard, pw)
		pw.Close()
		done <- code
	}()
	next, drain := jsonLogLines(t, pr)
	if m := next("starting"); m["version"] == nil || m["revision"] == nil || m["go"] == nil {
		t.Errorf("start line %v lacks version, revision or go", m)
	}
	url, _ := next("metrics listening")["addr"].(string)
	if !strings.HasPrefix(url, "http://127.0.0.1:") {
		t.Fatalf("metrics addr %q", url)
	}
	if m := next("mail sent"); m["level"] != "INFO" || m["message_id"] == nil {
		t.Errorf("delivery line %v, want INFO with the message_id", m)
	}
	if got := srv.WaitFor(t, 1, 30*time.Second); got[0].To[0] != "bob@example.com" {
		t.Errorf("delivered to %v", got[0].To)
	}

	s := scrapeMetrics(t, url)
	for series, want := range map[string]float64{
		`controlplane_mails_total{outcome="sent"}`:   1,
		`controlplane_mails_total{outcome="failed"}`: 0,
		"controlplane_outbox_pending":                0,
		"controlplane_outbox_failed":                 0,
	} {
		if s[series] != want {
			t.Errorf("%s = %v, want %v", series, s[series], want)
		}
	}
	// Recording the outcome commits through the store's hooks.
	if s["controlplane_sqlite_commit_duration_seconds_count"] < 1 {
		t.Errorf("controlplane_sqlite_commit_duration_seconds_count = %v, want the worker's commits", s["controlplane_sqlite_commit_duration_seconds_count"])
	}

	cancel()
	if code := <-done; code != 0 {
		t.Errorf("mail-worker exited with %d", code)
	}
	drain()

	r := runCLI(t, f.args("mail-worker", "--log-format", "xml")...)
	if r.code != 1 || !strings.Contains(r.stderr, "--log-format") {
		t.Errorf("mail-worker --log-format xml: exit %d, %q; want 1 naming the flag", r.code, r.stderr)
	}
}
