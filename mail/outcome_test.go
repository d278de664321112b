package mail_test

import (
	"context"
	"maps"
	"sync"
	"testing"

	"github.com/emersion/go-smtp"

	"github.com/membership-api/controlplane/mail"
	"github.com/membership-api/controlplane/mail/smtptest"
	"github.com/membership-api/controlplane/store"
)

// TestDispatcher_OnOutcome: every attempt is reported once with its
// outcome: two transient failures then a send; a permanent failure; a
// cancelled email of a revoked invitation.
func TestDispatcher_OnOutcome(t *testing.T) {
	e := newOutboxEnv(t, "sqlite", "")
	srv := smtptest.Start(t)
	var mu sync.Mutex
	got := map[string]int{}
	d := mail.NewDispatcher(e.st, smtpSenderTo(t, srv.Host(), srv.Port()), fastRetries(mail.DispatcherConfig{}), quiet)
	d.OnOutcome(func(o string) { mu.Lock(); got[o]++; mu.Unlock() })
	outcomes := func() map[string]int { mu.Lock(); defer mu.Unlock(); return maps.Clone(got) }

	// Attempts are numbered across messages: bob's first three, then carol's.
	srv.Reply(func(attempt int) error {
		switch n := attempt; {
		case n <= 2:
			return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "try later"}
		case n == 3:
			return nil
		default:
			return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"}
		}
	})
	e.invite(t, "bob@example.com")
	drain(t, d, func() bool { return e.counts(t)[store.OutboxPending] == 0 })
	e.invite(t, "carol@example.com")
	drain(t, d, func() bool { return e.counts(t)[store.OutboxPending] == 0 })
	e.invite(t, "dave@example.com")
	if err := e.st.RemoveUser(context.Background(), "acme", "admin", "dave@example.com"); err != nil {
		t.Fatal(err)
	}
	drain(t, d, func() bool { return e.counts(t)[store.OutboxPending] == 0 })
	want := map[string]int{mail.OutcomeRetry: 2, mail.OutcomeSent: 1, mail.OutcomeFailed: 1, mail.OutcomeCancelled: 1}
	if o := outcomes(); !maps.Equal(o, want) {
		t.Errorf("outcomes %v, want %v", o, want)
	}
}
