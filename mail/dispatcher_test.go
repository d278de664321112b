package mail_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/membership-api/controlplane/mail"
	"github.com/membership-api/controlplane/mail/smtptest"
	"github.com/membership-api/controlplane/store"
	"github.com/membership-api/controlplane/store/storetest"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// outboxEnv is a fresh database with workspace acme (admin "admin").
type outboxEnv struct {
	st *store.Store
}

func newOutboxEnv(t *testing.T, dialect, displayName string) *outboxEnv {
	t.Helper()
	return newOutboxEnvAt(t, dialect, displayName, nil)
}

// newOutboxEnvAt is newOutboxEnv with the store's clock (nil: time.Now).
func newOutboxEnvAt(t *testing.T, dialect, displayName string, now func() time.Time) *outboxEnv {
	t.Helper()
	st := storetest.Open(t, dialect, store.Options{Now: now})
	if _, err := st.CreateWorkspace(context.Background(), store.NewWorkspace{Name: "acme", DisplayName: displayName, AdminSub: "admin", AdminEmail: "admin@acme.test"}); err != nil {
		t.Fatal(err)
	}
	return &outboxEnv{st: st}
}

func (e *outboxEnv) invite(t *testing.T, email string) store.Invitation {
	t.Helper()
	inv, err := e.st.Invite(context.Background(), store.InviteParams{Workspace: "acme", Caller: "admin", Email: email, TTL: 7 * 24 * time.Hour}) // the default --invite-ttl
	if err != nil {
		t.Fatal(err)
	}
	return inv
}

func (e *outboxEnv) counts(t *testing.T) map[string]int64 {
	t.Helper()
	c, err := e.st.OutboxCounts(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func smtpSenderTo(t *testing.T, host string, port int) *mail.SMTPSender {
	t.Helper()
	s, err := mail.NewSMTPSender(mail.SMTPConfig{Host: host, Port: port, TLS: mail.TLSNone,
		From: "invites@blaxel.test", FromName: "Blaxel", Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func fastRetries(c mail.DispatcherConfig) mail.DispatcherConfig {
	c.MessageIDDomain = "blaxel.test"
	c.BackoffBase, c.BackoffMax, c.PollInterval = 5*time.Millisecond, 20*time.Millisecond, 5*time.Millisecond
	c.AcceptURLTemplate = "https://app.blaxel.test/join/{workspace}?email={email}"
	return c
}

// drain runs the dispatcher until cond holds, failing after a generous bound.
func drain(t *testing.T, d *mail.Dispatcher, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("outbox did not reach the expected state")
		}
		if _, err := d.RunOnce(context.Background()); err != nil {
			t.Fatal(err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func eachDialect(t *testing.T, fn func(t *testing.T, dialect string)) {
	for _, dialect := range storetest.Dialects {
		t.Run(dialect, func(t *testing.T) { fn(t, dialect) })
	}
}

func TestDispatcher_DeliversOnce(t *testing.T) {
	eachDialect(t, func(t *testing.T, dialect string) {
		e := newOutboxEnv(t, dialect, "Acme <b>Corp</b>")
		srv := smtptest.Start(t)
		d := mail.NewDispatcher(e.st, smtpSenderTo(t, srv.Host(), srv.Port()), fastRetries(mail.DispatcherConfig{}), quiet)
		e.invite(t, "Bob@Example.com")
		e.invite(t, "bob@example.com") // re-invite before the send: still one email
		if n, err := d.RunOnce(context.Background()); err != nil || n != 1 {
			t.Fatalf("RunOnce: %d, %v; want 1 message claimed", n, err)
		}
		msgs := srv.Messages()
		if len(msgs) != 1 {
			t.Fatalf("got %d messages, want 1", len(msgs))
		}
		m := msgs[0]
		if len(m.To) != 1 || m.To[0] != "bob@example.com" {
			t.Errorf("recipients: got %v, want [bob@example.com]", m.To)
		}
		if subj := m.Header.Get("Subject"); !strings.Contains(subj, "Acme <b>Corp</b>") || !strings.Contains(subj, "admin@acme.test") {
			t.Errorf("subject: got %q", subj)
		}
		if id := m.Header.Get("Message-Id"); !strings.HasPrefix(id, "<invitation-") || !strings.HasSuffix(id, "@blaxel.test>") {
			t.Errorf("Message-ID: got %q", id)
		}
		link := "https://app.blaxel.test/join/acme?email=bob%40example.com"
		if !strings.Contains(m.Text, link) || !strings.Contains(m.Text, "member") || !strings.Contains(m.Text, "UTC") {
			t.Errorf("text part lacks link, role or expiry:\n%s", m.Text)
		}
		if !strings.Contains(m.HTML, "Acme &lt;b&gt;Corp&lt;/b&gt;") || strings.Contains(m.HTML, "<b>Corp") || !strings.Contains(m.HTML, "app.blaxel.test/join/acme") {
			t.Errorf("HTML part: display name not escaped or link missing:\n%s", m.HTML)
		}
		if n, _ := d.RunOnce(context.Background()); n != 0 || len(srv.Messages()) != 1 {
			t.Errorf("second run sent again (%d claimed, %d messages)", n, len(srv.Messages()))
		}
		if c := e.counts(t); c[store.OutboxSent] != 1 || c[store.OutboxPending] != 0 {
			t.Errorf("counts: %v", c)
		}
		// A re-invite after the send queues a new email.
		e.invite(t, "bob@example.com")
		drain(t, d, func() bool { return len(srv.Messages()) == 2 })
		if a, b := srv.Messages()[0].Header.Get("Message-Id"), srv.Messages()[1].Header.Get("Message-Id"); a == b {
			t.Errorf("resend reused Message-ID %s", a)
		}
	})
}

// freePort returns a loopback port nothing listens on (for "SMTP is down").
func freePort(t *testing.T) int {
	t.Helper()
	l, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	return port
}

func TestDispatcher_SMTPDownThenBack(t *testing.T) {
	eachDialect(t, func(t *testing.T, dialect string) {
		e := newOutboxEnv(t, dialect, "")
		port := freePort(t)
		d := mail.NewDispatcher(e.st, smtpSenderTo(t, "127.0.0.1", port), fastRetries(mail.DispatcherConfig{}), quiet)
		e.invite(t, "bob@example.com")
		if _, err := d.RunOnce(context.Background()); err != nil {
			t.Fatal(err)
		}
		if c := e.counts(t); c[store.OutboxPending] != 1 {
			t.Fatalf("after a failed attempt: %v, want the message still pending", c)
		}
		srv := smtptest.StartOn(t, "127.0.0.1:"+strconv.Itoa(port))
		drain(t, d, func() bool { return e.counts(t)[store.OutboxSent] == 1 })
		if got := len(srv.Messages()); got != 1 {
			t.Errorf("got %d messages, want 1", got)
		}
	})
}

func TestDispatcher_Replies(t *testing.T) {
	transient := &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "try later"}
	permanent := &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"}
	cases := []struct {
		name         string
		reply        func(attempt int) error
		wantStatus   string
		wantAttempts int
		wantMessages int
	}{
		{"TransientThenOK", func(a int) error {
			if a <= 2 {
				return transient
			}
			return nil
		}, store.OutboxSent, 3, 1},
		{"PermanentFailsAtOnce", func(int) error { return permanent }, store.OutboxFailed, 1, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newOutboxEnv(t, "sqlite", "")
			srv := smtptest.Start(t)
			srv.Reply(tc.reply)
			d := mail.NewDispatcher(e.st, smtpSenderTo(t, srv.Host(), srv.Port()), fastRetries(mail.DispatcherConfig{}), quiet)
			e.invite(t, "bob@example.com")
			drain(t, d, func() bool { return e.counts(t)[store.OutboxPending] == 0 })
			if c := e.counts(t); c[tc.wantStatus] != 1 {
				t.Errorf("counts %v, want one %s", c, tc.wantStatus)
			}
			if srv.Attempts() != tc.wantAttempts || len(srv.Messages()) != tc.wantMessages {
				t.Errorf("attempts %d, messages %d; want %d, %d", srv.Attempts(), len(srv.Messages()), tc.wantAttempts, tc.wantMessages)
			}
		})
	}
}

// TestDispatcher_CrashedClaim: a dispatcher claimed a message and died before
// it reached the SMTP server; once the lease lapses another sends it, once.
func TestDispatcher_CrashedClaim(t *testing.T) {
	eachDialect(t, func(t *testing.T, dialect string) {
		e := newOutboxEnv(t, dialect, "")
		srv := smtptest.Start(t)
		e.invite(t, "bob@example.com")
		claimed, err := e.st.ClaimOutbox(context.Background(), "crashed-dispatcher", 10, 300*time.Millisecond)
		if err != nil || len(claimed) != 1 {
			t.Fatalf("claim: %v %v", claimed, err)
		}
		d := mail.NewDispatcher(e.st, smtpSenderTo(t, srv.Host(), srv.Port()), fastRetries(mail.DispatcherConfig{}), quiet)
		if n, _ := d.RunOnce(context.Background()); n != 0 {
			t.Fatalf("a claimed message was taken over before its lease ended")
		}
		drain(t, d, func() bool { return len(srv.Messages()) == 1 })
		for range 3 {
			if _, err := d.RunOnce(context.Background()); err != nil {
				t.Fatal(err)
			}
		}
		if srv.Attempts() != 1 || e.counts(t)[store.OutboxSent] != 1 {
			t.Errorf("attempts %d, counts %v; want exactly one delivery", srv.Attempts(), e.counts(t))
		}
	})
}

// TestDispatcher_Release: claims handed back on shutdown go to the next
// dispatcher at once, without counting an attempt.
func TestDispatcher_Release(t *testing.T) {
	e := newOutboxEnv(t, "sqlite", "")
	e.invite(t, "bob@example.com")
	ctx := context.Background()
	if items, _ := e.st.ClaimOutbox(ctx, "a", 10, time.Hour); len(items) != 1 {
		t.Fatal("claim failed")
	}
	if err := e.st.ReleaseOutbox(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	items, err := e.st.ClaimOutbox(ctx, "b", 10, time.Hour)
	if err != nil || len(items) != 1 || items[0].Attempts != 1 {
		t.Errorf("after release: %+v %v; want the message claimable, attempt 1", items, err)
	}
}

// TestDispatcher_TwoDispatchers runs two dispatchers on one database at once:
// every message is delivered exactly once.
func TestDispatcher_TwoDispatchers(t *testing.T) {
	eachDialect(t, func(t *testing.T, dialect string) {
		e := newOutboxEnv(t, dialect, "")
		srv := smtptest.Start(t)
		const n = 40
		for i := range n {
			e.invite(t, "user"+strconv.Itoa(i)+"@example.com")
		}
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		for range 2 {
			d := mail.NewDispatcher(e.st, smtpSenderTo(t, srv.Host(), srv.Port()), fastRetries(mail.DispatcherConfig{BatchSize: 3}), quiet)
			wg.Add(1)
			go func() { defer wg.Done(); d.Run(ctx) }()
		}
		srv.WaitFor(t, n, 30*time.Second)
		time.Sleep(100 * time.Millisecond) // give a duplicate, if any, the chance to arrive
		cancel()
		wg.Wait()
		msgs := srv.Messages()
		ids, rcpts := map[string]bool{}, map[string]bool{}
		for _, m := range msgs {
			ids[m.Header.Get("Message-Id")] = true
			rcpts[m.To[0]] = true
		}
		if len(msgs) != n || len(ids) != n || len(rcpts) != n {
			t.Errorf("got %d messages, %d Message-IDs, %d recipients; want %d of each", len(msgs), len(ids), len(rcpts), n)
		}
	})
}

func TestDispatcher_RevokedIsNotSent(t *testing.T) {
	e := newOutboxEnv(t, "sqlite", "")
	srv := smtptest.Start(t)
	e.invite(t, "bob@example.com")
	if err := e.st.RemoveUser(context.Background(), "acme", "admin", "bob@example.com"); err != nil {
		t.Fatal(err)
	}
	d := mail.NewDispatcher(e.st, smtpSenderTo(t, srv.Host(), srv.Port()), fastRetries(mail.DispatcherConfig{}), quiet)
	if _, err := d.RunOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(srv.Messages()) != 0 || e.counts(t)[store.OutboxCancelled] != 1 {
		t.Errorf("revoked invitation: %d messages, counts %v; want none sent, one cancelled", len(srv.Messages()), e.counts(t))
	}
}

func TestDispatcher_HeaderInjection(t *testing.T) {
	e := newOutboxEnv(t, "sqlite", "Acme\r\nBcc: evil@attacker.test\r\nX-Evil: 1")
	srv := smtptest.Start(t)
	e.invite(t, "bob@example.com")
	d := mail.NewDispatcher(e.st, smtpSenderTo(t, srv.Host(), srv.Port()), fastRetries(mail.DispatcherConfig{}), quiet)
	if _, err := d.RunOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	msgs := srv.Messages()
	if len(msgs) != 1 {
		t.Fatalf("got %d messages", len(msgs))
	}
	m := msgs[0]
	if len(m.To) != 1 || m.Header.Get("Bcc") != "" || m.Header.Get("X-Evil") != "" {
		t.Errorf("injected header or recipient: to %v, headers %v", m.To, m.Header)
	}
	if head, _, _ := strings.Cut(string(m.Data), "\r\n\r\n"); strings.Contains(head, "\r\nBcc:") || strings.Contains(head, "\r\nX-Evil:") {
		t.Errorf("raw header block carries injected lines:\n%s", head)
	}
}

// slowSender delays every send, like an SMTP server that takes its time.
type slowSender struct {
	mail.Sender
	delay time.Duration
}

func (s slowSender) Send(ctx context.Context, m mail.Message) error {
	time.Sleep(s.delay)
	return s.Sender.Send(ctx, m)
}

// TestDispatcher_SlowBatchKeepsLease: a batch slower than its lease must not
// let a second dispatcher send the same messages again.
func TestDispatcher_SlowBatchKeepsLease(t *testing.T) {
	e := newOutboxEnv(t, "sqlite", "")
	srv := smtptest.Start(t)
	const n = 10
	for i := range n {
		e.invite(t, "slow"+strconv.Itoa(i)+"@example.com")
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for range 2 {
		// Ten sends of 300 ms outlast a 2 s lease, so the batch must stop
		// starting messages at half the lease; the 1 s left for each send
		// is margin enough on a loaded CI machine with -race (a 500 ms
		// lease for 150 ms sends once gave a duplicate there).
		sender := slowSender{Sender: smtpSenderTo(t, srv.Host(), srv.Port()), delay: 300 * time.Millisecond}
		d := mail.NewDispatcher(e.st, sender, fastRetries(mail.DispatcherConfig{Lease: 2 * time.Second, BatchSize: n}), quiet)
		wg.Add(1)
		go func() { defer wg.Done(); d.Run(ctx) }()
	}
	srv.WaitFor(t, n, 30*time.Second)
	time.Sleep(300 * time.Millisecond) // a duplicate, if any, arrives meanwhile
	cancel()
	wg.Wait()
	if got := len(srv.Messages()); got != n {
		t.Errorf("got %d messages, want %d (each once)", got, n)
	}
}

// countingSender counts the sends tried per recipient, whatever their outcome
// (the SMTP server cannot count the attempts made while it is down).
type countingSender struct {
	mail.Sender
	mu    sync.Mutex
	tries map[string]int
}

func (s *countingSender) Send(ctx context.Context, m mail.Message) error {
	s.mu.Lock()
	s.tries[m.To]++
	s.mu.Unlock()
	return s.Sender.Send(ctx, m)
}

// fewestTries is the smallest number of sends tried for any of emails.
func (s *countingSender) fewestTries(emails []string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	fewest := s.tries[emails[0]]
	for _, e := range emails {
		fewest = min(fewest, s.tries[e])
	}
	return fewest
}

// TestDispatcher_OutlastsOutage: SMTP stays down for far more attempts than
// the old budget (8) allowed, then comes back: every email is delivered,
// exactly once each, and none failed meanwhile.
func TestDispatcher_OutlastsOutage(t *testing.T) {
	eachDialect(t, func(t *testing.T, dialect string) {
		e := newOutboxEnv(t, dialect, "")
		port := freePort(t)
		sender := &countingSender{Sender: smtpSenderTo(t, "127.0.0.1", port), tries: map[string]int{}}
		d := mail.NewDispatcher(e.st, sender, fastRetries(mail.DispatcherConfig{}), quiet)
		var emails []string
		for i := range 5 {
			emails = append(emails, "user"+strconv.Itoa(i)+"@example.com")
			e.invite(t, emails[i])
		}
		const outageAttempts = 20
		drain(t, d, func() bool { return sender.fewestTries(emails) >= outageAttempts })
		if c := e.counts(t); c[store.OutboxPending] != int64(len(emails)) || c[store.OutboxFailed] != 0 {
			t.Fatalf("after %d failed attempts each: %v, want every message still pending", outageAttempts, c)
		}
		srv := smtptest.StartOn(t, "127.0.0.1:"+strconv.Itoa(port))
		drain(t, d, func() bool { return e.counts(t)[store.OutboxSent] == int64(len(emails)) })
		for range 3 {
			if _, err := d.RunOnce(context.Background()); err != nil { // a duplicate, if any, would be sent now
				t.Fatal(err)
			}
		}
		perRecipient := map[string]int{}
		for _, m := range srv.Messages() {
			perRecipient[strings.Join(m.To, ",")]++
		}
		for _, email := range emails {
			if perRecipient[email] != 1 {
				t.Errorf("%s received %d messages, want 1 (all: %v)", email, perRecipient[email], perRecipient)
			}
		}
		if len(perRecipient) != len(emails) {
			t.Errorf("recipients %v, want exactly %v", perRecipient, emails)
		}
	})
}

// TestDispatcher_GivesUpByAge: a transient failure fails a message only once
// it is older than GiveUpAfter (72h by default), however few its attempts;
// RequeueFailedOutbox gives it a fresh period and it is then delivered once.
func TestDispatcher_GivesUpByAge(t *testing.T) {
	eachDialect(t, func(t *testing.T, dialect string) {
		var offset atomic.Int64 // the store's clock is this far from now
		e := newOutboxEnvAt(t, dialect, "", func() time.Time { return time.Now().Add(time.Duration(offset.Load())) })
		offset.Store(int64(-72*time.Hour - time.Minute))
		e.invite(t, "old@example.com")
		offset.Store(int64(-71 * time.Hour))
		e.invite(t, "young@example.com")
		offset.Store(0)

		srv := smtptest.Start(t)
		srv.Reply(func(int) error {
			return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "try later"}
		})
		d := mail.NewDispatcher(e.st, smtpSenderTo(t, srv.Host(), srv.Port()), mail.DispatcherConfig{}, quiet)
		if n, err := d.RunOnce(context.Background()); n != 2 || err != nil {
			t.Fatalf("RunOnce: %d, %v; want both messages tried", n, err)
		}
		if c := e.counts(t); c[store.OutboxFailed] != 1 || c[store.OutboxPending] != 1 {
			t.Fatalf("counts %v: want the 72h+ old message failed after one transient failure, the 71h old one pending", c)
		}
		failed, err := e.st.FailedOutbox(context.Background(), 10)
		if err != nil || len(failed) != 1 || failed[0].Email != "old@example.com" || !strings.Contains(failed[0].LastError, "451") {
			t.Fatalf("failed messages: %+v, %v; want old@example.com with the 451 reply as its last error", failed, err)
		}

		srv.Reply(nil)
		requeued, skipped, err := e.st.RequeueFailedOutbox(context.Background(), store.OutboxFilter{})
		if requeued != 1 || skipped != 0 || err != nil {
			t.Fatalf("requeue: %d requeued, %d skipped, %v; want 1, 0", requeued, skipped, err)
		}
		// Sent now although its invitation is older than GiveUpAfter: the
		// requeue restarted its age. (young@ waits out its backoff.)
		drain(t, d, func() bool { return len(srv.Messages()) == 1 })
		if m := srv.Messages()[0]; m.To[0] != "old@example.com" {
			t.Errorf("delivered to %v, want old@example.com", m.To)
		}
		if c := e.counts(t); c[store.OutboxFailed] != 0 || c[store.OutboxSent] != 1 {
			t.Errorf("counts %v after the requeue, want one sent, none failed", c)
		}
	})
}
