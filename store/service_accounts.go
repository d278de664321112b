package store

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"gorm.io/gorm"
)

// A service account is a machine identity of one workspace. It is also a
// member of that workspace (sub = its client ID, no email, Source
// SourceServiceAccount), so every rule that asks "is the caller a member, an
// admin?" (including the invite batch statement) holds for it unchanged. Its
// member row is created and deleted with it, never through the user
// operations: lists of users leave it out, and RemoveUser and UpdateRole
// refuse its client ID.

// ServiceAccountPrefix starts every client ID. It is reserved: a token from
// an external issuer whose sub starts with it is refused (server/auth.go),
// so no person can act as a service account's member row.
const ServiceAccountPrefix = "sa_"

// ClientSecretPrefix starts every client secret, so a leak scanner can tell one.
const ClientSecretPrefix = "bls_"

// SourceServiceAccount marks the member row of a service account.
const SourceServiceAccount = "service_account"

// Codes of the service-account refusals (the error kinds of docs/api/errors.md).
const (
	CodeServiceAccountNotFound = "service_account_not_found"
	CodeServiceAccountName     = "service_account_name_taken"
	CodeAPIKeyNotFound         = "api_key_not_found" //nolint:gosec // G101: an error kind, not a credential
	CodeInvalidExpiresIn       = "invalid_expires_in"
)

// maxServiceAccountText bounds names and descriptions, in characters.
const maxServiceAccountText = 200

// IsServiceAccountID tells whether sub is a service account's client ID.
func IsServiceAccountID(sub string) bool { return strings.HasPrefix(sub, ServiceAccountPrefix) }

// ServiceAccount is a machine identity: it authenticates with its client ID
// and secret (OAuth client credentials) or with API keys, and acts as a
// member of its workspace with the role of its member row. Only the SHA-256
// of the secret is stored (the secret carries 200 random bits, like a key).
type ServiceAccount struct {
	ID          int64  `gorm:"primaryKey"`
	WorkspaceID int64  `gorm:"not null;uniqueIndex:idx_service_accounts_workspace_name,priority:1"`
	ClientID    string `gorm:"not null;uniqueIndex"`
	Name        string `gorm:"not null;uniqueIndex:idx_service_accounts_workspace_name,priority:2"`
	Description string `gorm:"not null;default:''"`
	SecretHash  []byte `gorm:"not null"`
	Audit

	Workspace Workspace `gorm:"constraint:OnDelete:CASCADE"`
}

// ServiceAccountView is a service account with its role (from its member row).
type ServiceAccountView struct {
	ServiceAccount
	Role string
}

// NewServiceAccount is the service account CreateServiceAccount creates:
// a name unique in its workspace, an optional description, and its role
// (RoleMember when empty).
type NewServiceAccount struct {
	Name, Description, Role string
}

// ServiceAccountChange is what UpdateServiceAccount changes (nil: kept).
type ServiceAccountChange struct {
	Name, Description, Role *string
}

func checkServiceAccountText(what, s string, required bool) error {
	if required && strings.TrimSpace(s) == "" {
		return errorf(ErrInvalid, "%s is required", what)
	}
	if !storable(s) || utf8.RuneCountInString(s) > maxServiceAccountText {
		return errorf(ErrInvalid, "%s must be valid UTF-8 of at most %d characters", what, maxServiceAccountText)
	}
	return nil
}

func checkRole(role string) error {
	if role != RoleAdmin && role != RoleMember {
		return codedf(ErrInvalid, CodeInvalidRole, "role must be %q or %q", RoleAdmin, RoleMember)
	}
	return nil
}

// firstError is the first non-nil error: a request is answered with one reason.
func firstError(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// randomToken is prefix + 200 random bits in lower-case base32.
func randomToken(prefix string) (string, error) {
	raw := make([]byte, 25)
	if _, err := rand.Read(raw); err != nil {
		return "", err
	}
	return prefix + strings.ToLower(keyEncoding.EncodeToString(raw)), nil
}

// CreateServiceAccount creates a service account in the workspace (admins
// only) with its member row, and returns it with its secret in clear text,
// which is never available again. Returns
// ErrNotFound (workspace_not_found) if the workspace does not exist or by is
// not a member, ErrForbidden for a non-admin, ErrConflict if a service
// account of that name exists in the workspace, ErrInvalid for bad input.
func (s *Store) CreateServiceAccount(ctx context.Context, workspaceName, by string, sa NewServiceAccount) (string, ServiceAccountView, error) {
	name, description, role := sa.Name, sa.Description, sa.Role
	if role == "" {
		role = RoleMember
	}
	if err := firstError(checkServiceAccountText("name", name, true), checkServiceAccountText("description", description, false), checkRole(role)); err != nil {
		return "", ServiceAccountView{}, err
	}
	clientID, err := randomToken(ServiceAccountPrefix)
	if err != nil {
		return "", ServiceAccountView{}, err
	}
	secret, err := randomToken(ClientSecretPrefix)
	if err != nil {
		return "", ServiceAccountView{}, err
	}
	var v ServiceAccountView
	err = s.adminTx(ctx, workspaceName, by, func(tx *gorm.DB, ws Workspace) error {
		audit := Audit{CreatedBy: by, UpdatedBy: by}
		v = ServiceAccountView{Role: role, ServiceAccount: ServiceAccount{WorkspaceID: ws.ID, ClientID: clientID,
			Name: name, Description: description, SecretHash: HashAPIKey(secret), Audit: audit, Workspace: ws}}
		if err := tx.Omit("Workspace").Create(&v.ServiceAccount).Error; err != nil {
			if errors.Is(err, gorm.ErrDuplicatedKey) {
				return codedf(ErrConflict, CodeServiceAccountName, "a service account called %q already exists in this workspace", name)
			}
			return fmt.Errorf("create service account: %w", err)
		}
		// Not createMember: member_count counts people.
		m := Member{WorkspaceID: ws.ID, Sub: clientID, Role: role, Source: SourceServiceAccount, Audit: audit}
		if err := tx.Omit("Workspace").Create(&m).Error; err != nil {
			return fmt.Errorf("create service account member: %w", err)
		}
		return appendAudit(tx, auditOf(ws, ActionServiceAccountCreated, TargetServiceAccount, clientID, nil, serviceAccountFields(v)))
	})
	if err != nil {
		return "", ServiceAccountView{}, err
	}
	return secret, v, nil
}

// serviceAccountViews selects service accounts with their roles.
func serviceAccountViews(tx *gorm.DB) *gorm.DB {
	return tx.Table("service_accounts").
		Select("service_accounts.*, members.role").
		Joins("JOIN members ON members.workspace_id = service_accounts.workspace_id AND members.sub = service_accounts.client_id")
}

// ServiceAccounts lists the workspace's service accounts by name (any member
// may). Errors as Membership.
func (s *Store) ServiceAccounts(ctx context.Context, workspaceName, by string) ([]ServiceAccountView, error) {
	m, err := s.Membership(ctx, workspaceName, by)
	if err != nil {
		return nil, err
	}
	list := []ServiceAccountView{}
	if err := serviceAccountViews(s.read.WithContext(ctx)).Where("service_accounts.workspace_id = ?", m.Workspace.ID).
		Order("service_accounts.name, service_accounts.id").Find(&list).Error; err != nil {
		return nil, fmt.Errorf("list service accounts: %w", err)
	}
	return list, nil
}

// serviceAccountIn reads one service account of the workspace, locked for
// the transaction's change.
func serviceAccountIn(tx *gorm.DB, workspaceID int64, clientID string) (ServiceAccountView, error) {
	var v ServiceAccountView
	if !storable(clientID) {
		return v, codedf(ErrNotFound, CodeServiceAccountNotFound, "service account not found")
	}
	err := serviceAccountViews(tx).Where("service_accounts.workspace_id = ? AND service_accounts.client_id = ?", workspaceID, clientID).Take(&v).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return v, codedf(ErrNotFound, CodeServiceAccountNotFound, "service account %q not found in this workspace", clientID)
	}
	return v, err
}

// UpdateServiceAccount changes a service account's name, description or role
// (admins only). Errors as CreateServiceAccount, and ErrNotFound
// (service_account_not_found) for a client ID not in the workspace.
func (s *Store) UpdateServiceAccount(ctx context.Context, workspaceName, by, clientID string, c ServiceAccountChange) (ServiceAccountView, error) {
	var errs []error
	if c.Name != nil {
		errs = append(errs, checkServiceAccountText("name", *c.Name, true))
	}
	if c.Description != nil {
		errs = append(errs, checkServiceAccountText("description", *c.Description, false))
	}
	if c.Role != nil {
		errs = append(errs, checkRole(*c.Role))
	}
	if err := firstError(errs...); err != nil {
		return ServiceAccountView{}, err
	}
	var v ServiceAccountView
	err := s.adminTx(ctx, workspaceName, by, func(tx *gorm.DB, ws Workspace) error {
		var err error
		if v, err = serviceAccountIn(tx, ws.ID, clientID); err != nil {
			return err
		}
		before := serviceAccountFields(v)
		now := s.now()
		if c.Role != nil && *c.Role != v.Role {
			if v.Role == RoleAdmin {
				// The last admin may be this account: demoting it would leave
				// the workspace with no admin at all.
				if err := refuseLastAdmin(tx, Member{WorkspaceID: ws.ID, Role: v.Role}, "demote"); err != nil {
					return err
				}
			}
			if err := tx.Model(&Member{}).Where("workspace_id = ? AND sub = ?", ws.ID, clientID).
				Updates(map[string]any{"role": *c.Role, "updated_by": by, "updated_at": now}).Error; err != nil {
				return fmt.Errorf("update service account role: %w", err)
			}
			v.Role = *c.Role
		}
		updates := map[string]any{"updated_by": by, "updated_at": now}
		if c.Name != nil {
			updates["name"], v.Name = *c.Name, *c.Name
		}
		if c.Description != nil {
			updates["description"], v.Description = *c.Description, *c.Description
		}
		v.UpdatedBy, v.UpdatedAt = by, now
		if err := tx.Model(&ServiceAccount{}).Where("id = ?", v.ID).Updates(updates).Error; err != nil {
			if errors.Is(err, gorm.ErrDuplicatedKey) {
				return codedf(ErrConflict, CodeServiceAccountName, "a service account called %q already exists in this workspace", *c.Name)
			}
			return fmt.Errorf("update service account: %w", err)
		}
		if b, a := changed(before, serviceAccountFields(v)); len(a) > 0 {
			return appendAudit(tx, auditOf(ws, ActionServiceAccountUpdated, TargetServiceAccount, clientID, b, a))
		}
		return nil
	})
	return v, err
}

// DeleteServiceAccount deletes a service account (admins only) with its
// member row and API keys in one transaction; its tokens stop working at
// once because the verifier looks the account up on every request
// (ActiveServiceAccount). Returns it as it was; errors as UpdateServiceAccount.
func (s *Store) DeleteServiceAccount(ctx context.Context, workspaceName, by, clientID string) (ServiceAccountView, error) {
	var v ServiceAccountView
	err := s.adminTx(ctx, workspaceName, by, func(tx *gorm.DB, ws Workspace) error {
		var err error
		if v, err = serviceAccountIn(tx, ws.ID, clientID); err != nil {
			return err
		}
		if v.Role == RoleAdmin {
			if err := refuseLastAdmin(tx, Member{WorkspaceID: ws.ID, Role: v.Role}, "delete"); err != nil {
				return err
			}
		}
		for _, step := range []struct {
			what  string
			model any
			where string
		}{
			{"API keys", &APIKey{}, "workspace_id = ? AND sub = ?"},
			{"member row", &Member{}, "workspace_id = ? AND sub = ?"},
			{"service account", &ServiceAccount{}, "workspace_id = ? AND client_id = ?"},
		} {
			if err := tx.Where(step.where, ws.ID, clientID).Delete(step.model).Error; err != nil {
				return fmt.Errorf("delete service account's %s: %w", step.what, err)
			}
		}
		return appendAudit(tx, auditOf(ws, ActionServiceAccountDeleted, TargetServiceAccount, clientID, serviceAccountFields(v), nil))
	})
	return v, err
}

// AuthenticateServiceAccount checks a client ID and secret (the secret's
// hash compared in constant time) and returns the account with its workspace
// and role. Returns ErrNotFound for an unknown client and a wrong secret
// alike.
func (s *Store) AuthenticateServiceAccount(ctx context.Context, clientID, secret string) (ServiceAccountView, error) {
	v, err := s.ActiveServiceAccount(ctx, clientID)
	if err != nil {
		return v, err
	}
	if subtle.ConstantTimeCompare(v.SecretHash, HashAPIKey(secret)) != 1 {
		return ServiceAccountView{}, errorf(ErrNotFound, "unknown client or wrong secret")
	}
	return v, nil
}

// ActiveServiceAccount returns the service account with its workspace and
// role, or ErrNotFound once it is deleted: the verifier calls it for every
// request made with a service account's token, so a deletion takes effect
// at once on every replica. One statement (the unique client_id index, then
// its member row and workspace by primary keys), with no ORM preload: a
// preload is a second round trip, which PostgreSQL pays on every request.
func (s *Store) ActiveServiceAccount(ctx context.Context, clientID string) (ServiceAccountView, error) {
	if !IsServiceAccountID(clientID) || !storable(clientID) {
		return ServiceAccountView{}, errorf(ErrNotFound, "unknown client")
	}
	var v ServiceAccountView
	var ws Workspace
	err := s.read.WithContext(ctx).Raw(`SELECT sa.id, sa.workspace_id, sa.client_id, sa.name, sa.description, sa.secret_hash,
       sa.created_at, sa.updated_at, sa.created_by, sa.updated_by, m.role,
       w.name, w.display_name, w.member_count, w.created_at, w.updated_at, w.created_by, w.updated_by
FROM service_accounts sa
JOIN members m ON m.workspace_id = sa.workspace_id AND m.sub = sa.client_id
JOIN workspaces w ON w.id = sa.workspace_id
WHERE sa.client_id = ?`, clientID).Row().Scan(&v.ID, &v.WorkspaceID, &v.ClientID, &v.Name, &v.Description, &v.SecretHash,
		&v.CreatedAt, &v.UpdatedAt, &v.CreatedBy, &v.UpdatedBy, &v.Role,
		&ws.Name, &ws.DisplayName, &ws.MemberCount, &ws.CreatedAt, &ws.UpdatedAt, &ws.CreatedBy, &ws.UpdatedBy)
	if errors.Is(err, sql.ErrNoRows) {
		return ServiceAccountView{}, errorf(ErrNotFound, "unknown client")
	}
	if err != nil {
		return ServiceAccountView{}, fmt.Errorf("look up service account: %w", err)
	}
	ws.ID = v.WorkspaceID
	v.Workspace = ws
	return v, nil
}

// maxKeyLifetime bounds expires_in, as upstream documents ("at most 10 years").
const maxKeyLifetime = 10 * 365 * 24 * time.Hour

// ParseExpiresIn reads upstream's key lifetimes: a positive whole number and
// a unit, s, m, h, d (days) or w (weeks), at most 10 years: "30d", "24h",
// "1w". time.ParseDuration has no days or weeks, and accepts fractions and
// sums ("1h30m") that upstream does not document, so this is its own rule.
func ParseExpiresIn(s string) (time.Duration, error) {
	units := map[byte]time.Duration{'s': time.Second, 'm': time.Minute, 'h': time.Hour, 'd': 24 * time.Hour, 'w': 7 * 24 * time.Hour}
	bad := codedf(ErrInvalid, CodeInvalidExpiresIn, "expires_in %q must be a positive whole number and a unit (s, m, h, d, w) of at most 10 years, like 30d", s)
	if len(s) < 2 || len(s) > 12 {
		return 0, bad
	}
	unit, ok := units[s[len(s)-1]]
	if !ok {
		return 0, bad
	}
	var n int64
	for _, c := range s[:len(s)-1] {
		if c < '0' || c > '9' {
			return 0, bad
		}
		n = n*10 + int64(c-'0')
	}
	if n <= 0 || n > int64(maxKeyLifetime/unit) {
		return 0, bad
	}
	return time.Duration(n) * unit, nil
}
