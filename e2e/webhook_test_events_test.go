package e2e_test

import (
	"encoding/json"
	"fmt"
	"testing"

	"github.com/membership-api/controlplane/store"
)

// TestWebhooks_TestEventsLimitedPerEndpoint: an endpoint takes
// store.MaxPendingTestEvents test events not yet delivered (nothing
// delivers them here); the next is a 409 too_many_test_events that queues
// nothing, and another endpoint of the workspace still takes its own.
func TestWebhooks_TestEventsLimitedPerEndpoint(t *testing.T) {
	t.Parallel()
	parallelDialects(t, func(t *testing.T, dialect string) {
		f := newFixture(t, dialect, "--webhook-dispatcher=false")
		h := f.bearer(f.auditToken(f.adminSub, f.adminEmail))
		a := f.createEndpoint(t, "https://hooks.example.com/a")
		b := f.createEndpoint(t, "https://hooks.example.com/b")
		for i := range store.MaxPendingTestEvents {
			if resp, body := f.do(t, "POST", fmt.Sprintf("/v0/webhooks/%d/test", a.Id), h, ""); resp.StatusCode != 202 {
				t.Fatalf("test event %d: %d %s", i+1, resp.StatusCode, body)
			}
		}
		f.checkBadInputs(t, []badInput{{"OverTheLimit", "POST", fmt.Sprintf("/v0/webhooks/%d/test", a.Id), h, "", 409}})
		resp, body := f.do(t, "POST", fmt.Sprintf("/v0/webhooks/%d/test", a.Id), h, "")
		var e struct{ Error string }
		if resp.StatusCode != 409 || json.Unmarshal(body, &e) != nil || e.Error != store.CodeTooManyTestEvents {
			t.Errorf("over the limit: %d %s, want 409 %s", resp.StatusCode, body, store.CodeTooManyTestEvents)
		}
		if resp, body := f.do(t, "POST", fmt.Sprintf("/v0/webhooks/%d/test", b.Id), h, ""); resp.StatusCode != 202 {
			t.Errorf("another endpoint's test event: %d %s", resp.StatusCode, body)
		}
	})
}
