package store

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"

	"gorm.io/gorm"
)

// workspaceNamePattern is the DNS-label shape upstream workspace names have.
var workspaceNamePattern = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// CreateWorkspace creates a workspace and its first admin member in one
// transaction. Returns ErrConflict if the name is taken, ErrInvalid for a bad
// name or an email CheckEmail refuses (with emails[0] when given: the CLI
// passes --allow-local-email-domains this way).
func (s *Store) CreateWorkspace(ctx context.Context, name, displayName, adminSub, adminEmail string, emails ...EmailOptions) (Workspace, error) {
	adminEmail = NormalizeEmail(adminEmail)
	if err := checkMemberEmail(adminEmail, emails); err != nil {
		return Workspace{}, err
	}
	if err := CheckWorkspaceName(name); err != nil {
		return Workspace{}, err
	}
	if WorkspaceNameReserved(name) {
		return Workspace{}, errorf(ErrInvalid, "workspace name %q is reserved", name)
	}
	if err := checkDisplayName(displayName); err != nil {
		return Workspace{}, err
	}
	if strings.TrimSpace(adminSub) == "" {
		return Workspace{}, errorf(ErrInvalid, "the admin sub must not be empty")
	}
	if displayName == "" {
		displayName = name
	}
	ws := Workspace{Name: name, DisplayName: displayName, Audit: Audit{CreatedBy: adminSub, UpdatedBy: adminSub}}
	err := s.inTx(ctx, func(tx *gorm.DB) error {
		if err := tx.Create(&ws).Error; err != nil {
			if errors.Is(err, gorm.ErrDuplicatedKey) {
				return errorf(ErrConflict, "workspace %q already exists", name)
			}
			return fmt.Errorf("create workspace: %w", err)
		}
		m := Member{WorkspaceID: ws.ID, Sub: adminSub, Email: adminEmail, Role: RoleAdmin,
			Audit: Audit{CreatedBy: adminSub, UpdatedBy: adminSub}}
		if err := createMember(tx, &m); err != nil {
			return fmt.Errorf("create admin member: %w", err)
		}
		return appendAudit(tx, auditOf(ws, ActionWorkspaceCreated, TargetWorkspace, ws.Name, nil,
			fields{"displayName": ws.DisplayName, "admin": adminSub}))
	})
	return ws, err
}

// Membership is a principal's standing in one workspace.
type Membership struct {
	Workspace Workspace
	Role      string
}

// Membership returns the workspace called name and sub's role in it.
// Returns ErrNotFound if the workspace does not exist or sub is not a member:
// callers must not be able to tell the two apart.
func (s *Store) Membership(ctx context.Context, workspaceName, sub string) (Membership, error) {
	if !storable(workspaceName) || !storable(sub) {
		return Membership{}, codedf(ErrNotFound, CodeWorkspaceNotFound, "workspace not found")
	}
	var row struct {
		Workspace
		Role string
	}
	err := s.read.WithContext(ctx).Table("workspaces").
		Select("workspaces.*, members.role").
		Joins("JOIN members ON members.workspace_id = workspaces.id").
		Where("workspaces.name = ? AND members.sub = ?", workspaceName, sub).
		Take(&row).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return Membership{}, codedf(ErrNotFound, CodeWorkspaceNotFound, "workspace not found")
	}
	if err != nil {
		return Membership{}, fmt.Errorf("look up membership: %w", err)
	}
	return Membership{Workspace: row.Workspace, Role: row.Role}, nil
}
