package devserver

import (
	"context"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/membership-api/controlplane/mail"
	"github.com/membership-api/controlplane/server"
)

// Email is one email a dev server sent, as its mailbox keeps it.
type Email = server.DevEmail

// Mailbox is a dev server's mail.Sender: it keeps what it is given, in
// memory, instead of sending it.
type Mailbox struct {
	now func() time.Time

	mu     sync.Mutex
	emails []Email
}

var _ mail.Sender = (*Mailbox)(nil)

// Send keeps m. A retried message (same outbox row) replaces its first copy.
func (b *Mailbox) Send(_ context.Context, m mail.Message) error {
	e := Email{ID: m.ID, To: m.To, Subject: m.Subject, Text: m.Text, HTML: m.HTML, AcceptURL: m.AcceptURL,
		Workspace: m.Workspace, SentAt: b.now()}
	b.mu.Lock()
	defer b.mu.Unlock()
	for i := range b.emails {
		if b.emails[i].ID == m.ID {
			b.emails[i] = e
			return nil
		}
	}
	b.emails = append(b.emails, e)
	if len(b.emails) > maxMailbox {
		b.emails = slices.Delete(b.emails, 0, len(b.emails)-maxMailbox)
	}
	return nil
}

// maxMailbox bounds the mailbox of a long-running dev server: the oldest
// emails go first (a test reads what it just caused).
const maxMailbox = 10000

// Emails returns the emails sent so far, oldest first; with to, only those
// to that address (case-insensitive).
func (b *Mailbox) Emails(to string) []Email {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]Email, 0, len(b.emails))
	for _, e := range b.emails {
		if to == "" || strings.EqualFold(e.To, strings.TrimSpace(to)) {
			out = append(out, e)
		}
	}
	return out
}

// Email returns the email with id.
func (b *Mailbox) Email(id int64) (Email, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, e := range b.emails {
		if e.ID == id {
			return e, true
		}
	}
	return Email{}, false
}

// Clear empties the mailbox.
func (b *Mailbox) Clear() {
	b.mu.Lock()
	b.emails = nil
	b.mu.Unlock()
}
