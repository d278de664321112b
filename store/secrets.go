package store

// Secrets at rest: the OAuth issuer's private signing keys
// (signing_keys.private_key) and webhook endpoints' signing secrets
// (webhook_endpoints.secret) are the two values the server must use again,
// so they cannot be hashed like API keys and client secrets. With a keyring
// (Options.Secrets, --secrets-key) they are sealed before they are written
// and opened when read, each bound to its row (internal/keyring): a
// database dump, a backup, a replica or a copied SQLite file then carries
// no usable key. Without one they are stored in the clear, as before.
//
// Values stored before a key was given stay readable (a value without the
// sealed prefix is plaintext); RotateSecrets seals them, and re-seals values
// of older keys under the first one.

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"gorm.io/gorm"

	"github.com/membership-api/controlplane/internal/keyring"
)

// SecretsKeyFlag is the flag the keys are given with, named in the errors
// that ask for them.
const SecretsKeyFlag = "--secrets-key"

// ErrSecretsKey is returned when a stored secret cannot be opened with the
// keys given (none given, a key missing, or the value altered or moved to
// another row).
var ErrSecretsKey = errors.New("stored secret cannot be decrypted")

// Bindings: a signing key is bound to its kid (unique and known before the
// row is inserted, and it names the key in every token it signed); an
// endpoint's secret to its id.
func signingKeyBinding(kid string) keyring.Binding {
	return keyring.Binding{Table: "signing_keys", Column: "private_key", Row: kid}
}

func webhookSecretBinding(id int64) keyring.Binding {
	return keyring.Binding{Table: "webhook_endpoints", Column: "secret", Row: strconv.FormatInt(id, 10)}
}

// SecretsEncrypted tells whether new secrets are stored encrypted.
func (s *Store) SecretsEncrypted() bool { return s.secrets != nil }

// SecretsKeyID is the id of the key new secrets are sealed with ("" when
// stored in the clear): for logs, never the key.
func (s *Store) SecretsKeyID() string { return s.secrets.PrimaryID() }

// sealSigningKey is the stored form of a signing key's private key.
func (s *Store) sealSigningKey(kid string, pem []byte) ([]byte, error) {
	sealed, err := s.secrets.Seal(pem, signingKeyBinding(kid))
	return []byte(sealed), err
}

// openSigningKey is a stored private key's PEM.
func (s *Store) openSigningKey(kid string, stored []byte) ([]byte, error) {
	pem, err := s.secrets.Open(string(stored), signingKeyBinding(kid))
	if err != nil {
		return nil, secretError(fmt.Sprintf("OAuth signing key %s", kid), err)
	}
	return pem, nil
}

// openWebhookSecret is a stored endpoint secret's plaintext.
func (s *Store) openWebhookSecret(endpointID int64, stored string) (string, error) {
	secret, err := s.secrets.Open(stored, webhookSecretBinding(endpointID))
	if err != nil {
		return "", secretError(fmt.Sprintf("the secret of webhook endpoint %d", endpointID), err)
	}
	return string(secret), nil
}

// secretError says what could not be opened and what to do, naming the
// flag; never the key or the value.
func secretError(what string, err error) error {
	hint := "give the key it was encrypted with in " + SecretsKeyFlag + " (the first key encrypts, every key decrypts)"
	if errors.Is(err, keyring.ErrDecrypt) || errors.Is(err, keyring.ErrMalformed) {
		hint = "it cannot be used"
	}
	return fmt.Errorf("%w: %s: %w: %s", ErrSecretsKey, what, err, hint)
}

// createWebhookEndpoint inserts e with its secret sealed for its row: the
// id is known only once the row is inserted, so the row is written with no
// secret and the sealed one set in the same transaction. e keeps the
// plaintext secret (the API shows it once).
func (s *Store) createWebhookEndpoint(tx *gorm.DB, e *WebhookEndpoint) error {
	plain := e.Secret
	if s.secrets != nil {
		e.Secret = ""
	}
	if err := tx.Omit("Workspace").Create(e).Error; err != nil {
		return fmt.Errorf("create webhook endpoint: %w", err)
	}
	if s.secrets == nil {
		return nil
	}
	sealed, err := s.secrets.Seal([]byte(plain), webhookSecretBinding(e.ID))
	if err != nil {
		return err
	}
	e.Secret = plain
	return tx.Model(&WebhookEndpoint{}).Where("id = ?", e.ID).Update("secret", sealed).Error
}

// SecretsStatus is how the stored secrets are kept.
type SecretsStatus struct {
	// SigningKeys and WebhookSecrets count the values by the id of the key
	// that sealed them; "" counts those stored in the clear.
	SigningKeys, WebhookSecrets map[string]int
}

// Plaintext is how many values are stored in the clear.
func (st SecretsStatus) Plaintext() int { return st.SigningKeys[""] + st.WebhookSecrets[""] }

// sealedPrefixLen is the length of "enc:v1:<key id>:".
var sealedPrefixLen = len(keyring.Prefix) + len(keyring.KeyID(make([]byte, keyring.KeySize))) + 1

// CheckSecrets counts the stored secrets by the key that sealed them and
// opens one of each kind per key, so that serve stops at start, naming
// --secrets-key, when a key is missing or wrong, instead of failing each
// request that would need it. Returns ErrSecretsKey (wrapped) then.
func (s *Store) CheckSecrets(ctx context.Context) (SecretsStatus, error) {
	st := SecretsStatus{SigningKeys: map[string]int{}, WebhookSecrets: map[string]int{}}
	var keys []SigningKey
	if err := s.read.WithContext(ctx).Order("generation").Find(&keys).Error; err != nil {
		return st, fmt.Errorf("read signing keys: %w", err)
	}
	opened := map[string]bool{}
	for _, k := range keys {
		id, _ := keyring.SealedWith(string(k.PrivateKey))
		st.SigningKeys[id]++
		if id != "" && !opened[id] {
			if _, err := s.openSigningKey(k.KID, k.PrivateKey); err != nil {
				return st, err
			}
			opened[id] = true
		}
	}
	// Endpoints can be many: counted by their prefix in SQL, one opened per key.
	var groups []struct {
		Prefix string
		N      int
		MinID  int64
	}
	err := s.read.WithContext(ctx).Raw(`SELECT CASE WHEN secret LIKE ? THEN substr(secret, 1, ?) ELSE '' END AS prefix,
  count(*) AS n, min(id) AS min_id FROM webhook_endpoints GROUP BY 1`, keyring.Prefix+"%", sealedPrefixLen).Scan(&groups).Error
	if err != nil {
		return st, fmt.Errorf("read webhook secrets: %w", err)
	}
	for _, g := range groups {
		id := strings.TrimSuffix(strings.TrimPrefix(g.Prefix, keyring.Prefix), ":")
		st.WebhookSecrets[id] += g.N
		if id == "" {
			continue
		}
		var e WebhookEndpoint
		if err := s.read.WithContext(ctx).Where("id = ?", g.MinID).Take(&e).Error; err != nil {
			return st, fmt.Errorf("read webhook endpoint %d: %w", g.MinID, err)
		}
		if _, err := s.openWebhookSecret(e.ID, e.Secret); err != nil {
			return st, err
		}
	}
	return st, nil
}

// DefaultSecretsBatch is how many rows RotateSecrets re-seals per transaction.
const DefaultSecretsBatch = 100

// RotateResult counts what RotateSecrets did.
type RotateResult struct {
	// Sealed counts values re-sealed under the first key, Converted those
	// that were stored in the clear before (a subset of Sealed's), and
	// Current those already sealed under it.
	Sealed, Converted, Current int
}

// RotateSecrets seals every stored secret under the keyring's first key:
// plaintext values and values of the other keys, batch rows per
// transaction. It is idempotent (values already under the first key are
// left alone) and safe while servers run: each row is replaced only if it
// still holds the value that was read (a concurrent change wins and the
// row is left for the next run), and a reader holding every key of the
// ring opens old and new values alike. Rows that do not open are skipped
// and reported in the error; the others are still rotated.
func (s *Store) RotateSecrets(ctx context.Context, batch int) (RotateResult, error) {
	var res RotateResult
	if s.secrets == nil {
		return res, fmt.Errorf("no secrets key: give one with %s", SecretsKeyFlag)
	}
	if batch <= 0 {
		batch = DefaultSecretsBatch
	}
	var failed []error
	if err := s.rotateSigningKeys(ctx, &res, &failed); err != nil {
		return res, err
	}
	if err := s.rotateWebhookSecrets(ctx, batch, &res, &failed); err != nil {
		return res, err
	}
	if len(failed) > 0 {
		return res, fmt.Errorf("%d secrets could not be re-encrypted: %w", len(failed), errors.Join(failed...))
	}
	return res, nil
}

// current tells whether a stored value is sealed under the first key.
func (s *Store) current(stored string) bool {
	id, ok := keyring.SealedWith(stored)
	return ok && id == s.secrets.PrimaryID()
}

// rotateSigningKeys re-seals the signing keys: a handful, in one transaction.
func (s *Store) rotateSigningKeys(ctx context.Context, res *RotateResult, failed *[]error) error {
	return s.inTx(ctx, func(tx *gorm.DB) error {
		var keys []SigningKey
		if err := tx.Order("generation").Find(&keys).Error; err != nil {
			return fmt.Errorf("read signing keys: %w", err)
		}
		for _, k := range keys {
			if s.current(string(k.PrivateKey)) {
				res.Current++
				continue
			}
			pem, err := s.openSigningKey(k.KID, k.PrivateKey)
			if err != nil {
				*failed = append(*failed, err)
				continue
			}
			sealed, err := s.sealSigningKey(k.KID, pem)
			if err != nil {
				return err
			}
			r := tx.Model(&SigningKey{}).Where("id = ? AND private_key = ?", k.ID, k.PrivateKey).Update("private_key", sealed)
			if r.Error != nil {
				return r.Error
			}
			if r.RowsAffected == 1 {
				res.Sealed++
				if !keyring.IsSealed(string(k.PrivateKey)) {
					res.Converted++
				}
			}
		}
		return nil
	})
}

// rotateWebhookSecrets re-seals the endpoints' secrets, batch rows per
// transaction, in id order.
func (s *Store) rotateWebhookSecrets(ctx context.Context, batch int, res *RotateResult, failed *[]error) error {
	var after int64
	for {
		var rows []WebhookEndpoint
		if err := s.read.WithContext(ctx).Select("id", "secret").Where("id > ?", after).Order("id").Limit(batch).Find(&rows).Error; err != nil {
			return fmt.Errorf("read webhook secrets: %w", err)
		}
		if len(rows) == 0 {
			return nil
		}
		after = rows[len(rows)-1].ID
		rows = slices.DeleteFunc(rows, func(e WebhookEndpoint) bool {
			if s.current(e.Secret) {
				res.Current++
				return true
			}
			return false
		})
		if len(rows) == 0 {
			continue
		}
		err := s.inTx(ctx, func(tx *gorm.DB) error {
			for _, e := range rows {
				plain, err := s.openWebhookSecret(e.ID, e.Secret)
				if err != nil {
					*failed = append(*failed, err)
					continue
				}
				sealed, err := s.secrets.Seal([]byte(plain), webhookSecretBinding(e.ID))
				if err != nil {
					return err
				}
				r := tx.Model(&WebhookEndpoint{}).Where("id = ? AND secret = ?", e.ID, e.Secret).Update("secret", sealed)
				if r.Error != nil {
					return r.Error
				}
				if r.RowsAffected == 1 {
					res.Sealed++
					if !keyring.IsSealed(e.Secret) {
						res.Converted++
					}
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
}

// claimedWebhookSecret opens the secret of a claimed message's endpoint.
// One that does not open (its row altered; a missing key stops serve at
// start, CheckSecrets) is logged and its message left out of the claim
// rather than failing the whole claim: it stays claimed until its lease
// ends, and the other endpoints' deliveries go on.
func (s *Store) claimedWebhookSecret(ctx context.Context, messageID, endpointID int64, stored string) (string, bool) {
	secret, err := s.openWebhookSecret(endpointID, stored)
	if err != nil {
		s.log.ErrorContext(ctx, "webhook message not delivered: its endpoint's secret cannot be decrypted", "message", messageID, "err", err)
		return "", false
	}
	return secret, true
}
