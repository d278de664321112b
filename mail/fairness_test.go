package mail_test

import (
	"context"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/membership-api/controlplane/mail"
	"github.com/membership-api/controlplane/mail/smtptest"
)

// stallingSender holds the sends to one recipient until released, as an
// SMTP server stalling on one address would, and passes the others on.
type stallingSender struct {
	mail.Sender
	to      string
	release chan struct{}
	once    sync.Once
	stalled chan struct{}
}

func (s *stallingSender) Send(ctx context.Context, m mail.Message) error {
	if m.To == s.to {
		s.once.Do(func() { close(s.stalled) })
		<-s.release
	}
	return s.Sender.Send(ctx, m)
}

// TestDispatcher_StalledRecipientDoesNotHoldTheQueue: while the send to
// one recipient hangs, the emails queued after it are all sent; the stalled
// one goes out once its send returns.
func TestDispatcher_StalledRecipientDoesNotHoldTheQueue(t *testing.T) {
	eachDialect(t, func(t *testing.T, dialect string) {
		e := newOutboxEnv(t, dialect, "")
		srv := smtptest.Start(t)
		sender := &stallingSender{Sender: smtpSenderTo(t, srv.Host(), srv.Port()), to: "stuck@example.com",
			release: make(chan struct{}), stalled: make(chan struct{})}
		e.invite(t, "stuck@example.com")
		const n = 20
		for i := range n {
			e.invite(t, "user"+strconv.Itoa(i)+"@example.com")
		}
		d := mail.NewDispatcher(e.st, sender, fastRetries(mail.DispatcherConfig{}), quiet)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { d.Run(ctx); close(done) }()
		var unstall sync.Once
		release := func() { unstall.Do(func() { close(sender.release) }) }
		defer func() { release(); cancel(); <-done }() // the dispatcher stops once its sends return
		<-sender.stalled
		srv.WaitFor(t, n, 30*time.Second) // every other email, while the first send hangs
		release()
		srv.WaitFor(t, n+1, 30*time.Second)
	})
}
