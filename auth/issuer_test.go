package auth

import (
	"context"
	"io"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/membership-api/controlplane/store"
	"github.com/membership-api/controlplane/store/storetest"
)

// testClock is a clock tests move by hand, shared by the store (SignFrom)
// and the issuer (which key signs, which are published).
type testClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *testClock) Now() time.Time  { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *testClock) Set(t time.Time) { c.mu.Lock(); defer c.mu.Unlock(); c.now = t }

func kids(keys []issuerKey) []string {
	var out []string
	for _, k := range keys {
		out = append(out, k.KID)
	}
	return out
}

// TestIssuer_Rotation: a rotated key is published at once and signs after
// the delay; the key it replaces stays published until every token it can
// have signed (up to the switch plus one refresh on a slow replica) has
// expired, leeway included, and not a moment longer.
func TestIssuer_Rotation(t *testing.T) {
	storetest.EachDialect(t, func(t *testing.T, dialect string) {
		clock := &testClock{now: time.Now().UTC().Truncate(time.Second)}
		st := storetest.Open(t, dialect, store.Options{Now: clock.Now})
		ctx, cancel := context.WithCancel(context.Background())
		t.Cleanup(cancel)
		cfg := IssuerConfig{PublicURL: "https://cp.example", TokenTTL: time.Hour, KeyRefresh: time.Minute}
		i, err := NewIssuer(ctx, cfg, st, slog.New(slog.NewTextHandler(io.Discard, nil)))
		if err != nil {
			t.Fatal(err)
		}
		i.now = clock.Now
		first, err := i.signingKey(clock.Now())
		if err != nil {
			t.Fatal(err)
		}
		// A second replica starting does not add a first key of its own.
		if _, err := NewIssuer(ctx, cfg, st, slog.New(slog.NewTextHandler(io.Discard, nil))); err != nil {
			t.Fatal(err)
		}

		delay := MinRotationDelay(cfg.KeyRefresh)
		next, err := NewSigningKey("test")
		if err != nil {
			t.Fatal(err)
		}
		rotated := clock.Now()
		if next, err = st.AddSigningKey(ctx, next, delay, rotated.Add(-RetiredKeyRetention)); err != nil {
			t.Fatal(err)
		}
		if err := i.load(ctx); err != nil {
			t.Fatal(err)
		}
		if got := kids(i.publishedKeys(clock.Now())); !slices.Equal(got, []string{first.KID, next.KID}) {
			t.Errorf("published right after the rotation: %v, want both", got)
		}
		clock.Set(rotated.Add(delay - time.Second))
		if k, _ := i.signingKey(clock.Now()); k.KID != first.KID {
			t.Errorf("signing with %s before the delay, want %s", k.KID, first.KID)
		}
		// The last token the old key signs: by a replica that reads the
		// keys one refresh after the switch.
		clock.Set(rotated.Add(delay + cfg.KeyRefresh))
		last, _, err := i.Sign(ServiceAccountToken{ClientID: "sa_x", Workspace: "acme", Scopes: []string{"admin"}})
		if err != nil {
			t.Fatal(err)
		}
		if k, _ := i.signingKey(clock.Now()); k.KID != next.KID {
			t.Errorf("signing with %s after the delay, want %s", k.KID, next.KID)
		}
		var claims tokenClaims
		if _, _, err := jwt.NewParser().ParseUnverified(last, &claims); err != nil {
			t.Fatal(err)
		}
		// (Sign used the new key here; a slow replica's token under the old
		// key would carry the same exp.)
		lastValid := claims.ExpiresAt.Add(tokenLeeway)
		clock.Set(lastValid.Add(-time.Second))
		if got := kids(i.publishedKeys(clock.Now())); !slices.Contains(got, first.KID) {
			t.Errorf("old key unpublished at %s, while a token it signed is still valid until %s", clock.Now(), lastValid)
		}
		clock.Set(lastValid)
		if got := kids(i.publishedKeys(clock.Now())); !slices.Equal(got, []string{next.KID}) {
			t.Errorf("published once every old token expired: %v, want only %s", got, next.KID)
		}
		if _, err := i.keyfunc(&jwt.Token{Header: map[string]any{"kid": first.KID}}); err == nil {
			t.Error("the unpublished key still verifies")
		}

		// A rotation long after deletes the keys retired before the retention.
		clock.Set(rotated.Add(delay + RetiredKeyRetention + time.Second))
		third, _ := NewSigningKey("test")
		if _, err := st.AddSigningKey(ctx, third, delay, clock.Now().Add(-RetiredKeyRetention)); err != nil {
			t.Fatal(err)
		}
		stored, err := st.SigningKeys(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var gens []int64
		for _, k := range stored {
			gens = append(gens, k.Generation)
		}
		if !slices.Equal(gens, []int64{2, 3}) {
			t.Errorf("generations after pruning: %v, want [2 3]", gens)
		}
	})
}
