package e2e_test

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/membership-api/controlplane/internal/cli"

	"github.com/membership-api/controlplane/gen"
	"github.com/membership-api/controlplane/mail/smtptest"
)

func (f *fixture) invite(t *testing.T, email string) {
	t.Helper()
	resp, err := f.srv.client(t).InviteWorkspaceUserWithResponse(context.Background(), nil,
		gen.InviteWorkspaceUserJSONRequestBody{Email: ptr(email)}, withAuth("Authorization", f.token(f.adminSub, f.adminEmail, "workspaces:invite"), f.ws))
	if err != nil || resp.StatusCode() != 200 {
		t.Fatalf("invite %s: %v %d %s", email, err, resp.StatusCode(), resp.Body)
	}
}

func smtpFlags(port int) []string {
	return []string{"--smtp-host", "127.0.0.1", "--smtp-port", strconv.Itoa(port), "--smtp-tls", "none",
		"--smtp-from", "invites@blaxel.test", "--mail-poll-interval", "20ms", "--mail-backoff-base", "20ms", "--mail-backoff-max", "100ms",
		"--accept-url-template", "https://app.blaxel.test/{workspace}/join?email={email}"}
}

// freeSMTPPort returns a loopback port nothing listens on yet: SMTP is down
// until a test starts smtptest on it.
func freeSMTPPort(t *testing.T) int {
	t.Helper()
	l, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// TestMail_EndToEnd: with SMTP configured, an invite's email arrives once;
// with SMTP down at invite time, the invite still succeeds and the email
// goes out once SMTP is back.
func TestMail_EndToEnd(t *testing.T) {
	t.Parallel()
	parallelDialects(t, func(t *testing.T, dialect string) {
		port := freeSMTPPort(t) // SMTP is down when the server starts and the invite is made
		f := newFixture(t, dialect, smtpFlags(port)...)
		f.invite(t, "Bob@Example.com")
		time.Sleep(100 * time.Millisecond) // let a delivery attempt fail (no assertion on time)
		srv := smtptest.StartOn(t, "127.0.0.1:"+strconv.Itoa(port))
		msgs := srv.WaitFor(t, 1, 30*time.Second)
		m := msgs[0]
		if len(m.To) != 1 || m.To[0] != "bob@example.com" || !strings.Contains(m.Text, "https://app.blaxel.test/"+f.ws+"/join?email=bob%40example.com") ||
			!strings.Contains(m.Header.Get("Subject"), "Acme") || m.HTML == "" {
			t.Errorf("message: to %v subject %q\n%s", m.To, m.Header.Get("Subject"), m.Text)
		}
		f.invite(t, "carol@example.com")
		srv.WaitFor(t, 2, 30*time.Second)
		time.Sleep(100 * time.Millisecond)
		if got := len(srv.Messages()); got != 2 {
			t.Errorf("got %d messages, want 2 (one per invitation)", got)
		}
		status := mustCLI(t, f.args("mail-status")...)
		if !strings.Contains(status, "sent 2") || !strings.Contains(status, "pending 0") {
			t.Errorf("mail-status: %q", status)
		}
	})
}

// TestMail_FileDefault: with no SMTP configured the email is an .eml file in
// the data directory and its accept link is logged.
func TestMail_FileDefault(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "sqlite", "--mail-poll-interval", "20ms")
	f.invite(t, "bob@example.com")
	deadline := time.Now().Add(20 * time.Second)
	var files []string
	for len(files) == 0 && time.Now().Before(deadline) {
		files, _ = filepath.Glob(filepath.Join(f.dataDir, "mail", "*.eml"))
		time.Sleep(20 * time.Millisecond)
	}
	if len(files) != 1 {
		t.Fatalf("got %v, want one .eml file under %s/mail", files, f.dataDir)
	}
	raw, _ := os.ReadFile(files[0])
	if !strings.Contains(string(raw), "To: <bob@example.com>") {
		t.Errorf(".eml lacks the recipient:\n%s", raw)
	}
	if logs := f.srv.logs.String(); !strings.Contains(logs, "accept_url=") {
		t.Errorf("accept link not logged:\n%s", logs)
	}
}

// TestMail_Worker: serve without its dispatcher; the mail-worker command
// delivers instead.
func TestMail_Worker(t *testing.T) {
	t.Parallel()
	srv := smtptest.Start(t)
	f := newFixture(t, "sqlite", "--mail-dispatcher=false")
	f.invite(t, "bob@example.com")
	time.Sleep(50 * time.Millisecond)
	if n := len(srv.Messages()); n != 0 {
		t.Fatalf("serve --mail-dispatcher=false sent %d messages", n)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan cliResult, 1)
	go func() {
		var out, errOut strings.Builder
		code := cli.Run(ctx, append(f.args("mail-worker"), smtpFlags(srv.Port())...), &out, &errOut)
		done <- cliResult{stdout: out.String(), stderr: errOut.String(), code: code}
	}()
	srv.WaitFor(t, 1, 30*time.Second)
	cancel()
	if r := <-done; r.code != 0 {
		t.Errorf("mail-worker exited %d: %s", r.code, r.stderr)
	}
}

// TestMail_GiveUpThenRetry: with SMTP down, a message older than
// --mail-give-up-after becomes failed (mail-status says which and why);
// `mail-retry` requeues it once SMTP is back and it is delivered once.
func TestMail_GiveUpThenRetry(t *testing.T) {
	t.Parallel()
	parallelDialects(t, func(t *testing.T, dialect string) {
		port := freeSMTPPort(t) // SMTP is down
		f := newFixture(t, dialect, append(smtpFlags(port), "--mail-give-up-after", "300ms")...)
		f.invite(t, "bob@example.com")
		st := f.store()
		deadline := time.Now().Add(20 * time.Second)
		for {
			c, err := st.OutboxCounts(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if c["failed"] == 1 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("no failed message after 20s: %v", c)
			}
			time.Sleep(20 * time.Millisecond)
		}
		status := mustCLI(t, f.args("mail-status")...)
		for _, want := range []string{"pending 0\nsent 0\nfailed 1\ncancelled 0\noldest_pending_age 0s\n", f.ws, "bob@example.com", "mail: connect to 127.0.0.1:" + strconv.Itoa(port)} {
			if !strings.Contains(status, want) {
				t.Errorf("mail-status lacks %q:\n%s", want, status)
			}
		}

		// Refused requeues change nothing.
		for _, args := range [][]string{{"--workspace", "nope"}, {"--id", "999999"}, {"--workspace", f.ws, "--id", "1"}, {"--id", "-1"}, {"extra"}} {
			if r := runCLI(t, f.args(append([]string{"mail-retry"}, args...)...)...); r.code == 0 || r.stderr == "" {
				t.Errorf("mail-retry %v: exit %d, stderr %q; want an error", args, r.code, r.stderr)
			}
		}
		if c, _ := st.OutboxCounts(context.Background()); c["failed"] != 1 || c["pending"] != 0 {
			t.Fatalf("a refused mail-retry changed the outbox: %v", c)
		}

		srv := smtptest.StartOn(t, "127.0.0.1:"+strconv.Itoa(port))
		if out := mustCLI(t, f.args("mail-retry", "--workspace", f.ws)...); out != "requeued 1" {
			t.Errorf("mail-retry: %q, want \"requeued 1\"", out)
		}
		msgs := srv.WaitFor(t, 1, 30*time.Second)
		if msgs[0].To[0] != "bob@example.com" {
			t.Errorf("delivered to %v", msgs[0].To)
		}
		time.Sleep(200 * time.Millisecond) // a duplicate, if any, arrives meanwhile
		if got := len(srv.Messages()); got != 1 {
			t.Errorf("got %d messages, want 1", got)
		}
		if status := mustCLI(t, f.args("mail-status")...); !strings.HasPrefix(status, "pending 0\nsent 1\nfailed 0\n") {
			t.Errorf("mail-status after the retry:\n%s", status)
		}
	})
}

// TestMail_RetryFlagsMustBePositive: a zero duration would silently mean the
// default (72h for --mail-give-up-after), so it is refused.
func TestMail_RetryFlagsMustBePositive(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "sqlite")
	for _, flag := range []string{"--mail-give-up-after", "--mail-backoff-base", "--mail-lease"} {
		// Bounded: a worker that accepted the flag would run until ctx ends, exit 0.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		var out, errOut strings.Builder
		code := cli.Run(ctx, append(e.args("mail-worker"), flag, "0"), &out, &errOut)
		cancel()
		if code == 0 || !strings.Contains(errOut.String(), flag) {
			t.Errorf("mail-worker %s 0: exit %d, stderr %q; want an error naming the flag", flag, code, errOut.String())
		}
	}
}
