package store_test

import (
	"context"
	"log/slog"
	"strconv"
	"testing"
	"time"

	"github.com/membership-api/controlplane/auth"
	"github.com/membership-api/controlplane/internal/keyring"
	"github.com/membership-api/controlplane/store"
	"github.com/membership-api/controlplane/store/storetest"
)

// benchKeyrings are the two ways a store keeps its secrets.
func benchKeyrings(b *testing.B) map[string]*keyring.Keyring {
	key, err := keyring.Generate()
	if err != nil {
		b.Fatal(err)
	}
	k, err := keyring.Parse([]string{key})
	if err != nil {
		b.Fatal(err)
	}
	return map[string]*keyring.Keyring{"clear": nil, "sealed": k}
}

// BenchmarkSecrets_IssueToken: the cost of a token, with the signing keys
// stored in the clear or sealed. The issuer decrypts the keys when it
// loads them (at start and every --oauth-key-refresh), so a token costs
// the same either way.
func BenchmarkSecrets_IssueToken(b *testing.B) {
	for name, k := range benchKeyrings(b) {
		b.Run(name, func(b *testing.B) {
			st := storetest.OpenDSN(b, storetest.DSN(b, "sqlite"), store.Options{Secrets: k})
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			iss, err := auth.NewIssuer(ctx, auth.IssuerConfig{}, st, slog.New(slog.DiscardHandler))
			if err != nil {
				b.Fatal(err)
			}
			for b.Loop() {
				if _, _, err := iss.Sign(auth.ServiceAccountToken{ClientID: "sa_x", Workspace: "acme", Scopes: []string{"admin"}}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkSecrets_LoadSigningKeys: what the issuer's key refresh reads
// (two keys), in the clear or sealed.
func BenchmarkSecrets_LoadSigningKeys(b *testing.B) {
	for name, k := range benchKeyrings(b) {
		b.Run(name, func(b *testing.B) {
			st := storetest.OpenDSN(b, storetest.DSN(b, "sqlite"), store.Options{Secrets: k})
			ctx := context.Background()
			for gen := range 2 {
				key, err := auth.NewSigningKey("bench")
				if err != nil {
					b.Fatal(err)
				}
				if gen == 0 {
					err = st.EnsureFirstSigningKey(ctx, key)
				} else {
					_, err = st.AddSigningKey(ctx, key, time.Hour, time.Time{})
				}
				if err != nil {
					b.Fatal(err)
				}
			}
			for b.Loop() {
				if _, err := st.SigningKeys(ctx); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkSecrets_ClaimWebhooks: claiming (and releasing) ten webhook
// messages of ten endpoints, each claim opening its endpoint's secret, in
// the clear or sealed: the decryption's share of a delivery's store work.
func BenchmarkSecrets_ClaimWebhooks(b *testing.B) {
	for name, k := range benchKeyrings(b) {
		b.Run(name, func(b *testing.B) {
			st := storetest.OpenDSN(b, storetest.DSN(b, "sqlite"), store.Options{Secrets: k})
			ctx := context.Background()
			if _, err := st.CreateWorkspace(ctx, store.NewWorkspace{Name: "bench", AdminSub: "admin", AdminEmail: "admin@bench.test"}); err != nil {
				b.Fatal(err)
			}
			for n := range 10 {
				u := "https://hooks.example.com/" + strconv.Itoa(n)
				ep, err := st.CreateWebhook(ctx, "bench", "admin", store.WebhookInput{URL: &u})
				if err != nil {
					b.Fatal(err)
				}
				if _, _, err := st.SendWebhookTest(ctx, "bench", "admin", ep.ID); err != nil {
					b.Fatal(err)
				}
			}
			// Messages of the endpoints made before them (webhook_endpoint.created) count too.
			for b.Loop() {
				items, err := st.ClaimWebhooks(ctx, "bench", 10, time.Minute)
				if err != nil || len(items) != 10 {
					b.Fatalf("claimed %d, %v", len(items), err)
				}
				if err := st.ReleaseWebhooks(ctx, "bench"); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
