package outbox

import (
	"testing"
	"time"
)

// The loop itself is exercised through both dispatchers against real
// databases (mail/dispatcher_test.go, webhooks_test.go); Backoff's schedule
// is pure arithmetic, checked here.
func TestBackoff(t *testing.T) {
	base, ceiling := 5*time.Second, time.Hour
	for attempt := -1; attempt <= 70; attempt++ {
		want := ceiling
		if attempt >= 1 && attempt < 32 && base<<(attempt-1) < ceiling {
			want = base << (attempt - 1)
		}
		for range 50 {
			got := Backoff(base, ceiling, attempt)
			if got < want/2 || got > want {
				t.Fatalf("Backoff(attempt %d) = %v, want within [%v, %v]", attempt, got, want/2, want)
			}
		}
	}
	if w := Backoff(base, ceiling, 1); w < 2500*time.Millisecond || w > 5*time.Second {
		t.Fatalf("first retry waits %v, want 2.5–5 s", w)
	}
}
