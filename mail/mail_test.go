package mail_test

import (
	"bytes"
	"context"
	"errors"
	"html"
	"io"
	"log/slog"
	"mime"
	"mime/multipart"
	"net"
	netmail "net/mail"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/membership-api/controlplane/mail"
	"github.com/membership-api/controlplane/mail/smtptest"
)

// senderFor returns an SMTP sender delivering to srv.
func senderFor(tb testing.TB, srv *smtptest.Server) *mail.SMTPSender {
	tb.Helper()
	sender, err := mail.NewSMTPSender(mail.SMTPConfig{
		Host: srv.Host(), Port: srv.Port(), TLS: mail.TLSNone,
		From: "invites@blaxel.test", FromName: "Blaxel", Timeout: 5 * time.Second,
	})
	if err != nil {
		tb.Fatal(err)
	}
	return sender
}

// invitation renders a typical invitation into a Message for outbox row id.
func invitation(tb testing.TB, id int64, inv mail.Invitation) mail.Message {
	tb.Helper()
	if inv.AcceptURL == "" {
		u, err := mail.AcceptURL("", inv.WorkspaceName, inv.InviteeEmail)
		if err != nil {
			tb.Fatal(err)
		}
		inv.AcceptURL = u
	}
	subject, text, htmlBody, err := mail.Render(inv)
	if err != nil {
		tb.Fatal(err)
	}
	return mail.Message{
		ID: id, To: inv.InviteeEmail, Subject: subject, Text: text, HTML: htmlBody,
		MessageID: mail.MessageIDFor(id, "blaxel.test"), AcceptURL: inv.AcceptURL,
	}
}

var bobInvitation = mail.Invitation{
	InviterSub: "user-1", InviterEmail: "alice@blaxel.test", InviteeEmail: "bob+ws@example.com",
	WorkspaceName: "acme", WorkspaceDisplayName: "Acme Corp", Role: "member",
	ExpiresAt: time.Date(2030, 1, 2, 15, 4, 5, 0, time.FixedZone("CET", 3600)),
}

// parts parses a multipart/alternative message into its decoded bodies by
// content type.
func parts(tb testing.TB, msg *netmail.Message) map[string]string {
	tb.Helper()
	mediaType, params, err := mime.ParseMediaType(msg.Header.Get("Content-Type"))
	if err != nil {
		tb.Fatal(err)
	}
	if mediaType != "multipart/alternative" {
		tb.Fatalf("Content-Type: got %q, want multipart/alternative", mediaType)
	}
	got := map[string]string{}
	r := multipart.NewReader(msg.Body, params["boundary"])
	for {
		p, err := r.NextPart() // decodes quoted-printable
		if errors.Is(err, io.EOF) {
			return got
		}
		if err != nil {
			tb.Fatal(err)
		}
		ct, _, _ := mime.ParseMediaType(p.Header.Get("Content-Type"))
		body, err := io.ReadAll(p)
		if err != nil {
			tb.Fatal(err)
		}
		got[ct] = string(body)
	}
}

func readMessage(tb testing.TB, data []byte) *netmail.Message {
	tb.Helper()
	msg, err := netmail.ReadMessage(bytes.NewReader(data))
	if err != nil {
		tb.Fatalf("parse message: %v\n%s", err, data)
	}
	return msg
}

func TestSMTPSender_Send(t *testing.T) {
	srv := smtptest.Start(t)
	m := invitation(t, 42, bobInvitation)
	if err := senderFor(t, srv).Send(context.Background(), m); err != nil {
		t.Fatal(err)
	}

	got := srv.Messages()
	if len(got) != 1 {
		t.Fatalf("messages: got %d, want 1", len(got))
	}
	if want := []string{"bob+ws@example.com"}; !slices.Equal(got[0].To, want) {
		t.Errorf("RCPT TO: got %q, want %q", got[0].To, want)
	}
	if got[0].From != "invites@blaxel.test" {
		t.Errorf("MAIL FROM: got %q, want invites@blaxel.test", got[0].From)
	}
	msg := readMessage(t, got[0].Data)
	if got, want := msg.Header.Get("Subject"), "alice@blaxel.test invited you to join Acme Corp on Blaxel"; got != want {
		t.Errorf("Subject: got %q, want %q", got, want)
	}
	if got, want := msg.Header.Get("Message-Id"), "<invitation-42@blaxel.test>"; got != want {
		t.Errorf("Message-ID: got %q, want %q", got, want)
	}
	link := "http://localhost:3000/invitations/acme?email=bob%2Bws%40example.com"
	bodies := parts(t, msg)
	for _, ct := range []string{"text/plain", "text/html"} {
		body, ok := bodies[ct]
		if !ok {
			t.Errorf("no %s part in %q", ct, got[0].Data)
			continue
		}
		if ct == "text/html" {
			body = html.UnescapeString(body)
		}
		for _, want := range []string{link, "Acme Corp", "member", "alice@blaxel.test", "Wed, 02 Jan 2030 14:04:05 UTC"} {
			if !strings.Contains(body, want) {
				t.Errorf("%s part: no %q in\n%s", ct, want, body)
			}
		}
	}
}

func TestSMTPSender_Send_Errors(t *testing.T) {
	for _, tt := range []struct {
		name             string
		rcptErr, dataErr error
		permanent        bool
	}{
		{"RcptTransient", &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "try later"}, nil, false},
		{"RcptPermanent", &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"}, nil, true},
		{"DataTransient", nil, &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 3, 1}, Message: "disk full"}, false},
		{"DataPermanent", nil, &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 6, 0}, Message: "rejected"}, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv := smtptest.Start(t)
			srv.RejectRcpt(tt.rcptErr)
			if tt.dataErr != nil {
				srv.Reply(func(int) error { return tt.dataErr })
			}
			err := senderFor(t, srv).Send(context.Background(), invitation(t, 1, bobInvitation))
			if err == nil {
				t.Fatal("got no error")
			}
			t.Logf("Send: %v", err)
			if got := mail.IsPermanent(err); got != tt.permanent {
				t.Errorf("IsPermanent(%v): got %v, want %v", err, got, tt.permanent)
			}
			if n := len(srv.Messages()); n != 0 {
				t.Errorf("messages: got %d, want 0", n)
			}
		})
	}
}

func TestSMTPSender_Send_ServerDown(t *testing.T) {
	l, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	sender, err := mail.NewSMTPSender(mail.SMTPConfig{
		Host: "127.0.0.1", Port: port, TLS: mail.TLSNone, From: "invites@blaxel.test", Timeout: 2 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	err = sender.Send(context.Background(), invitation(t, 1, bobInvitation))
	if err == nil {
		t.Fatal("got no error")
	}
	if mail.IsPermanent(err) {
		t.Errorf("IsPermanent(%v): got true, want false", err)
	}
}

func TestSMTPSender_Send_Cancelled(t *testing.T) {
	srv := smtptest.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := senderFor(t, srv).Send(ctx, invitation(t, 1, bobInvitation))
	if err == nil || mail.IsPermanent(err) {
		t.Errorf("got %v, want a transient error", err)
	}
}

func TestSMTPSender_HeaderInjection(t *testing.T) {
	const inject = "\r\nBcc: eve@evil.test\r\nX-Injected: yes\r\n"

	t.Run("BadRecipient", func(t *testing.T) {
		for _, to := range []string{
			"bob@example.com" + inject,
			"bob@example.com\nBcc: eve@evil.test",
			"bob@example.com, eve@evil.test",
			"Bob <bob@example.com>",
			"",
		} {
			srv := smtptest.Start(t)
			m := invitation(t, 1, bobInvitation)
			m.To = to
			err := senderFor(t, srv).Send(context.Background(), m)
			if !mail.IsPermanent(err) || !errors.Is(err, mail.ErrInvalidMessage) {
				t.Errorf("Send to %q: got %v, want a permanent ErrInvalidMessage", to, err)
			}
			if srv.Connections() != 0 {
				t.Errorf("Send to %q: connected to the server, want no connection", to)
			}
		}
	})

	t.Run("Names", func(t *testing.T) {
		srv := smtptest.Start(t)
		inv := bobInvitation
		inv.WorkspaceDisplayName = "Acme" + inject
		inv.InviterEmail = "alice@blaxel.test" + inject
		inv.Role = "member" + inject
		m := invitation(t, 1, inv)
		m.ToName = "Bob" + inject
		if err := senderFor(t, srv).Send(context.Background(), m); err != nil {
			t.Fatal(err)
		}
		m.Subject = "Hi" + inject // bypassing Render
		if err := senderFor(t, srv).Send(context.Background(), m); err != nil {
			t.Fatal(err)
		}
		got := srv.Messages()
		if len(got) != 2 {
			t.Fatalf("messages: got %d, want 2", len(got))
		}
		for _, r := range got {
			if want := []string{"bob+ws@example.com"}; !slices.Equal(r.To, want) {
				t.Errorf("RCPT TO: got %q, want %q", r.To, want)
			}
			msg := readMessage(t, r.Data)
			for _, h := range []string{"Bcc", "X-Injected"} {
				if v, ok := msg.Header[h]; ok {
					t.Errorf("header %s: %q injected", h, v)
				}
			}
			// Only the header block: quoted-printable may wrap body lines
			// anywhere, which is harmless.
			header, _, _ := strings.Cut(string(r.Data), "\r\n\r\n")
			for line := range strings.SplitSeq(header, "\r\n") {
				if strings.HasPrefix(line, "Bcc:") || strings.HasPrefix(line, "X-Injected:") {
					t.Errorf("injected line %q in\n%s", line, r.Data)
				}
			}
			to, err := msg.Header.AddressList("To")
			if err != nil || len(to) != 1 || to[0].Address != "bob+ws@example.com" {
				t.Errorf("To: got %v (%v), want only bob+ws@example.com", to, err)
			}
		}
	})
}

func TestFileSender_Send(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "mail")
	var logs bytes.Buffer
	sender := mail.NewFileSender(dir, slog.New(slog.NewTextHandler(&logs, nil)))
	m := invitation(t, 7, bobInvitation)
	for range 2 { // a retry overwrites the same file
		if err := sender.Send(context.Background(), m); err != nil {
			t.Fatal(err)
		}
	}

	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Name() != "invitation-7@blaxel.test.eml" {
		t.Fatalf("files: got %v, want only invitation-7@blaxel.test.eml", entries)
	}
	data, err := os.ReadFile(filepath.Join(dir, entries[0].Name()))
	if err != nil {
		t.Fatal(err)
	}
	msg := readMessage(t, data)
	if got, want := msg.Header.Get("Message-Id"), "<invitation-7@blaxel.test>"; got != want {
		t.Errorf("Message-ID: got %q, want %q", got, want)
	}
	if got := msg.Header.Get("To"); got != "<bob+ws@example.com>" {
		t.Errorf("To: got %q, want <bob+ws@example.com>", got)
	}
	text := parts(t, msg)["text/plain"]
	if !strings.Contains(text, m.AcceptURL) {
		t.Errorf("text part: no link %q in\n%s", m.AcceptURL, text)
	}
	if !strings.Contains(logs.String(), m.AcceptURL) || !strings.Contains(logs.String(), entries[0].Name()) {
		t.Errorf("log: want the path and the link, got\n%s", logs.String())
	}
}

func TestRender_EscapesHTML(t *testing.T) {
	inv := bobInvitation
	inv.WorkspaceDisplayName = `<script>alert("x")</script>`
	inv.AcceptURL = `javascript:alert(1)`
	_, text, htmlBody, err := mail.Render(inv)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(htmlBody, "<script>") || !strings.Contains(htmlBody, "&lt;script&gt;") {
		t.Errorf("HTML part: display name not escaped:\n%s", htmlBody)
	}
	if strings.Contains(htmlBody, "javascript:") {
		t.Errorf("HTML part: javascript: link kept:\n%s", htmlBody)
	}
	if !strings.Contains(text, `<script>alert("x")</script>`) {
		t.Errorf("text part: want the display name verbatim, got\n%s", text)
	}
}

func TestRender_Missing(t *testing.T) {
	inv := bobInvitation
	inv.AcceptURL = ""
	if _, _, _, err := mail.Render(inv); err == nil {
		t.Error("got no error for a missing accept link")
	}
}

func TestAcceptURL(t *testing.T) {
	for _, tt := range []struct {
		tmpl, workspace, email, want string
	}{
		{"", "acme", "bob@example.com", "http://localhost:3000/invitations/acme?email=bob%40example.com"},
		{"https://app.blaxel.test/{workspace}/join?email={email}&ws={workspace}", "a b/c?d", "a+b&c=d@x.io",
			"https://app.blaxel.test/a%20b%2Fc%3Fd/join?email=a%2Bb%26c%3Dd%40x.io&ws=a+b%2Fc%3Fd"},
		{"https://app.blaxel.test/invite/{email}", "acme", "bob@x.io", "https://app.blaxel.test/invite/bob@x.io"},
	} {
		got, err := mail.AcceptURL(tt.tmpl, tt.workspace, tt.email)
		if err != nil || got != tt.want {
			t.Errorf("AcceptURL(%q, %q, %q): got %q, %v, want %q", tt.tmpl, tt.workspace, tt.email, got, err, tt.want)
		}
	}
	for _, tmpl := range []string{"/relative/{workspace}", "javascript:alert({email})", "http://%zz/{workspace}"} {
		if got, err := mail.AcceptURL(tmpl, "acme", "bob@x.io"); err == nil {
			t.Errorf("AcceptURL(%q): got %q, want an error", tmpl, got)
		}
	}
}

func TestMessageIDFor(t *testing.T) {
	for _, tt := range []struct {
		id     int64
		domain string
		want   string
	}{
		{42, "blaxel.ai", "<invitation-42@blaxel.ai>"},
		{1, "", "<invitation-1@localhost>"},
		{2, "evil>\r\nBcc: x", "<invitation-2@evilBccx>"},
	} {
		if got := mail.MessageIDFor(tt.id, tt.domain); got != tt.want {
			t.Errorf("MessageIDFor(%d, %q): got %q, want %q", tt.id, tt.domain, got, tt.want)
		}
	}
}

func TestSMTPConfig_HidesPassword(t *testing.T) {
	cfg := mail.SMTPConfig{Host: "smtp.test", Port: 587, Username: "u", Password: "s3cret", From: "a@b.test"}
	var logs bytes.Buffer
	slog.New(slog.NewJSONHandler(&logs, nil)).Info("config", "smtp", cfg)
	for _, s := range []string{cfg.String(), logs.String()} {
		if strings.Contains(s, "s3cret") {
			t.Errorf("password in %q", s)
		}
	}
	if _, err := mail.NewSMTPSender(mail.SMTPConfig{Host: "smtp.test", From: "a@b.test", TLS: "ssl", Password: "s3cret"}); err == nil || strings.Contains(err.Error(), "s3cret") {
		t.Errorf("bad TLS mode: got %v, want an error without the password", err)
	}
}
