package store

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"errors"
	"fmt"
	"strings"

	"gorm.io/gorm"
)

// APIKeyPrefix starts every key this server issues, so a key is recognisable
// in a leak scanner and cheap to tell from a JWT. Upstream keys look alike.
const APIKeyPrefix = "bl_"

var keyEncoding = base32.StdEncoding.WithPadding(base32.NoPadding)

// HashAPIKey is how keys are stored: keys carry 200 random bits, so a fast
// hash is enough (there is nothing to brute-force as with passwords).
func HashAPIKey(key string) []byte {
	sum := sha256.Sum256([]byte(key))
	return sum[:]
}

// IsAPIKey tells whether a credential has the shape of one of our keys.
func IsAPIKey(credential string) bool { return strings.HasPrefix(credential, APIKeyPrefix) }

// CreateAPIKey issues a key for sub in the workspace called workspaceName and
// returns it in clear text; only its hash is stored. sub must be a member.
// Returns ErrNotFound if the workspace does not exist or sub is not a member.
func (s *Store) CreateAPIKey(ctx context.Context, workspaceName, sub string) (string, APIKey, error) {
	var ws Workspace
	if err := s.read.WithContext(ctx).Where("name = ?", workspaceName).Take(&ws).Error; err != nil {
		if errors.Is(err, gorm.ErrRecordNotFound) {
			return "", APIKey{}, codedf(ErrNotFound, CodeWorkspaceNotFound, "workspace %q does not exist", workspaceName)
		}
		return "", APIKey{}, err
	}
	if _, err := s.Membership(ctx, workspaceName, sub); err != nil {
		if errors.Is(err, ErrNotFound) {
			return "", APIKey{}, errorf(ErrNotFound, "%q is not a member of workspace %q: an API key acts as a member", sub, workspaceName)
		}
		return "", APIKey{}, err
	}
	raw := make([]byte, 25)
	if _, err := rand.Read(raw); err != nil {
		return "", APIKey{}, err
	}
	key := APIKeyPrefix + strings.ToLower(keyEncoding.EncodeToString(raw))
	k := APIKey{WorkspaceID: ws.ID, Sub: sub, Hash: HashAPIKey(key), Hint: key[:len(APIKeyPrefix)+6],
		Audit: Audit{CreatedBy: sub, UpdatedBy: sub}}
	err := s.inTx(ctx, func(tx *gorm.DB) error {
		if err := tx.Create(&k).Error; err != nil {
			return err
		}
		return appendAudit(tx, auditOf(ws, ActionAPIKeyCreated, TargetAPIKey, k.Hint, nil, fields{"sub": sub}))
	})
	if err != nil {
		return "", APIKey{}, fmt.Errorf("store API key: %w", err)
	}
	k.Workspace = ws
	return key, k, nil
}

// LookupAPIKey returns the unrevoked, unexpired key matching the clear-text
// key, with its workspace. Returns ErrNotFound for unknown, revoked and
// expired keys alike.
func (s *Store) LookupAPIKey(ctx context.Context, key string) (APIKey, error) {
	var k APIKey
	err := s.read.WithContext(ctx).Joins("Workspace").
		Where("api_keys.hash = ? AND api_keys.revoked_at IS NULL AND (api_keys.expires_at IS NULL OR api_keys.expires_at > ?)",
			HashAPIKey(key), s.now()).Take(&k).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return APIKey{}, errorf(ErrNotFound, "API key not found or revoked")
	}
	return k, err
}

// RevokeAPIKey revokes the key given in clear text; it stops working at once.
// Returns ErrNotFound if no unrevoked key matches.
func (s *Store) RevokeAPIKey(ctx context.Context, by, key string) error {
	now := s.now()
	return s.inTx(ctx, func(tx *gorm.DB) error {
		var k APIKey
		err := tx.Joins("Workspace").Where("api_keys.hash = ? AND api_keys.revoked_at IS NULL", HashAPIKey(key)).Take(&k).Error
		if errors.Is(err, gorm.ErrRecordNotFound) {
			return errorf(ErrNotFound, "no active API key matches")
		}
		if err != nil {
			return err
		}
		res := tx.Model(&APIKey{}).
			Where("id = ? AND revoked_at IS NULL", k.ID).
			Updates(map[string]any{"revoked_at": &now, "updated_at": now, "updated_by": by})
		if res.Error != nil {
			return res.Error
		}
		return appendAudit(tx, auditOf(k.Workspace, ActionAPIKeyRevoked, TargetAPIKey, k.Hint, nil, fields{"sub": k.Sub}))
	})
}
