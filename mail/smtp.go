package mail

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"

	gomail "github.com/wneessen/go-mail"
)

// DefaultSMTPTimeout bounds each SMTP connection attempt and command when
// no timeout is set (go-mail's own default; the --smtp-timeout flag's too).
const DefaultSMTPTimeout = gomail.DefaultTimeout

// TLSMode is how SMTPSender protects the connection.
type TLSMode string

// The TLS modes an SMTPConfig accepts.
const (
	TLSNone     TLSMode = "none"     // plain text; only for a relay on localhost or a trusted network
	TLSStartTLS TLSMode = "starttls" // upgrade with STARTTLS and fail if the server cannot
	TLSImplicit TLSMode = "tls"      // TLS from the first byte ("SMTPS")
)

// SMTPConfig says where and how SMTPSender delivers mail.
type SMTPConfig struct {
	Host     string
	Port     int     // 0 means 25, 587 or 465 depending on TLS
	Username string  // empty means no AUTH
	Password string  // never logged nor included in errors
	TLS      TLSMode // empty means TLSStartTLS
	From     string  // bare envelope and header sender address
	FromName string
	Timeout  time.Duration // per connection attempt and per command; 0 means DefaultSMTPTimeout
	HELO     string        // empty means the host name
}

// String describes c without its password, so %v is safe in logs.
func (c SMTPConfig) String() string {
	return fmt.Sprintf("smtp://%s@%s (tls=%s, from=%s)", c.Username, net.JoinHostPort(c.Host, strconv.Itoa(c.Port)), c.TLS, c.From)
}

// LogValue keeps the password out of structured logs, JSON ones included.
func (c SMTPConfig) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("host", c.Host), slog.Int("port", c.Port), slog.String("username", c.Username),
		slog.String("tls", string(c.TLS)), slog.String("from", c.From), slog.Duration("timeout", c.Timeout),
	)
}

// SMTPSender delivers messages to an SMTP server, one connection per message.
type SMTPSender struct {
	from sender
	addr string // host:port, for error messages
	opts []gomail.Option
	host string
}

var _ Sender = (*SMTPSender)(nil)

// NewSMTPSender checks cfg and returns a sender for it; it does not connect.
func NewSMTPSender(cfg SMTPConfig) (*SMTPSender, error) {
	if cfg.Host == "" {
		return nil, errors.New("mail: SMTP host is required")
	}
	from, err := parseAddress(cfg.From)
	if err != nil {
		return nil, fmt.Errorf("mail: SMTP from address %q is not a single bare address", cfg.From)
	}
	if cfg.TLS == "" {
		cfg.TLS = TLSStartTLS
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultSMTPTimeout
	}
	// WithoutNoop: the connection is always fresh, so checking it costs a
	// round trip for nothing.
	opts := []gomail.Option{gomail.WithTimeout(cfg.Timeout), gomail.WithoutNoop()}
	port := cfg.Port
	switch cfg.TLS {
	case TLSNone:
		opts = append(opts, gomail.WithTLSPolicy(gomail.NoTLS))
		if port == 0 {
			port = gomail.DefaultPort
		}
	case TLSStartTLS:
		opts = append(opts, gomail.WithTLSPolicy(gomail.TLSMandatory))
		if port == 0 {
			port = gomail.DefaultPortTLS
		}
	case TLSImplicit:
		opts = append(opts, gomail.WithSSL())
		if port == 0 {
			port = gomail.DefaultPortSSL
		}
	default:
		return nil, fmt.Errorf("mail: SMTP TLS mode %q: want none, starttls or tls", cfg.TLS)
	}
	opts = append(opts, gomail.WithPort(port))
	if cfg.HELO != "" {
		opts = append(opts, gomail.WithHELO(cfg.HELO))
	}
	if cfg.Username != "" {
		// Auto-discovery picks the strongest mechanism the server offers and
		// never sends PLAIN or LOGIN over an unencrypted connection.
		opts = append(opts, gomail.WithSMTPAuth(gomail.SMTPAuthAutoDiscover),
			gomail.WithUsername(cfg.Username), gomail.WithPassword(cfg.Password))
	}
	s := &SMTPSender{
		from: sender{name: cfg.FromName, addr: from},
		addr: net.JoinHostPort(cfg.Host, strconv.Itoa(port)),
		opts: opts,
		host: cfg.Host,
	}
	if _, err := s.client(); err != nil {
		return nil, err
	}
	return s, nil
}

// client returns a new go-mail client; one per Send keeps concurrent sends
// from sharing any connection state.
func (s *SMTPSender) client() (*gomail.Client, error) {
	c, err := gomail.NewClient(s.host, s.opts...)
	if err != nil {
		return nil, fmt.Errorf("mail: SMTP client for %s: %w", s.addr, err)
	}
	return c, nil
}

// Send delivers m over a new SMTP connection; see IsPermanent for which
// errors are worth retrying.
func (s *SMTPSender) Send(ctx context.Context, m Message) error {
	msg, err := newMsg(m, s.from, time.Now())
	if err != nil {
		return err
	}
	c, err := s.client()
	if err != nil {
		return err
	}
	conn, err := c.DialToSMTPClientWithContext(ctx)
	if err != nil {
		return fmt.Errorf("mail: connect to %s: %w", s.addr, err)
	}
	// go-mail honours ctx only while dialling; closing the connection makes
	// a cancelled send return instead of waiting for the command timeout.
	stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
	defer stop()
	defer func() {
		// Not DialAndSend: it reports a failed QUIT as a send error, although
		// the server has already accepted the message, and a retry would
		// deliver it twice. A failed QUIT also leaves the socket open.
		if c.CloseWithSMTPClient(conn) != nil {
			_ = conn.Close()
		}
	}()
	if err := c.SendWithSMTPClient(conn, msg); err != nil {
		return fmt.Errorf("mail: send %s via %s: %w", msg.GetMessageID(), s.addr, err)
	}
	return nil
}
