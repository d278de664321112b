// Package smtptest runs a real SMTP server (emersion/go-smtp) inside a test
// process, records what it accepts and can be told to reject deliveries, so
// tests of mail delivery talk SMTP for real instead of mocking a sender.
package smtptest

import (
	"bytes"
	"context"
	"io"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net"
	netmail "net/mail"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// Message is one message the server accepted.
type Message struct {
	From   string   // envelope sender
	To     []string // envelope recipients
	Data   []byte   // raw DATA
	Header netmail.Header
	Text   string // decoded text/plain part
	HTML   string // decoded text/html part
}

// Server is a running SMTP server on loopback.
type Server struct {
	srv  *smtp.Server
	addr *net.TCPAddr

	mu          sync.Mutex
	messages    []Message
	attempts    int
	connections int
	reply       func(attempt int) error
	rcptErr     error
}

// Start runs a server on a free loopback port until the test ends.
func Start(tb testing.TB) *Server { return StartOn(tb, "127.0.0.1:0") }

// StartOn runs a server on addr (e.g. a port an earlier server left free).
func StartOn(tb testing.TB, addr string) *Server {
	tb.Helper()
	s := &Server{}
	s.srv = smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) {
		s.mu.Lock()
		s.connections++
		s.mu.Unlock()
		return &session{srv: s}, nil
	}))
	s.srv.Domain = "localhost"
	s.srv.ReadTimeout = 10 * time.Second
	s.srv.WriteTimeout = 10 * time.Second
	var lc net.ListenConfig
	l, err := lc.Listen(context.Background(), "tcp", addr)
	if err != nil {
		tb.Fatalf("smtptest: listen on %s: %v", addr, err)
	}
	s.addr = l.Addr().(*net.TCPAddr)
	go s.srv.Serve(l) //nolint:errcheck // returns once Close stops it; the tests see every other failure in what they receive
	tb.Cleanup(s.Close)
	return s
}

// Host is the server's IP address.
func (s *Server) Host() string { return s.addr.IP.String() }

// Port is the server's TCP port.
func (s *Server) Port() int { return s.addr.Port }

// Addr is host:port.
func (s *Server) Addr() string { return s.addr.String() }

// Close stops the server; later connections are refused.
func (s *Server) Close() {
	s.srv.Close() //nolint:errcheck // at cleanup: the test has already seen what the server received
}

// Reply decides the answer to each DATA command: fn gets the attempt number
// (1, 2, …) and returns nil to accept or an *smtp.SMTPError to reject.
func (s *Server) Reply(fn func(attempt int) error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reply = fn
}

// RejectRcpt makes every RCPT TO answer err (an *smtp.SMTPError); nil accepts again.
func (s *Server) RejectRcpt(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rcptErr = err
}

// Connections counts the SMTP sessions opened so far.
func (s *Server) Connections() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.connections
}

// Attempts counts the messages that reached DATA, accepted or not.
func (s *Server) Attempts() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.attempts
}

// Messages returns the accepted messages so far.
func (s *Server) Messages() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Message(nil), s.messages...)
}

// WaitFor waits until at least n messages were accepted, failing the test
// after timeout (a bound on waiting, not a timing assertion).
func (s *Server) WaitFor(tb testing.TB, n int, timeout time.Duration) []Message {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if msgs := s.Messages(); len(msgs) >= n {
			return msgs
		}
		if time.Now().After(deadline) {
			tb.Fatalf("smtptest: %d message(s) after %v, want %d", len(s.Messages()), timeout, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

type session struct {
	srv  *Server
	from string
	to   []string
}

func (s *session) Reset()        { s.from, s.to = "", nil }
func (s *session) Logout() error { return nil }

func (s *session) Mail(from string, _ *smtp.MailOptions) error {
	s.from = from
	return nil
}

func (s *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	s.srv.mu.Lock()
	err := s.srv.rcptErr
	s.srv.mu.Unlock()
	if err != nil {
		return err
	}
	s.to = append(s.to, to)
	return nil
}

func (s *session) Data(r io.Reader) error {
	data, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	s.srv.mu.Lock()
	defer s.srv.mu.Unlock()
	s.srv.attempts++
	if s.srv.reply != nil {
		if err := s.srv.reply(s.srv.attempts); err != nil {
			return err
		}
	}
	s.srv.messages = append(s.srv.messages, parse(s.from, s.to, data))
	return nil
}

// parse decodes the headers and the text and HTML parts, best effort: a
// test asserting on them fails clearly when they are missing.
func parse(from string, to []string, data []byte) Message {
	m := Message{From: from, To: append([]string(nil), to...), Data: data}
	msg, err := netmail.ReadMessage(bytes.NewReader(data))
	if err != nil {
		return m
	}
	m.Header = msg.Header
	mediaType, params, err := mime.ParseMediaType(msg.Header.Get("Content-Type"))
	if err != nil || !strings.HasPrefix(mediaType, "multipart/") {
		body, _ := io.ReadAll(decode(msg.Body, msg.Header.Get("Content-Transfer-Encoding")))
		m.Text = string(body)
		return m
	}
	mr := multipart.NewReader(msg.Body, params["boundary"])
	for {
		part, err := mr.NextPart()
		if err != nil {
			return m
		}
		body, _ := io.ReadAll(decode(part, part.Header.Get("Content-Transfer-Encoding")))
		switch ct, _, _ := mime.ParseMediaType(part.Header.Get("Content-Type")); ct {
		case "text/plain":
			m.Text = string(body)
		case "text/html":
			m.HTML = string(body)
		}
	}
}

func decode(r io.Reader, encoding string) io.Reader {
	if strings.EqualFold(encoding, "quoted-printable") {
		return quotedprintable.NewReader(r)
	}
	return r
}
