// Package keyring seals the secrets the server must be able to use again
// (the OAuth issuer's signing keys, webhook signing secrets) before they are
// written to the database, with keys that live outside it: AES-256-GCM from
// the standard library, each value bound to the row it belongs to.
//
// A sealed value is one self-describing string,
//
//	enc:v1:<key id>:<base64url(nonce | ciphertext and tag)>
//
// so it fits the columns that held the plaintext (no schema change), a
// reader tells sealed from plaintext values apart (a database being
// converted holds both), and the key that sealed it is named without being
// revealed: the key id is a truncated SHA-256 of the key.
//
// It is a package of its own, not part of store, because the command line
// also handles keys (parses the flags, makes the SQLite key file, generates
// new keys) without a database, and because nothing in it knows a table:
// the store says what a value is bound to (Binding).
package keyring

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// KeySize is the size of a key: AES-256.
const KeySize = 32

// Prefix starts every sealed value; a stored value without it is plaintext.
const Prefix = "enc:v1:"

// idLen is the length of a key id, in hex digits (64 bits of the hash:
// enough to tell an operator's few keys apart, and to name the missing one).
const idLen = 16

// Errors of Open, matched with errors.Is.
var (
	// ErrNoKey: the value is sealed but no key was given.
	ErrNoKey = errors.New("the value is encrypted but no secrets key is configured")
	// ErrUnknownKey: the value was sealed with a key that is not in the ring.
	ErrUnknownKey = errors.New("the value is encrypted with a key that is not configured")
	// ErrDecrypt: the key is known but the value does not open: altered,
	// or moved from the row it was sealed for.
	ErrDecrypt = errors.New("the value does not decrypt: altered, or moved from another row")
	// ErrMalformed: the value starts like a sealed one but is not.
	ErrMalformed = errors.New("the value is not a well-formed encrypted value")
)

// Binding is what a value is sealed for: the associated data of AES-GCM,
// so a value copied into another row (or column, or table) fails to open.
type Binding struct {
	Table, Column, Row string
}

func (b Binding) additionalData() []byte {
	// NUL cannot appear in table or column names, and row ids are digits
	// or base64url: the encoding is unambiguous.
	return []byte("controlplane-secret-v1\x00" + b.Table + "\x00" + b.Column + "\x00" + b.Row)
}

type key struct {
	id   string
	aead cipher.AEAD
}

// Keyring holds the keys: the first seals, every key opens. A nil *Keyring
// is valid and holds no key: Seal returns the plaintext unchanged (the
// values are stored in the clear) and Open refuses sealed values (ErrNoKey).
// Its String never shows a key, only ids.
type Keyring struct {
	keys []key
}

// New makes a keyring of raw keys, each KeySize bytes; the first seals.
func New(raw [][]byte) (*Keyring, error) {
	if len(raw) == 0 {
		return nil, errors.New("no key given")
	}
	k := &Keyring{}
	seen := map[string]bool{}
	for n, r := range raw {
		if len(r) != KeySize {
			return nil, fmt.Errorf("key %d is %d bytes, want %d", n+1, len(r), KeySize)
		}
		block, err := aes.NewCipher(r)
		if err != nil {
			return nil, err
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return nil, err
		}
		id := KeyID(r)
		if seen[id] {
			return nil, fmt.Errorf("key %d is given twice (key id %s)", n+1, id)
		}
		seen[id] = true
		k.keys = append(k.keys, key{id: id, aead: aead})
	}
	return k, nil
}

// Parse makes a keyring of encoded keys (Encode's form: base64, standard
// or URL alphabet, padded or not, of KeySize bytes). Its errors name a key
// by its position, never by its value.
func Parse(encoded []string) (*Keyring, error) {
	raw := make([][]byte, 0, len(encoded))
	for n, e := range encoded {
		r, err := Decode(e)
		if err != nil {
			return nil, fmt.Errorf("key %d: %w", n+1, err)
		}
		raw = append(raw, r)
	}
	return New(raw)
}

// Decode reads one encoded key.
func Decode(encoded string) ([]byte, error) {
	s := strings.TrimSpace(encoded)
	if s == "" {
		return nil, errors.New("empty")
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if r, err := enc.DecodeString(s); err == nil {
			if len(r) != KeySize {
				return nil, fmt.Errorf("is %d bytes once decoded, want %d (make one with `controlplane secrets generate-key`)", len(r), KeySize)
			}
			return r, nil
		}
	}
	return nil, fmt.Errorf("is not base64 of %d bytes (make one with `controlplane secrets generate-key`)", KeySize)
}

// Generate makes a new random key, encoded.
func Generate() (string, error) {
	r := make([]byte, KeySize)
	if _, err := rand.Read(r); err != nil {
		return "", err
	}
	return Encode(r), nil
}

// Encode is a raw key's text form: standard base64, padded.
func Encode(raw []byte) string { return base64.StdEncoding.EncodeToString(raw) }

// KeyID is the id of a raw key: a truncated SHA-256, domain-separated so
// it equals no other hash of the key.
func KeyID(raw []byte) string {
	h := sha256.Sum256(append([]byte("controlplane-secrets-key-id\x00"), raw...))
	return hex.EncodeToString(h[:])[:idLen]
}

// PrimaryID is the id of the key that seals ("" for a nil keyring).
func (k *Keyring) PrimaryID() string {
	if k == nil {
		return ""
	}
	return k.keys[0].id
}

// IDs are the ids of every key, the sealing one first.
func (k *Keyring) IDs() []string {
	if k == nil {
		return nil
	}
	ids := make([]string, len(k.keys))
	for n, key := range k.keys {
		ids[n] = key.id
	}
	return ids
}

// Has tells whether the key of that id is in the ring.
func (k *Keyring) Has(id string) bool {
	return k.find(id) != nil
}

func (k *Keyring) find(id string) *key {
	if k == nil {
		return nil
	}
	for n := range k.keys {
		if k.keys[n].id == id {
			return &k.keys[n]
		}
	}
	return nil
}

// String names the keys by id only, so a keyring printed by mistake shows
// no key.
func (k *Keyring) String() string {
	if k == nil {
		return "keyring(none)"
	}
	return "keyring(" + strings.Join(k.IDs(), ",") + ")"
}

// Seal encrypts plaintext for b under the first key. A nil keyring returns
// the plaintext unchanged. Each value gets a random 96-bit nonce: the keys
// seal a few values per signing key and webhook endpoint, far below the
// 2^32 values per key at which random nonces would become a risk.
func (k *Keyring) Seal(plaintext []byte, b Binding) (string, error) {
	if k == nil {
		return string(plaintext), nil
	}
	primary := k.keys[0]
	buf := make([]byte, primary.aead.NonceSize(), primary.aead.NonceSize()+len(plaintext)+primary.aead.Overhead())
	if _, err := rand.Read(buf); err != nil {
		return "", err
	}
	buf = primary.aead.Seal(buf, buf, plaintext, b.additionalData())
	return Prefix + primary.id + ":" + base64.RawURLEncoding.EncodeToString(buf), nil
}

// Open returns the plaintext of a stored value: a sealed one decrypted,
// checked against b; any other returned as it is (a value stored before
// encryption, or while no key was configured).
func (k *Keyring) Open(stored string, b Binding) ([]byte, error) {
	id, body, sealed, err := split(stored)
	if err != nil {
		return nil, err
	}
	if !sealed {
		return []byte(stored), nil
	}
	if k == nil {
		return nil, fmt.Errorf("%w (key id %s)", ErrNoKey, id)
	}
	key := k.find(id)
	if key == nil {
		return nil, fmt.Errorf("%w (key id %s; configured: %s)", ErrUnknownKey, id, strings.Join(k.IDs(), ", "))
	}
	raw, err := base64.RawURLEncoding.DecodeString(body)
	if err != nil || len(raw) < key.aead.NonceSize()+key.aead.Overhead() {
		return nil, ErrMalformed
	}
	n := key.aead.NonceSize()
	plain, err := key.aead.Open(nil, raw[:n], raw[n:], b.additionalData())
	if err != nil {
		return nil, ErrDecrypt
	}
	return plain, nil
}

// IsSealed tells whether a stored value is sealed (it may still be malformed).
func IsSealed(stored string) bool { return strings.HasPrefix(stored, Prefix) }

// SealedWith is the id of the key a stored value is sealed with; ok is
// false for a value that is not sealed.
func SealedWith(stored string) (id string, ok bool) {
	id, _, sealed, err := split(stored)
	return id, sealed && err == nil
}

func split(stored string) (id, body string, sealed bool, err error) {
	rest, ok := strings.CutPrefix(stored, Prefix)
	if !ok {
		return "", "", false, nil
	}
	id, body, ok = strings.Cut(rest, ":")
	if !ok || len(id) != idLen {
		return "", "", true, ErrMalformed
	}
	return id, body, true, nil
}
