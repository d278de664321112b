// Package mail renders invitation emails and delivers them, over SMTP or as
// .eml files on disk.
//
// Delivery is at-least-once: a caller (the outbox dispatcher) retries a
// message until Send succeeds or IsPermanent reports that retrying is
// pointless. Each message carries a Message-ID derived from its outbox row,
// so a retry after an unknown outcome can be recognised downstream.
package mail

import (
	"context"
	"errors"
	"fmt"
	netmail "net/mail"
	"regexp"
	"strconv"
	"strings"
	"time"

	gomail "github.com/wneessen/go-mail"
)

// Message is one email ready to send, as stored in an outbox row.
type Message struct {
	ID        int64  // outbox row id; names the .eml file and the Message-ID
	To        string // bare address, e.g. "bob@example.com"; one recipient only
	ToName    string // optional display name for To
	Subject   string
	Text      string // text/plain part
	HTML      string // text/html part
	MessageID string // e.g. "<invitation-42@example.com>"; MessageIDFor(ID, domain of From) if empty
	AcceptURL string // logged by FileSender so a newcomer can follow it
	Workspace string // the workspace invited to (not sent: a dev server's mailbox shows it)
}

// Sender delivers one message.
type Sender interface {
	// Send delivers m; an error for which IsPermanent is true means a retry
	// would fail the same way, any other error may succeed later.
	Send(ctx context.Context, m Message) error
}

// ErrInvalidMessage is wrapped by Send errors for messages that can never be
// sent as given (an address with CR/LF, several recipients, a malformed
// Message-ID); IsPermanent reports true for it.
var ErrInvalidMessage = errors.New("mail: invalid message")

// IsPermanent reports whether err means the message will never be delivered:
// an ErrInvalidMessage, or a 5xx reply to MAIL FROM, RCPT TO or DATA.
//
// Everything else is transient, including 5xx replies while connecting
// (greeting, EHLO, STARTTLS, AUTH): those concern the server or our
// configuration, not the message, and marking every message failed because of
// a wrong password would lose mail an operator could still rescue.
func IsPermanent(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, ErrInvalidMessage) {
		return true
	}
	// go-mail's SendError has no Unwrap, so the *textproto.Error with the
	// reply code is unreachable through errors.As; ErrorCode is the only
	// handle on it. IsTemp is no substitute: it is false for network errors.
	var sendErr *gomail.SendError
	if errors.As(err, &sendErr) {
		code := sendErr.ErrorCode()
		return code >= 500 && code <= 599
	}
	return false
}

// MessageIDFor returns the RFC 5322 Message-ID of the invitation email stored
// in outbox row outboxID, e.g. "<invitation-42@example.com>".
//
// It depends only on its arguments so every retry of a row carries the same
// Message-ID. Characters not allowed in a domain are dropped; an empty
// domain becomes "localhost".
func MessageIDFor(outboxID int64, domain string) string {
	domain = strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '-' {
			return r
		}
		return -1
	}, domain)
	domain = strings.Trim(domain, ".")
	if domain == "" {
		domain = "localhost"
	}
	return "<invitation-" + strconv.FormatInt(outboxID, 10) + "@" + domain + ">"
}

// messageIDPattern accepts the form MessageIDFor produces and little more:
// anything wider (quoted local parts, "/", domain literals) is not needed and
// harder to prove harmless in a header or, for FileSender, in a file name.
var messageIDPattern = regexp.MustCompile(`^<[A-Za-z0-9._+=-]+@[A-Za-z0-9.-]+>$`)

// parseAddress accepts exactly one bare address (no display name, no list, no
// control characters), so nothing in it can add a header or a recipient.
func parseAddress(s string) (string, error) {
	if s == "" || strings.ContainsFunc(s, isControl) {
		return "", fmt.Errorf("%w: address %q", ErrInvalidMessage, s)
	}
	a, err := netmail.ParseAddress(s)
	if err != nil || a.Name != "" || a.Address != s {
		return "", fmt.Errorf("%w: address %q is not a single bare address", ErrInvalidMessage, s)
	}
	return a.Address, nil
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f }

// oneLine replaces control characters (CR, LF, TAB, ...) by spaces and
// collapses runs of whitespace, so a user-supplied string stays one header
// value or one line of text. go-mail Q-encodes only non-ASCII header values,
// so a CR/LF reaching it would start a new header.
func oneLine(s string) string {
	return strings.Join(strings.Fields(strings.Map(func(r rune) rune {
		if isControl(r) {
			return ' '
		}
		return r
	}, s)), " ")
}

// sender is the From address of outgoing mail.
type sender struct {
	name, addr string
}

// newMsg validates m and builds the go-mail message shared by both senders.
func newMsg(m Message, from sender, now time.Time) (*gomail.Msg, error) {
	to, err := parseAddress(m.To)
	if err != nil {
		return nil, err
	}
	id := m.MessageID
	if id == "" {
		id = MessageIDFor(m.ID, from.addr[strings.LastIndexByte(from.addr, '@')+1:])
	}
	if !messageIDPattern.MatchString(id) {
		return nil, fmt.Errorf("%w: Message-ID %q", ErrInvalidMessage, id)
	}
	if m.Text == "" || m.HTML == "" {
		return nil, fmt.Errorf("%w: text and HTML parts are both required", ErrInvalidMessage)
	}

	msg := gomail.NewMsg()
	msg.FromMailAddress(&netmail.Address{Name: oneLine(from.name), Address: from.addr})
	msg.ToMailAddress(&netmail.Address{Name: oneLine(m.ToName), Address: to})
	msg.Subject(oneLine(m.Subject))
	msg.SetMessageIDWithValue(strings.Trim(id, "<>")) // go-mail adds the brackets
	msg.SetDateWithValue(now)
	msg.SetBodyString(gomail.TypeTextPlain, m.Text)
	msg.AddAlternativeString(gomail.TypeTextHTML, m.HTML)
	return msg, nil
}
