package mail

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// DefaultFrom is the sender address of messages written by FileSender.
const DefaultFrom = "no-reply@localhost"

// FileSender writes each message as an .eml file instead of sending it, so a
// server without SMTP configured still shows exactly what would be sent.
type FileSender struct {
	dir string
	log *slog.Logger
}

var _ Sender = (*FileSender)(nil)

// NewFileSender returns a sender that writes into dir (created on first
// Send) and logs each file and accept link to log (slog.Default if nil).
func NewFileSender(dir string, log *slog.Logger) *FileSender {
	if log == nil {
		log = slog.Default()
	}
	return &FileSender{dir: dir, log: log}
}

// Send writes m to dir as <Message-ID>.eml.
//
// The name depends only on the Message-ID, so a retry overwrites the same
// file; writing to a temporary file and renaming it means a reader never
// sees half a message.
func (s *FileSender) Send(ctx context.Context, m Message) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	msg, err := newMsg(m, sender{addr: DefaultFrom}, time.Now())
	if err != nil {
		return err
	}
	if err := os.MkdirAll(s.dir, 0o750); err != nil {
		return fmt.Errorf("mail: create mail directory: %w", err)
	}
	// The Message-ID passed messageIDPattern: no "/" or "\" can escape dir.
	name := filepath.Join(s.dir, strings.Trim(msg.GetMessageID(), "<>")+".eml")
	tmp, err := os.CreateTemp(s.dir, ".tmp-*.eml")
	if err != nil {
		return fmt.Errorf("mail: write %s: %w", name, err)
	}
	defer os.Remove(tmp.Name()) //nolint:errcheck // a no-op once renamed; else what went wrong is already returned
	if _, err := msg.WriteTo(tmp); err != nil {
		return fmt.Errorf("mail: write %s: %w", name, errors.Join(err, tmp.Close()))
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("mail: write %s: %w", name, err)
	}
	if err := os.Rename(tmp.Name(), name); err != nil {
		return fmt.Errorf("mail: write %s: %w", name, err)
	}
	s.log.InfoContext(ctx, "mail written to file instead of sent (no SMTP host configured)",
		"path", name, "to", m.To, "accept_url", m.AcceptURL)
	return nil
}
