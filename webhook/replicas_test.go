package webhook_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/membership-api/controlplane/store"
	"github.com/membership-api/controlplane/store/storetest"
	"github.com/membership-api/controlplane/webhook"
)

// countingReceiver answers after a short delay (so attempts overlap) and
// records every webhook-id and the most requests in flight per path.
type countingReceiver struct {
	mu       sync.Mutex
	ids      map[string]int
	inFlight map[string]int
	most     map[string]int
}

func (r *countingReceiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	r.mu.Lock()
	r.ids[req.Header.Get("webhook-id")]++
	r.inFlight[req.URL.Path]++
	r.most[req.URL.Path] = max(r.most[req.URL.Path], r.inFlight[req.URL.Path])
	r.mu.Unlock()
	time.Sleep(5 * time.Millisecond)
	r.mu.Lock()
	r.inFlight[req.URL.Path]--
	r.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

func (r *countingReceiver) delivered() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.ids)
}

// TestDispatcher_ReplicasShareEndpointBound: three dispatchers on one
// database deliver every message exactly once, and no endpoint ever has
// more than PerEndpoint requests in flight, counted across all three.
func TestDispatcher_ReplicasShareEndpointBound(t *testing.T) {
	t.Parallel()
	storetest.EachDialect(t, func(t *testing.T, dialect string) {
		t.Parallel()
		st := storetest.Open(t, dialect, store.Options{})
		rcv := &countingReceiver{ids: map[string]int{}, inFlight: map[string]int{}, most: map[string]int{}}
		srv := httptest.NewServer(rcv)
		t.Cleanup(srv.Close)
		urls := make([]string, 3)
		for i := range urls {
			urls[i] = fmt.Sprintf("%s/ep%d", srv.URL, i)
		}
		workspaceWithEndpoints(t, st, "shared", urls)
		inviteN(t, st, "shared", "r", 60) // 180 messages, and the endpoints' creation events
		const perEndpoint = 2
		for range 3 {
			runDispatcher(t, st, webhook.Config{PerEndpoint: perEndpoint, PollInterval: 10 * time.Millisecond})
		}
		if !waitFor(t, time.Minute, func() bool { return rcv.delivered() >= 183 }) {
			t.Fatalf("delivered %d of 183 messages", rcv.delivered())
		}
		time.Sleep(100 * time.Millisecond) // a duplicate, if any, arrives meanwhile
		rcv.mu.Lock()
		defer rcv.mu.Unlock()
		for id, n := range rcv.ids {
			if n != 1 {
				t.Errorf("%s delivered %d times, want once", id, n)
			}
		}
		for path, n := range rcv.most {
			if n > perEndpoint {
				t.Errorf("%s: %d requests in flight at once across the dispatchers, want at most %d", path, n, perEndpoint)
			}
		}
	})
}
