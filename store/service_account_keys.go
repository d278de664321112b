package store

import (
	"context"
	"fmt"
	"time"

	"gorm.io/gorm"
)

// APIKeyIDPrefix starts the public ID of a key (upstream's example: ak_abc123def456).
const APIKeyIDPrefix = "ak_"

// NewServiceAccountKey is the key CreateServiceAccountKey issues: an
// optional name, and how long it lasts (ParseExpiresIn's form; "": it
// never expires).
type NewServiceAccountKey struct {
	Name, ExpiresIn string
}

// CreateServiceAccountKey issues an API key for the service account
// clientID of the workspace (admins only) and returns it in clear text,
// which is never available again. Errors as UpdateServiceAccount, and
// ErrInvalid (invalid_expires_in).
func (s *Store) CreateServiceAccountKey(ctx context.Context, workspaceName, by, clientID string, nk NewServiceAccountKey) (string, APIKey, error) {
	name, expiresIn := nk.Name, nk.ExpiresIn
	var expiresAt *time.Time
	now := s.now()
	if expiresIn != "" {
		d, err := ParseExpiresIn(expiresIn)
		if err != nil {
			return "", APIKey{}, err
		}
		at := now.Add(d)
		expiresAt = &at
	}
	if err := checkServiceAccountText("name", name, false); err != nil {
		return "", APIKey{}, err
	}
	key, err := randomToken(APIKeyPrefix)
	if err != nil {
		return "", APIKey{}, err
	}
	publicID, err := randomToken(APIKeyIDPrefix)
	if err != nil {
		return "", APIKey{}, err
	}
	publicID = publicID[:len(APIKeyIDPrefix)+16] // 80 bits: an ID, not a secret
	var k APIKey
	err = s.adminTx(ctx, workspaceName, by, func(tx *gorm.DB, ws Workspace) error {
		if _, err := serviceAccountIn(tx, ws.ID, clientID); err != nil {
			return err
		}
		k = APIKey{WorkspaceID: ws.ID, Sub: clientID, Hash: HashAPIKey(key), Hint: key[:len(APIKeyPrefix)+6],
			PublicID: publicID, Name: name, ExpiresIn: expiresIn, ExpiresAt: expiresAt,
			Audit: Audit{CreatedBy: by, UpdatedBy: by}}
		if err := tx.Omit("Workspace").Create(&k).Error; err != nil {
			return fmt.Errorf("store API key: %w", err)
		}
		return appendAudit(tx, auditOf(ws, ActionAPIKeyCreated, TargetAPIKey, k.Hint, nil,
			fields{"sub": clientID, "id": publicID, "name": name, "expiresIn": expiresIn}))
	})
	if err != nil {
		return "", APIKey{}, err
	}
	return key, k, nil
}

// ServiceAccountKeys lists a service account's unrevoked keys, expired ones
// included (their expires_in says so), oldest first; any member may.
// Errors as ServiceAccounts, and ErrNotFound (service_account_not_found).
func (s *Store) ServiceAccountKeys(ctx context.Context, workspaceName, by, clientID string) ([]APIKey, error) {
	m, err := s.Membership(ctx, workspaceName, by)
	if err != nil {
		return nil, err
	}
	if _, err := serviceAccountIn(s.read.WithContext(ctx), m.Workspace.ID, clientID); err != nil {
		return nil, err
	}
	keys := []APIKey{}
	if err := s.read.WithContext(ctx).Where("workspace_id = ? AND sub = ? AND revoked_at IS NULL", m.Workspace.ID, clientID).
		Order("created_at, id").Find(&keys).Error; err != nil {
		return nil, fmt.Errorf("list API keys: %w", err)
	}
	return keys, nil
}

// RevokeServiceAccountKey revokes one of a service account's keys by its
// public ID (admins only); it stops working at once. Errors as
// UpdateServiceAccount, and ErrNotFound (api_key_not_found).
func (s *Store) RevokeServiceAccountKey(ctx context.Context, workspaceName, by, clientID, keyID string) error {
	return s.adminTx(ctx, workspaceName, by, func(tx *gorm.DB, ws Workspace) error {
		if _, err := serviceAccountIn(tx, ws.ID, clientID); err != nil {
			return err
		}
		if !storable(keyID) {
			return codedf(ErrNotFound, CodeAPIKeyNotFound, "API key not found")
		}
		now := s.now()
		res := tx.Model(&APIKey{}).
			Where("workspace_id = ? AND sub = ? AND public_id = ? AND revoked_at IS NULL", ws.ID, clientID, keyID).
			Updates(map[string]any{"revoked_at": &now, "updated_at": now, "updated_by": by})
		if res.Error != nil {
			return fmt.Errorf("revoke API key: %w", res.Error)
		}
		if res.RowsAffected == 0 {
			return codedf(ErrNotFound, CodeAPIKeyNotFound, "API key %q not found for this service account", keyID)
		}
		var k APIKey
		if err := tx.Select("hint").Where("workspace_id = ? AND public_id = ?", ws.ID, keyID).Take(&k).Error; err != nil {
			return err
		}
		return appendAudit(tx, auditOf(ws, ActionAPIKeyRevoked, TargetAPIKey, k.Hint, nil, fields{"sub": clientID, "id": keyID}))
	})
}
