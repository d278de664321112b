package store_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/membership-api/controlplane/auth"
	"github.com/membership-api/controlplane/internal/keyring"
	"github.com/membership-api/controlplane/store"
	"github.com/membership-api/controlplane/store/storetest"
)

func newKeyring(t *testing.T, keys ...string) *keyring.Keyring {
	t.Helper()
	k, err := keyring.Parse(keys)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func genKey(t *testing.T) string {
	t.Helper()
	k, err := keyring.Generate()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// openWith opens dsn with the keys (none: in the clear), closed at cleanup
// or by the returned function, whichever comes first.
func openWith(t *testing.T, dsn string, keys *keyring.Keyring) (*store.Store, func()) {
	t.Helper()
	st, err := store.Open(context.Background(), dsn, store.Options{Secrets: keys})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	closed := false
	closeFn := func() {
		if !closed {
			closed = true
			if err := st.Close(); err != nil {
				t.Errorf("close: %v", err)
			}
		}
	}
	t.Cleanup(closeFn)
	return st, closeFn
}

// writeSecrets stores a signing key and two webhook endpoints (one message
// queued for each) and returns the endpoints as created (plaintext secrets).
func writeSecrets(t *testing.T, st *store.Store, ws string) (store.SigningKey, []store.WebhookEndpoint) {
	t.Helper()
	ctx := context.Background()
	key, err := auth.NewSigningKey("test")
	if err != nil {
		t.Fatal(err)
	}
	if err := st.EnsureFirstSigningKey(ctx, key); err != nil {
		t.Fatal(err)
	}
	mustWorkspace(t, st, ws)
	var eps []store.WebhookEndpoint
	for _, u := range []string{"https://hooks.example.com/a", "https://hooks.example.com/b"} {
		ep, err := st.CreateWebhook(ctx, ws, "admin-"+ws, store.WebhookInput{URL: &u})
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(ep.Secret, store.WebhookSecretPrefix) {
			t.Fatalf("created endpoint's secret %q: want the plaintext whsec_ secret", ep.Secret)
		}
		eps = append(eps, ep)
	}
	return key, eps
}

// checkUsable checks that the store hands out the plaintext signing key and
// webhook secrets.
func checkUsable(t *testing.T, st *store.Store, key store.SigningKey, eps []store.WebhookEndpoint) {
	t.Helper()
	ctx := context.Background()
	keys, err := st.SigningKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) == 0 || keys[0].KID != key.KID || string(keys[0].PrivateKey) != string(key.PrivateKey) {
		t.Fatalf("SigningKeys: got %+v, want the PEM of %s", keys, key.KID)
	}
	for _, ep := range eps {
		if _, _, err := st.SendWebhookTest(ctx, "ws", "admin-ws", ep.ID); err != nil {
			t.Fatal(err)
		}
	}
	items, err := st.ClaimWebhooks(ctx, "claim-"+genKey(t)[:8], 100, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	got := map[int64]string{}
	for _, it := range items {
		got[it.EndpointID] = it.Secret
	}
	for _, ep := range eps {
		if got[ep.ID] != ep.Secret {
			t.Errorf("claimed secret of endpoint %d: got %q, want the one created", ep.ID, got[ep.ID])
		}
	}
}

// checkSealed checks that the database holds no plaintext secret, every
// value sealed under the key of id.
func checkSealed(t *testing.T, st *store.Store, id string) {
	t.Helper()
	keys, hooks, err := st.RawSecretsForTest(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for kid, v := range keys {
		if strings.Contains(v, "PRIVATE KEY") || !strings.HasPrefix(v, keyring.Prefix+id+":") {
			t.Errorf("signing key %s stored as %.40q…, want sealed under %s", kid, v, id)
		}
	}
	for ep, v := range hooks {
		if strings.Contains(v, "whsec_") || !strings.HasPrefix(v, keyring.Prefix+id+":") {
			t.Errorf("webhook %d secret stored as %.40q…, want sealed under %s", ep, v, id)
		}
	}
}

func TestSecrets_SealedAtRest(t *testing.T) {
	storetest.EachDialect(t, func(t *testing.T, dialect string) {
		t.Parallel()
		k := newKeyring(t, genKey(t))
		st, _ := openWith(t, storetest.DSN(t, dialect), k)
		key, eps := writeSecrets(t, st, "ws")
		checkSealed(t, st, k.PrimaryID())
		checkUsable(t, st, key, eps)
		status, err := st.CheckSecrets(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if status.Plaintext() != 0 || status.SigningKeys[k.PrimaryID()] != 1 || status.WebhookSecrets[k.PrimaryID()] != 2 {
			t.Errorf("CheckSecrets: got %+v, want 1 key and 2 secrets under %s", status, k.PrimaryID())
		}
	})
}

// A value copied into another row does not decrypt.
func TestSecrets_MovedValueRefused(t *testing.T) {
	storetest.EachDialect(t, func(t *testing.T, dialect string) {
		t.Parallel()
		ctx := context.Background()
		oldKey := genKey(t)
		dsn := storetest.DSN(t, dialect)
		st, closeFn := openWith(t, dsn, newKeyring(t, oldKey))
		_, eps := writeSecrets(t, st, "ws")
		if err := st.ExecForTest(ctx, "UPDATE webhook_endpoints SET secret = (SELECT secret FROM webhook_endpoints WHERE id = ?) WHERE id = ?", eps[0].ID, eps[1].ID); err != nil {
			t.Fatal(err)
		}
		for _, ep := range eps {
			if _, _, err := st.SendWebhookTest(ctx, "ws", "admin-ws", ep.ID); err != nil {
				t.Fatal(err)
			}
		}
		items, err := st.ClaimWebhooks(ctx, "claim", 100, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if len(items) == 0 {
			t.Errorf("claimed nothing: want endpoint %d's messages", eps[0].ID)
		}
		for _, it := range items {
			// B's message is left out: its secret does not open.
			if it.EndpointID != eps[0].ID || it.Secret != eps[0].Secret {
				t.Errorf("claimed a message of endpoint %d with secret %q: want endpoint %d's alone, with its own secret", it.EndpointID, it.Secret, eps[0].ID)
			}
		}
		closeFn()

		// Re-sealing under a new key opens every value: the moved one fails, named.
		st, _ = openWith(t, dsn, newKeyring(t, genKey(t), oldKey))
		res, err := st.RotateSecrets(ctx, 0)
		if !errors.Is(err, store.ErrSecretsKey) || !strings.Contains(err.Error(), "moved from another row") || !strings.Contains(err.Error(), fmt.Sprintf("endpoint %d", eps[1].ID)) {
			t.Errorf("rotate over a moved secret: got %v, want ErrSecretsKey naming endpoint %d as moved", err, eps[1].ID)
		}
		if res.Sealed != 2 {
			t.Errorf("rotate over a moved secret: %+v, want the 2 other values re-sealed", res)
		}

		// The same for a signing key: a second key's value copied into the first's row.
		second, err := auth.NewSigningKey("test")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := st.AddSigningKey(ctx, second, time.Hour, time.Time{}); err != nil {
			t.Fatal(err)
		}
		if err := st.ExecForTest(ctx, "UPDATE signing_keys SET private_key = (SELECT private_key FROM signing_keys WHERE generation = 2) WHERE generation = 1"); err != nil {
			t.Fatal(err)
		}
		if _, err := st.SigningKeys(ctx); !errors.Is(err, store.ErrSecretsKey) {
			t.Errorf("SigningKeys with a moved key: got %v, want ErrSecretsKey", err)
		}
	})
}

// Without the key, or with another one, the check at start fails naming the flag.
func TestSecrets_WrongKeyRefused(t *testing.T) {
	storetest.EachDialect(t, func(t *testing.T, dialect string) {
		t.Parallel()
		dsn := storetest.DSN(t, dialect)
		st, closeFn := openWith(t, dsn, newKeyring(t, genKey(t)))
		writeSecrets(t, st, "ws")
		closeFn()
		for name, k := range map[string]*keyring.Keyring{"none": nil, "another": newKeyring(t, genKey(t))} {
			st, closeFn := openWith(t, dsn, k)
			_, err := st.CheckSecrets(context.Background())
			if !errors.Is(err, store.ErrSecretsKey) || !strings.Contains(err.Error(), store.SecretsKeyFlag) {
				t.Errorf("%s key: CheckSecrets got %v, want ErrSecretsKey naming %s", name, err, store.SecretsKeyFlag)
			}
			closeFn()
		}
	})
}

// Plaintext rows (stored before a key was given) stay readable, are
// converted by RotateSecrets, and a rotation to a second key keeps every
// value readable with both keys given, then with the new one alone.
func TestSecrets_ConvertAndRotate(t *testing.T) {
	storetest.EachDialect(t, func(t *testing.T, dialect string) {
		t.Parallel()
		ctx := context.Background()
		dsn := storetest.DSN(t, dialect)
		st, closeFn := openWith(t, dsn, nil)
		key, eps := writeSecrets(t, st, "ws")
		if _, err := st.RotateSecrets(ctx, 0); err == nil {
			t.Error("RotateSecrets without a key: want an error")
		}
		closeFn()

		oldKey, newKey := genKey(t), genKey(t)
		old := newKeyring(t, oldKey)
		st, closeFn = openWith(t, dsn, old)
		checkUsable(t, st, key, eps) // plaintext rows, read with a key
		status, err := st.CheckSecrets(ctx)
		if err != nil || status.Plaintext() != 3 {
			t.Fatalf("CheckSecrets before conversion: %+v, %v; want 3 in the clear", status, err)
		}
		// Batches of one: the batching is exercised.
		res, err := st.RotateSecrets(ctx, 1)
		if err != nil || res.Sealed != 3 || res.Converted != 3 {
			t.Fatalf("convert: got %+v, %v; want 3 sealed, all converted", res, err)
		}
		checkSealed(t, st, old.PrimaryID())
		if res, err := st.RotateSecrets(ctx, 1); err != nil || res.Sealed != 0 || res.Current != 3 {
			t.Fatalf("convert again: got %+v, %v; want nothing to do", res, err)
		}
		closeFn()

		both := newKeyring(t, newKey, oldKey)
		st, closeFn = openWith(t, dsn, both)
		if _, err := st.CheckSecrets(ctx); err != nil {
			t.Fatal(err)
		}
		checkUsable(t, st, key, eps)
		res, err = st.RotateSecrets(ctx, 1)
		if err != nil || res.Sealed != 3 || res.Converted != 0 {
			t.Fatalf("rotate: got %+v, %v; want 3 re-sealed", res, err)
		}
		checkSealed(t, st, both.PrimaryID())
		closeFn()

		st, _ = openWith(t, dsn, newKeyring(t, newKey))
		if _, err := st.CheckSecrets(ctx); err != nil {
			t.Fatalf("with the new key alone: %v", err)
		}
		checkUsable(t, st, key, eps)
	})
}
