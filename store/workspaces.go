package store

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"unicode/utf8"

	"gorm.io/gorm"
)

// A workspace's life: the names it may take, its creation with its first
// admin, the reads of who belongs where, and the admin-only changes
// (adminTx) of its settings and its deletion with everything it holds.

// workspaceNamePattern is the DNS-label shape upstream workspace names have.
var workspaceNamePattern = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// maxDisplayNameLen bounds a display name (in characters): it is shown in
// invitation emails and lists, and nothing upstream documents needs more.
const maxDisplayNameLen = 200

// reservedWorkspaceNames are names of the right shape that no workspace
// may take: the API's static path /workspaces/availability shadows the
// template /workspaces/{workspaceName} (the router answers 405 to a GET,
// PUT or DELETE there), so a workspace of that name could never be read,
// changed or deleted over the API.
var reservedWorkspaceNames = map[string]bool{"availability": true}

// CheckWorkspaceName tells whether name has the shape CreateWorkspace
// accepts (ErrInvalid with the rule if not). Reserved names pass: see
// WorkspaceNameReserved.
func CheckWorkspaceName(name string) error {
	if !workspaceNamePattern.MatchString(name) {
		return errorf(ErrInvalid, "workspace name %q must be 1-63 lower-case letters, digits or '-', not starting or ending with '-'", name)
	}
	return nil
}

// WorkspaceNameReserved tells whether name is one no workspace may take.
func WorkspaceNameReserved(name string) bool { return reservedWorkspaceNames[name] }

func checkDisplayName(displayName string) error {
	if !storable(displayName) || utf8.RuneCountInString(displayName) > maxDisplayNameLen {
		return errorf(ErrInvalid, "displayName must be valid UTF-8 of at most %d characters", maxDisplayNameLen)
	}
	return nil
}

// NewWorkspace is the workspace CreateWorkspace creates and its first
// admin, who is also the creation's actor.
type NewWorkspace struct {
	Name        string // CheckWorkspaceName's shape, not reserved
	DisplayName string // the name when empty
	AdminSub    string
	AdminEmail  string
}

// CreateWorkspace creates a workspace and its first admin member in one
// transaction. Returns ErrConflict if the name is taken, ErrInvalid for a bad
// name or an email CheckEmail refuses (with emails[0] when given: the CLI
// passes --allow-local-email-domains this way).
func (s *Store) CreateWorkspace(ctx context.Context, nw NewWorkspace, emails ...EmailOptions) (Workspace, error) {
	name, displayName, adminSub := nw.Name, nw.DisplayName, nw.AdminSub
	adminEmail := NormalizeEmail(nw.AdminEmail)
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

// WorkspacesOf lists the workspaces sub is a member of, by name.
func (s *Store) WorkspacesOf(ctx context.Context, sub string) ([]Workspace, error) {
	if !storable(sub) {
		return []Workspace{}, nil
	}
	workspaces := []Workspace{}
	// members(workspace_id, sub) is unique but led by workspace_id, so this
	// reads the members of sub through the join, bounded by sub's memberships.
	err := s.read.WithContext(ctx).Table("workspaces").Select("workspaces.*").
		Joins("JOIN members ON members.workspace_id = workspaces.id").
		Where("members.sub = ?", sub).Order("workspaces.name").Find(&workspaces).Error
	if err != nil {
		return nil, fmt.Errorf("list workspaces: %w", err)
	}
	return workspaces, nil
}

// AllWorkspaces lists every workspace by name (the CLI's `workspace list`,
// for operators; the API lists a caller's own).
func (s *Store) AllWorkspaces(ctx context.Context) ([]Workspace, error) {
	workspaces := []Workspace{}
	if err := s.read.WithContext(ctx).Order("name").Find(&workspaces).Error; err != nil {
		return nil, fmt.Errorf("list workspaces: %w", err)
	}
	return workspaces, nil
}

// WorkspaceNameTaken tells whether a workspace called name exists.
func (s *Store) WorkspaceNameTaken(ctx context.Context, name string) (bool, error) {
	var n int64
	if err := s.read.WithContext(ctx).Model(&Workspace{}).Where("name = ?", name).Count(&n).Error; err != nil {
		return false, fmt.Errorf("look up workspace name: %w", err)
	}
	return n > 0, nil
}

// UpdateWorkspace sets the display name of a workspace (admins only; nil
// leaves it, an empty one falls back to the name, as at creation; the
// admin check and the answer still happen). Returns ErrNotFound
// when the workspace does not exist or by is not a member, ErrForbidden
// (not_admin) for a member, ErrInvalid for a display name refused.
func (s *Store) UpdateWorkspace(ctx context.Context, workspaceName, by string, displayName *string) (Workspace, error) {
	if displayName != nil {
		if err := checkDisplayName(*displayName); err != nil {
			return Workspace{}, err
		}
	}
	var ws Workspace
	err := s.adminTx(ctx, workspaceName, by, func(tx *gorm.DB, locked Workspace) error {
		ws = locked
		if displayName == nil {
			return nil
		}
		old := ws.DisplayName
		ws.DisplayName = *displayName
		if ws.DisplayName == "" {
			ws.DisplayName = ws.Name
		}
		ws.UpdatedBy, ws.UpdatedAt = by, s.now()
		err := tx.Model(&Workspace{}).Where("id = ?", ws.ID).
			Updates(map[string]any{"display_name": ws.DisplayName, "updated_by": by, "updated_at": ws.UpdatedAt}).Error
		if err != nil || old == ws.DisplayName {
			return err
		}
		return appendAudit(tx, auditOf(ws, ActionWorkspaceUpdated, TargetWorkspace, ws.Name,
			fields{"displayName": old}, fields{"displayName": ws.DisplayName}))
	})
	return ws, err
}

// DeleteWorkspace deletes a workspace (admins only) with everything that
// belongs to it, in one transaction: the emails still queued for its
// invitations (so none is sent for a workspace that is gone), its
// invitations, API keys, service accounts and members. The foreign keys would cascade too;
// deleting explicitly keeps that true on a database whose constraints an
// older version created differently, and makes the order (children first)
// plain. Returns the workspace as it was; errors as UpdateWorkspace.
func (s *Store) DeleteWorkspace(ctx context.Context, workspaceName, by string) (Workspace, error) {
	var ws Workspace
	err := s.adminTx(ctx, workspaceName, by, func(tx *gorm.DB, locked Workspace) error {
		ws = locked
		// First, while the workspace's webhook endpoints exist: the event
		// is queued to them and goes with them (they are the workspace's).
		if err := appendAudit(tx, auditOf(ws, ActionWorkspaceDeleted, TargetWorkspace, ws.Name,
			fields{"displayName": ws.DisplayName, "members": ws.MemberCount}, nil)); err != nil {
			return err
		}
		steps := []struct {
			what string
			run  func() error
		}{
			{"emails", func() error {
				return tx.Where("invitation_id IN (?)", tx.Model(&Invitation{}).Select("id").Where("workspace_id = ?", ws.ID)).
					Delete(&OutboxMessage{}).Error
			}},
			{"invitations", func() error { return tx.Where("workspace_id = ?", ws.ID).Delete(&Invitation{}).Error }},
			{"API keys", func() error { return tx.Where("workspace_id = ?", ws.ID).Delete(&APIKey{}).Error }},
			{"email-domain policy", func() error { return tx.Where("workspace_id = ?", ws.ID).Delete(&EmailDomainRule{}).Error }},
			{"idempotency keys", func() error { return tx.Where("workspace = ?", ws.Name).Delete(&IdempotencyRecord{}).Error }},
			{"service accounts", func() error { return tx.Where("workspace_id = ?", ws.ID).Delete(&ServiceAccount{}).Error }},
			{"members", func() error { return tx.Where("workspace_id = ?", ws.ID).Delete(&Member{}).Error }},
			{"workspace", func() error { return tx.Delete(&Workspace{}, ws.ID).Error }},
		}
		for _, step := range steps {
			if err := step.run(); err != nil {
				return fmt.Errorf("delete workspace %s: %w", step.what, err)
			}
		}
		return nil
	})
	if err != nil {
		return Workspace{}, err
	}
	return ws, nil
}
