package store_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/membership-api/controlplane/store"
)

// queueEnv is a workspace with endpoints and messages queued for them.
type queueEnv struct {
	t   *testing.T
	st  *store.Store
	clk *clock
	ws  string
}

func (q queueEnv) endpoint(url string) store.WebhookEndpoint {
	q.t.Helper()
	ep, err := q.st.CreateWebhook(context.Background(), q.ws, "admin-"+q.ws, store.WebhookInput{URL: &url})
	if err != nil {
		q.t.Fatal(err)
	}
	return ep
}

// invite queues n invitations (a message per endpoint each).
func (q queueEnv) invite(prefix string, n int) {
	q.t.Helper()
	var ps []store.InviteParams
	for i := range n {
		ps = append(ps, store.InviteParams{Workspace: q.ws, Caller: "admin-" + q.ws, Email: fmt.Sprintf("%s%d@%s.test", prefix, i, q.ws), TTL: time.Hour})
	}
	for _, r := range q.st.InviteMany(context.Background(), ps) {
		if r.Err != nil {
			q.t.Fatal(r.Err)
		}
	}
}

func (q queueEnv) claim(token string, limit int) []store.WebhookItem {
	q.t.Helper()
	items, err := q.st.ClaimWebhooks(context.Background(), token, limit, time.Minute)
	if err != nil {
		q.t.Fatal(err)
	}
	return items
}

// fail records a failed attempt of item (retry in a second), the
// endpoint's backoff a minute a step.
func (q queueEnv) fail(item store.WebhookItem, token string) {
	q.t.Helper()
	r := store.WebhookResult{Outcome: store.AttemptRetry, Started: q.clk.Now(), Error: "timed out", Next: q.clk.Now().Add(time.Second),
		EndpointBackoff: func(n int) time.Duration { return time.Duration(n) * time.Minute }}
	if _, err := q.st.RecordWebhookAttempt(context.Background(), item, token, r, time.Hour); err != nil {
		q.t.Fatal(err)
	}
}

func (q queueEnv) deliver(item store.WebhookItem, token string) {
	q.t.Helper()
	r := store.WebhookResult{Outcome: store.AttemptDelivered, Started: q.clk.Now(), StatusCode: 204}
	if _, err := q.st.RecordWebhookAttempt(context.Background(), item, token, r, time.Hour); err != nil {
		q.t.Fatal(err)
	}
}

func (q queueEnv) endpointState(id int64) store.WebhookEndpoint {
	q.t.Helper()
	e, err := q.st.Webhook(context.Background(), q.ws, id)
	if err != nil {
		q.t.Fatal(err)
	}
	return e
}

func countBy(items []store.WebhookItem) map[int64]int {
	out := map[int64]int{}
	for _, it := range items {
		out[it.EndpointID]++
	}
	return out
}

// TestWebhookQueue_EndpointBackoff: at most DefaultWebhooksPerEndpoint
// attempts in flight per endpoint, whoever claims; a failing endpoint is
// backed off as a whole, then gets one probe at a time (held against
// every other claimer), each failed probe one step further; a success
// clears it. The failures of attempts already in flight add no step.
func TestWebhookQueue_EndpointBackoff(t *testing.T) {
	eachDialect(t, func(t *testing.T, st *store.Store, clk *clock) {
		mustWorkspace(t, st, "q")
		q := queueEnv{t, st, clk, "q"}
		ep := q.endpoint("https://dead.example.com/hook")
		q.invite("u", 10)

		first := q.claim("d1", 100)
		if len(first) != store.DefaultWebhooksPerEndpoint {
			t.Fatalf("first claim: %d messages, want the per-endpoint bound %d", len(first), store.DefaultWebhooksPerEndpoint)
		}
		if got := q.claim("d2", 100); len(got) != 0 {
			t.Fatalf("another dispatcher's claim: %d messages while the endpoint has its bound in flight, want 0", len(got))
		}
		for _, it := range first {
			q.fail(it, "d1")
		}
		e := q.endpointState(ep.ID)
		if e.ConsecutiveFailures != 1 || e.BackoffUntil == nil || e.FailingSince == nil {
			t.Fatalf("after the first failures: %d failures, backoff until %v; want 1 step (in-flight failures add none)", e.ConsecutiveFailures, e.BackoffUntil)
		}
		clk.Advance(30 * time.Second)
		if got := q.claim("d1", 100); len(got) != 0 {
			t.Fatalf("claim while backed off: %d messages, want 0", len(got))
		}
		clk.Advance(time.Minute)
		probe := q.claim("d1", 100)
		if len(probe) != 1 || !probe[0].Probe {
			t.Fatalf("claim after the backoff: %+v, want one probe", probe)
		}
		if got := q.claim("d2", 100); len(got) != 0 {
			t.Fatalf("second claim during the probe: %d messages, want 0 (one probe at a time)", len(got))
		}
		q.fail(probe[0], "d1")
		if e := q.endpointState(ep.ID); e.ConsecutiveFailures != 2 || !e.BackoffUntil.After(clk.Now().Add(time.Minute)) {
			t.Fatalf("after a failed probe: %d failures, backoff until %v; want 2 steps (2 minutes)", e.ConsecutiveFailures, e.BackoffUntil)
		}
		clk.Advance(3 * time.Minute)
		probe = q.claim("d2", 100)
		if len(probe) != 1 {
			t.Fatalf("second probe: %d messages, want 1", len(probe))
		}
		q.deliver(probe[0], "d2")
		if e := q.endpointState(ep.ID); e.ConsecutiveFailures != 0 || e.BackoffUntil != nil || e.FailingSince != nil {
			t.Fatalf("after a delivered probe: %+v, want healthy", e)
		}
		if got := q.claim("d1", 100); len(got) != store.DefaultWebhooksPerEndpoint {
			t.Fatalf("claim after recovery: %d messages, want %d", len(got), store.DefaultWebhooksPerEndpoint)
		}
	})
}

// TestWebhookQueue_RoundRobin: an endpoint's backlog of 300 does not hold
// a fresh message of another endpoint (of another workspace), and a
// cursor takes the endpoints in turn.
func TestWebhookQueue_RoundRobin(t *testing.T) {
	eachDialect(t, func(t *testing.T, st *store.Store, clk *clock) {
		ctx := context.Background()
		mustWorkspace(t, st, "busy")
		mustWorkspace(t, st, "quiet")
		busy, quiet := queueEnv{t, st, clk, "busy"}, queueEnv{t, st, clk, "quiet"}
		var busyEPs []store.WebhookEndpoint
		for i := range 3 {
			busyEPs = append(busyEPs, busy.endpoint(fmt.Sprintf("https://busy.example.com/%d", i)))
		}
		busy.invite("b", 100)
		clk.Advance(time.Second)
		fresh := quiet.endpoint("https://quiet.example.com/hook")
		quiet.invite("q", 1)

		// A claim of 4, the size of one endpoint's bound, still reaches
		// the fresh message (oldest-first would take four of the backlog).
		res, err := st.ClaimWebhookQueue(ctx, store.WebhookClaim{Token: "d", Limit: 4, Lease: time.Minute, PerEndpoint: 1})
		if err != nil {
			t.Fatal(err)
		}
		if got := countBy(res.Items); len(res.Items) != 4 || got[fresh.ID] != 1 || got[busyEPs[0].ID] != 1 || got[busyEPs[2].ID] != 1 {
			t.Fatalf("claim of 4 with one per endpoint: %v, want one of each endpoint", got)
		}
		// In turn: a cursor past the first endpoint starts after it.
		for _, it := range res.Items {
			busy.deliver(it, "d")
		}
		res, err = st.ClaimWebhookQueue(ctx, store.WebhookClaim{Token: "d", Limit: 1, Lease: time.Minute, After: busyEPs[0].ID})
		if err != nil || len(res.Items) != 1 || res.Items[0].EndpointID != busyEPs[1].ID || res.Next != busyEPs[1].ID {
			t.Fatalf("claim after endpoint %d: %+v %v, want one of endpoint %d", busyEPs[0].ID, countBy(res.Items), err, busyEPs[1].ID)
		}
		// A workspace at its share gets nothing: the other's turn.
		quiet.invite("q2-", 1)
		res, err = st.ClaimWebhookQueue(ctx, store.WebhookClaim{Token: "d", Limit: 10, Lease: time.Minute,
			Busy: map[int64]int{busyEPs[0].WorkspaceID: 2}, PerWorkspace: 2})
		if err != nil || len(res.Items) != 1 || res.Items[0].EndpointID != fresh.ID {
			t.Fatalf("claim with the busy workspace at its share: %v %v, want the quiet workspace's message alone", countBy(res.Items), err)
		}
	})
}

// TestWebhookQueue_TestEventLimit: an endpoint takes MaxPendingTestEvents
// test events not yet delivered, then refuses more (ErrConflict, its own
// code) without queueing anything; a delivered one makes room.
func TestWebhookQueue_TestEventLimit(t *testing.T) {
	eachDialect(t, func(t *testing.T, st *store.Store, clk *clock) {
		ctx := context.Background()
		mustWorkspace(t, st, "tests")
		q := queueEnv{t, st, clk, "tests"}
		ep := q.endpoint("https://tests.example.com/hook")
		for i := range store.MaxPendingTestEvents {
			if _, _, err := st.SendWebhookTest(ctx, "tests", "admin-tests", ep.ID); err != nil {
				t.Fatalf("test event %d: %v", i+1, err)
			}
		}
		_, _, err := st.SendWebhookTest(ctx, "tests", "admin-tests", ep.ID)
		var se *store.Error
		if !errors.Is(err, store.ErrConflict) || !errors.As(err, &se) || se.Code != store.CodeTooManyTestEvents {
			t.Fatalf("test event over the limit: %v, want ErrConflict %s", err, store.CodeTooManyTestEvents)
		}
		if msgs, _ := st.WebhookMessages(ctx, ep.ID); len(msgs) != store.MaxPendingTestEvents {
			t.Fatalf("%d messages queued, want %d (the refused one queues nothing)", len(msgs), store.MaxPendingTestEvents)
		}
		items := q.claim("d", 1)
		q.deliver(items[0], "d")
		if _, _, err := st.SendWebhookTest(ctx, "tests", "admin-tests", ep.ID); err != nil {
			t.Fatalf("test event once one was delivered: %v", err)
		}
	})
}
