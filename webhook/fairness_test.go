package webhook_test

import (
	"context"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/membership-api/controlplane/store"
	"github.com/membership-api/controlplane/store/storetest"
	"github.com/membership-api/controlplane/webhook"
)

// TestDispatcher_DeadWorkspaceDoesNotHoldOthers: workspace A has three
// endpoints that never answer and 1,002 messages queued for them; a
// message queued afterwards for workspace B's healthy endpoint is delivered
// while A's backlog is still pending, at the default timeout. One attempt
// at a time in message order (the old dispatcher) would have reached it
// after 1,002 timeouts of 10 s; the deadline below is three of them.
func TestDispatcher_DeadWorkspaceDoesNotHoldOthers(t *testing.T) {
	t.Parallel()
	storetest.EachDialect(t, func(t *testing.T, dialect string) {
		t.Parallel()
		ctx := context.Background()
		st := storetest.Open(t, dialect, store.Options{})
		dead := []*deadListener{newDeadListener(t), newDeadListener(t), newDeadListener(t)}
		workspaceWithEndpoints(t, st, "dead-a", []string{dead[0].URL, dead[1].URL, dead[2].URL})
		inviteN(t, st, "dead-a", "a", 334)
		rcv := &instant{}
		srv := httptest.NewServer(rcv)
		t.Cleanup(srv.Close)
		workspaceWithEndpoints(t, st, "live-b", []string{srv.URL + "/hook"})

		cfg := webhook.DefaultConfig()
		runDispatcher(t, st, webhook.Config{Timeout: cfg.Timeout})
		for _, d := range dead {
			t.Cleanup(d.hangUp) // before the dispatcher stops, which waits for its attempts
		}
		if !waitFor(t, time.Minute, func() bool { return dead[0].accepted() > 0 && dead[1].accepted() > 0 && dead[2].accepted() > 0 }) {
			t.Fatal("the dispatcher never tried A's endpoints")
		}
		inviteN(t, st, "live-b", "b", 1)
		if !waitFor(t, 3*cfg.Timeout, func() bool { return rcv.n.Load() >= 1 }) {
			t.Fatalf("B's message was not delivered within %v while A's endpoints hang", 3*cfg.Timeout)
		}
		endpoints, err := st.Webhooks(ctx, "dead-a")
		if err != nil {
			t.Fatal(err)
		}
		total, pending, tried := 0, 0, 0
		for _, e := range endpoints {
			msgs, err := st.WebhookMessages(ctx, e.ID)
			if err != nil {
				t.Fatal(err)
			}
			total += len(msgs)
			for _, m := range msgs {
				if m.Status == store.WebhookPending {
					pending++
				}
				if m.Attempts > 0 {
					tried++
				}
			}
		}
		// At most PerEndpoint attempts at once per endpoint: A's backlog
		// has hardly been touched.
		if total < 1002 || pending != total || tried > 3*cfg.PerEndpoint {
			t.Errorf("A: %d of %d messages pending, %d tried; want all pending and at most %d tried", pending, total, tried, 3*cfg.PerEndpoint)
		}
	})
}

// slowRecorder records attempts 20 ms late, so that claims run while
// outcomes are still being recorded.
type slowRecorder struct{ *store.Store }

func (s slowRecorder) RecordWebhookAttempts(ctx context.Context, token string, outcomes []store.WebhookOutcome, disableAfter time.Duration) ([]bool, error) {
	time.Sleep(20 * time.Millisecond)
	return s.Store.RecordWebhookAttempts(ctx, token, outcomes, disableAfter)
}

// TestDispatcher_BoundedEndpointsDrainWithoutPolling: four endpoints, at
// most one attempt in flight to each, outcomes recorded slowly, and a
// dispatcher that never polls, woken once. A message held back by its
// endpoint's bound is claimed once the previous attempt's outcome is
// recorded, not at the next poll: a claim made while that outcome was
// still being recorded came back empty, and nothing claimed again until
// the poll (an hour here; 250 ms by default, idle workers meanwhile).
func TestDispatcher_BoundedEndpointsDrainWithoutPolling(t *testing.T) {
	t.Parallel()
	storetest.EachDialect(t, func(t *testing.T, dialect string) {
		t.Parallel()
		st := storetest.Open(t, dialect, store.Options{})
		rcv := &instant{}
		srv := httptest.NewServer(rcv)
		t.Cleanup(srv.Close)
		urls := []string{srv.URL + "/a", srv.URL + "/b", srv.URL + "/c", srv.URL + "/d"}
		workspaceWithEndpoints(t, st, "one-at-a-time", urls)
		inviteN(t, st, "one-at-a-time", "m", 5) // 20 messages, and the endpoints' own creation events
		d := webhook.NewDispatcher(slowRecorder{st}, webhook.Config{PollInterval: time.Hour, PerEndpoint: 1, AllowLoopback: true}, quiet)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { d.Run(ctx); close(done) }()
		t.Cleanup(func() { cancel(); <-done })
		d.Wake()
		if !waitFor(t, 30*time.Second, func() bool { return rcv.n.Load() >= 20 }) {
			t.Fatalf("delivered %d of at least 20 messages without a poll: a claim waited for the next poll", rcv.n.Load())
		}
	})
}
