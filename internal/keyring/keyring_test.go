package keyring_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/membership-api/controlplane/internal/keyring"
)

func mustKeyring(t testing.TB, encoded ...string) *keyring.Keyring {
	t.Helper()
	k, err := keyring.Parse(encoded)
	if err != nil {
		t.Fatalf("parse keys: %v", err)
	}
	return k
}

func newKey(t testing.TB) string {
	t.Helper()
	k, err := keyring.Generate()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

var row1 = keyring.Binding{Table: "webhook_endpoints", Column: "secret", Row: "1"}

func TestKeyring_SealOpen(t *testing.T) {
	t.Parallel()
	k := mustKeyring(t, newKey(t))
	secret := []byte("whsec_c2VjcmV0")
	sealed, err := k.Seal(secret, row1)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(sealed, keyring.Prefix+k.PrimaryID()+":") {
		t.Fatalf("sealed value %q does not start with the prefix and key id", sealed)
	}
	if strings.Contains(sealed, "whsec_") {
		t.Fatalf("sealed value %q carries the plaintext", sealed)
	}
	got, err := k.Open(sealed, row1)
	if err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("open: got %q, %v; want %q", got, err, secret)
	}
	again, _ := k.Seal(secret, row1)
	if again == sealed {
		t.Fatal("two seals of one value are equal: the nonce is not random")
	}
}

// A value moved to another row, column or table does not open.
func TestKeyring_BoundToItsRow(t *testing.T) {
	t.Parallel()
	k := mustKeyring(t, newKey(t))
	sealed, err := k.Seal([]byte("whsec_x"), row1)
	if err != nil {
		t.Fatal(err)
	}
	for _, other := range []keyring.Binding{
		{Table: "webhook_endpoints", Column: "secret", Row: "2"},
		{Table: "webhook_endpoints", Column: "url", Row: "1"},
		{Table: "signing_keys", Column: "secret", Row: "1"},
		// The encoding keeps fields apart: no shifting of bytes between them.
		{Table: "webhook_endpoints", Column: "secret\x001", Row: ""},
	} {
		if _, err := k.Open(sealed, other); !errors.Is(err, keyring.ErrDecrypt) {
			t.Errorf("opened for %+v: got %v, want ErrDecrypt", other, err)
		}
	}
}

func TestKeyring_Rotation(t *testing.T) {
	t.Parallel()
	oldKey, newKey := newKey(t), newKey(t)
	before := mustKeyring(t, oldKey)
	sealed, _ := before.Seal([]byte("pem"), row1)

	during := mustKeyring(t, newKey, oldKey)
	if got, err := during.Open(sealed, row1); err != nil || string(got) != "pem" {
		t.Fatalf("the second key does not open: %q, %v", got, err)
	}
	resealed, _ := during.Seal([]byte("pem"), row1)
	if id, _ := keyring.SealedWith(resealed); id != during.PrimaryID() || id == before.PrimaryID() {
		t.Fatalf("sealed with %s, want the first key %s", id, during.PrimaryID())
	}
	after := mustKeyring(t, newKey)
	if _, err := after.Open(sealed, row1); !errors.Is(err, keyring.ErrUnknownKey) {
		t.Fatalf("a value of a dropped key: got %v, want ErrUnknownKey", err)
	}
	if _, err := after.Open(resealed, row1); err != nil {
		t.Fatal(err)
	}
}

func TestKeyring_NoKey(t *testing.T) {
	t.Parallel()
	var none *keyring.Keyring
	stored, err := none.Seal([]byte("whsec_x"), row1)
	if err != nil || stored != "whsec_x" {
		t.Fatalf("nil keyring seal: got %q, %v; want the plaintext", stored, err)
	}
	if got, err := none.Open("whsec_x", row1); err != nil || string(got) != "whsec_x" {
		t.Fatalf("nil keyring open of plaintext: %q, %v", got, err)
	}
	sealed, _ := mustKeyring(t, newKey(t)).Seal([]byte("x"), row1)
	if _, err := none.Open(sealed, row1); !errors.Is(err, keyring.ErrNoKey) {
		t.Fatalf("nil keyring open of a sealed value: got %v, want ErrNoKey", err)
	}
	// A keyring opens plaintext too: a database being converted holds both.
	if got, err := mustKeyring(t, newKey(t)).Open("whsec_x", row1); err != nil || string(got) != "whsec_x" {
		t.Fatalf("open of plaintext: %q, %v", got, err)
	}
}

func TestKeyring_Tampered(t *testing.T) {
	t.Parallel()
	k := mustKeyring(t, newKey(t))
	sealed, _ := k.Seal([]byte("whsec_x"), row1)
	// A character inside the payload, not the last one: the last character
	// of unpadded base64 may carry only padding bits, which the decoder
	// ignores, so changing it can leave the bytes as they were.
	i := len(sealed) - 10
	flipped := sealed[:i] + string(map[bool]byte{true: 'A', false: 'B'}[sealed[i] != 'A']) + sealed[i+1:]
	if _, err := k.Open(flipped, row1); !errors.Is(err, keyring.ErrDecrypt) && !errors.Is(err, keyring.ErrMalformed) {
		t.Fatalf("tampered value: got %v, want a failure", err)
	}
	for _, bad := range []string{keyring.Prefix, keyring.Prefix + "short:abc", keyring.Prefix + k.PrimaryID() + ":!!", keyring.Prefix + k.PrimaryID() + ":AAAA"} {
		if _, err := k.Open(bad, row1); !errors.Is(err, keyring.ErrMalformed) {
			t.Errorf("Open(%q): got %v, want ErrMalformed", bad, err)
		}
	}
}

func TestParse_Refuses(t *testing.T) {
	t.Parallel()
	good := newKey(t)
	for name, keys := range map[string][]string{
		"none":       nil,
		"empty":      {""},
		"not base64": {"not base64 at all!"},
		"too short":  {"c2hvcnQ="},
		"twice":      {good, good},
	} {
		k, err := keyring.Parse(keys)
		if err == nil {
			t.Errorf("%s: Parse accepted %v", name, keys)
			continue
		}
		for _, key := range keys {
			if len(key) > 8 && strings.Contains(err.Error(), key) {
				t.Errorf("%s: the error %q shows the key", name, err)
			}
		}
		_ = k
	}
	raw, _ := keyring.Decode(good)
	for _, form := range []string{good, strings.TrimRight(good, "="), strings.NewReplacer("+", "-", "/", "_").Replace(good), " " + good + "\n"} {
		if _, err := keyring.Parse([]string{form}); err != nil {
			t.Errorf("Parse(%q): %v", form, err)
		}
	}
	if k := mustKeyring(t, good); strings.Contains(k.String(), good) || !strings.Contains(k.String(), keyring.KeyID(raw)) {
		t.Errorf("String() = %q: want the key id, never the key", k.String())
	}
}

// The cost of sealing and opening a webhook secret and a PEM signing key.
func BenchmarkKeyring(b *testing.B) {
	k := mustKeyring(b, newKey(b))
	for _, size := range []struct {
		name string
		n    int
	}{{"webhook-secret", 50}, {"signing-key-pem", 119}} {
		plain := bytes.Repeat([]byte("x"), size.n)
		sealed, _ := k.Seal(plain, row1)
		b.Run("seal/"+size.name, func(b *testing.B) {
			for b.Loop() {
				if _, err := k.Seal(plain, row1); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("open/"+size.name, func(b *testing.B) {
			for b.Loop() {
				if _, err := k.Open(sealed, row1); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func TestLoadOrCreateFile(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "data", "secrets.key")
	made, err := keyring.LoadOrCreateFile(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file %v %v, want mode 0600", fi, err)
	}
	again, err := keyring.LoadOrCreateFile(path)
	if err != nil || again.PrimaryID() != made.PrimaryID() {
		t.Fatalf("second load: %v %v, want the same key %s", again, err, made.PrimaryID())
	}
	if err := os.WriteFile(path, []byte("# comment\nnot a key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := keyring.LoadOrCreateFile(path); err == nil || strings.Contains(err.Error(), "not a key") {
		t.Fatalf("a malformed file: %v, want refused without its content", err)
	}
}
