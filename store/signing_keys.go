package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"
)

// SigningKey is one of the keys the server's own OAuth issuer signs access
// tokens with. They live in the database so that every replica signs and
// verifies with the same keys without configuration (as the list cursor key
// does). The private key is sealed with the secrets key when one is
// configured (secrets.go; --secrets-key, made in the data directory on
// SQLite): whoever can read the database alone then cannot mint tokens.
// Without one it is stored in the clear, and the key can be rotated at any
// time (`oauth-keys rotate`).
//
// Keys are ordered by Generation; the key that signs at time t is the
// highest generation whose SignFrom is not after t. A key added by a
// rotation is published at once and signs only from SignFrom, so that
// every verifier and JWKS cache knows it before the first token it signs.
type SigningKey struct {
	ID int64 `gorm:"primaryKey"`
	// Generation orders the keys; unique, so two rotations racing cannot
	// both add the same next key.
	Generation int64  `gorm:"not null;uniqueIndex"`
	KID        string `gorm:"not null;uniqueIndex"`
	// Algorithm is the JWS alg, e.g. EdDSA.
	Algorithm string `gorm:"not null"`
	// PrivateKey is the PKCS #8 private key, PEM-encoded; in the database,
	// sealed (secrets.go) when a secrets key is configured. Store methods
	// take and return the PEM.
	PrivateKey []byte    `gorm:"not null"`
	SignFrom   time.Time `gorm:"not null"`
	CreatedAt  time.Time `gorm:"not null"`
	CreatedBy  string    `gorm:"not null;default:''"`
}

// SigningKeys returns every signing key, oldest generation first.
func (s *Store) SigningKeys(ctx context.Context) ([]SigningKey, error) {
	var keys []SigningKey
	if err := s.read.WithContext(ctx).Order("generation").Find(&keys).Error; err != nil {
		return nil, fmt.Errorf("read signing keys: %w", err)
	}
	for n := range keys {
		pem, err := s.openSigningKey(keys[n].KID, keys[n].PrivateKey)
		if err != nil {
			return nil, err
		}
		keys[n].PrivateKey = pem
	}
	return keys, nil
}

// EnsureFirstSigningKey stores key as generation 1, signing at once, unless
// a first key exists: replicas starting together each propose one and the
// first stored wins (the others' are dropped by the unique generation).
func (s *Store) EnsureFirstSigningKey(ctx context.Context, key SigningKey) error {
	key.Generation, key.SignFrom, key.CreatedAt = 1, s.now(), s.now()
	sealed, err := s.sealSigningKey(key.KID, key.PrivateKey)
	if err != nil {
		return err
	}
	key.PrivateKey = sealed
	return s.inTx(ctx, func(tx *gorm.DB) error {
		if err := tx.Clauses(clause.OnConflict{DoNothing: true}).Create(&key).Error; err != nil {
			return fmt.Errorf("store the first signing key: %w", err)
		}
		return nil
	})
}

// AddSigningKey stores key as the next generation, signing from
// now + delay (never before the key it follows), and deletes the keys that
// stopped signing before retiredBefore (no token they signed can still be
// valid). Returns the stored key; ErrConflict if another rotation added the
// same generation at the same time.
func (s *Store) AddSigningKey(ctx context.Context, key SigningKey, delay time.Duration, retiredBefore time.Time) (SigningKey, error) {
	pem := key.PrivateKey
	sealed, err := s.sealSigningKey(key.KID, pem)
	if err != nil {
		return SigningKey{}, err
	}
	key.PrivateKey = sealed
	err = s.inTx(ctx, func(tx *gorm.DB) error {
		var last SigningKey
		err := tx.Order("generation DESC").Take(&last).Error
		if err != nil && !errors.Is(err, gorm.ErrRecordNotFound) {
			return fmt.Errorf("read the last signing key: %w", err)
		}
		now := s.now()
		key.Generation, key.CreatedAt, key.SignFrom = last.Generation+1, now, now.Add(delay)
		if key.SignFrom.Before(last.SignFrom) {
			key.SignFrom = last.SignFrom
		}
		if err := tx.Create(&key).Error; err != nil {
			if errors.Is(err, gorm.ErrDuplicatedKey) {
				return errorf(ErrConflict, "another rotation added a signing key at the same time: list the keys and retry if needed")
			}
			return fmt.Errorf("store signing key: %w", err)
		}
		return pruneSigningKeys(tx, retiredBefore)
	})
	key.PrivateKey = pem
	return key, err
}

// pruneSigningKeys deletes every key superseded (a later key signing)
// before t. The newest key is never deleted.
func pruneSigningKeys(tx *gorm.DB, t time.Time) error {
	var keys []SigningKey
	if err := tx.Order("generation").Find(&keys).Error; err != nil {
		return fmt.Errorf("read signing keys: %w", err)
	}
	var old []int64
	for i := 0; i+1 < len(keys); i++ {
		if keys[i+1].SignFrom.Before(t) {
			old = append(old, keys[i].ID)
		}
	}
	if len(old) == 0 {
		return nil
	}
	if err := tx.Where("id IN ?", old).Delete(&SigningKey{}).Error; err != nil {
		return fmt.Errorf("delete retired signing keys: %w", err)
	}
	return nil
}
