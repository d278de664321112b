package store_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/membership-api/controlplane/store"
	"github.com/membership-api/controlplane/store/storetest"
)

// TestIdempotency_Lifecycle: claim, in use, finish, replay, another body,
// another scope, release, expiry and the sweep.
func TestIdempotency_Lifecycle(t *testing.T) {
	eachDialect(t, func(t *testing.T, st *store.Store, clk *clock) {
		ctx := context.Background()
		scope := store.IdempotencyScope{Workspace: "acme", Caller: "alice", Key: "k1"}
		h1, h2 := []byte("body-1"), []byte("body-2")
		begin := func(scope store.IdempotencyScope, hash []byte) store.IdempotencyClaim {
			t.Helper()
			c, err := st.BeginIdempotent(ctx, scope, hash, time.Hour)
			if err != nil {
				t.Fatal(err)
			}
			return c
		}
		first := begin(scope, h1)
		if first.Outcome != store.IdempotencyClaimed {
			t.Fatalf("first use: %v, want claimed", first.Outcome)
		}
		if c := begin(scope, h1); c.Outcome != store.IdempotencyInUse {
			t.Errorf("while running: %v, want in use", c.Outcome)
		}
		if c := begin(scope, h2); c.Outcome != store.IdempotencyMismatch {
			t.Errorf("another body while running: %v, want mismatch", c.Outcome)
		}
		// Other callers and workspaces have keys of their own.
		for _, other := range []store.IdempotencyScope{{Workspace: "acme", Caller: "bob", Key: "k1"}, {Workspace: "beta", Caller: "alice", Key: "k1"}} {
			if c := begin(other, h2); c.Outcome != store.IdempotencyClaimed {
				t.Errorf("%+v: %v, want claimed (a scope of its own)", other, c.Outcome)
			}
		}
		if err := st.FinishIdempotent(ctx, first, 201, []byte(`{"a":1}`)); err != nil {
			t.Fatal(err)
		}
		if c := begin(scope, h1); c.Outcome != store.IdempotencyReplay || c.Status != 201 || string(c.Body) != `{"a":1}` {
			t.Errorf("after finishing: %+v, want replay of 201 {\"a\":1}", c)
		}
		if c := begin(scope, h2); c.Outcome != store.IdempotencyMismatch {
			t.Errorf("another body after finishing: %v, want mismatch", c.Outcome)
		}

		// Released: the key is free again.
		k2 := store.IdempotencyScope{Workspace: "acme", Caller: "alice", Key: "k2"}
		c := begin(k2, h1)
		if err := st.ReleaseIdempotent(ctx, c); err != nil {
			t.Fatal(err)
		}
		if c := begin(k2, h2); c.Outcome != store.IdempotencyClaimed {
			t.Errorf("after release: %v, want claimed", c.Outcome)
		}

		// A request that never finished holds its key for a minute only.
		clk.Advance(2 * time.Minute)
		if c := begin(k2, h1); c.Outcome != store.IdempotencyClaimed {
			t.Errorf("after the lease: %v, want claimed (taken over)", c.Outcome)
		}

		// Expired: a new request with any body runs; the sweep removes
		// what has expired, and only that.
		clk.Advance(time.Hour)
		fresh := store.IdempotencyScope{Workspace: "acme", Caller: "alice", Key: "fresh"}
		begin(fresh, h1)
		if c := begin(scope, h2); c.Outcome != store.IdempotencyClaimed {
			t.Errorf("after expiry: %v, want claimed", c.Outcome)
		}
		before, err := storetest.CountRows(ctx, st)
		if err != nil {
			t.Fatal(err)
		}
		n, err := st.SweepIdempotencyKeys(ctx)
		if err != nil {
			t.Fatal(err)
		}
		after, err := storetest.CountRows(ctx, st)
		if err != nil {
			t.Fatal(err)
		}
		// Left: k1 (taken over just now) and fresh; swept: bob's, beta's, k2.
		if n != 3 || before["idempotency_keys"] != 5 || after["idempotency_keys"] != 2 {
			t.Errorf("sweep deleted %d (rows %d → %d), want 3 (5 → 2)", n, before["idempotency_keys"], after["idempotency_keys"])
		}
		if c := begin(fresh, h1); c.Outcome != store.IdempotencyInUse {
			t.Errorf("an unexpired key after the sweep: %v, want in use", c.Outcome)
		}
	})
}

// TestIdempotency_RaceOneKey: 32 requests with one key at once: exactly
// one claims it, the others find it in use (the unique index decides).
func TestIdempotency_RaceOneKey(t *testing.T) {
	eachDialect(t, func(t *testing.T, st *store.Store, _ *clock) {
		for round := range 5 {
			scope := store.IdempotencyScope{Workspace: "acme", Caller: "alice", Key: "race" + string(rune('a'+round))}
			const n = 32
			outcomes := make([]store.IdempotencyOutcome, n)
			var wg sync.WaitGroup
			for i := range n {
				wg.Go(func() {
					c, err := st.BeginIdempotent(context.Background(), scope, []byte("same"), time.Hour)
					if err != nil {
						t.Error(err)
					}
					outcomes[i] = c.Outcome
				})
			}
			wg.Wait()
			claimed := 0
			for _, o := range outcomes {
				switch o {
				case store.IdempotencyClaimed:
					claimed++
				case store.IdempotencyInUse:
				default:
					t.Errorf("outcome %v, want claimed or in use", o)
				}
			}
			if claimed != 1 {
				t.Errorf("round %d: %d requests claimed the key, want 1", round, claimed)
			}
		}
	})
}
