package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"
)

// InviteParams describes one invitation request.
type InviteParams struct {
	WorkspaceID int64
	Email       string // normalised by Invite
	Role        string // RoleMember when empty
	InvitedBy   string // the caller's sub
	TTL         time.Duration
}

// pendingConflict targets the partial unique index idx_invitations_pending.
// The predicate is literal SQL so PostgreSQL can match it against the index.
var pendingConflict = clause.OnConflict{
	Columns:     []clause.Column{{Name: "workspace_id"}, {Name: "email"}},
	TargetWhere: clause.Where{Exprs: []clause.Expression{clause.Expr{SQL: "status = 'pending'"}}},
	DoUpdates:   clause.AssignmentColumns([]string{"expires_at", "updated_at", "updated_by"}),
}

// Invite creates a pending invitation, or refreshes the expiry of the one
// already pending for that email (keeping its role), in one transaction.
// A pending invitation that has already expired is moved to history first, so
// the re-invite starts a fresh one. The database's partial unique index, not a
// read-then-write check, guarantees at most one pending row per email.
// The invitation email is queued in the same transaction (re-inviting queues
// it again unless an unsent one is already waiting).
// Returns ErrConflict if the email already belongs to a member.
func (s *Store) Invite(ctx context.Context, p InviteParams) (Invitation, error) {
	email := NormalizeEmail(p.Email)
	role := p.Role
	if role == "" {
		role = RoleMember
	}
	now := s.now()
	inv := Invitation{
		WorkspaceID: p.WorkspaceID, Email: email, Role: role, Status: InvitationPending,
		InvitedBy: p.InvitedBy, ExpiresAt: now.Add(p.TTL),
		Audit: Audit{CreatedAt: now, UpdatedAt: now, CreatedBy: p.InvitedBy, UpdatedBy: p.InvitedBy},
	}
	err := s.inTx(ctx, func(tx *gorm.DB) error {
		// Shared: invites run side by side, but not beside accept or removal.
		if _, err := lockWorkspace(tx, "SHARE", "id = ?", p.WorkspaceID); err != nil {
			return err
		}
		var members int64
		if err := tx.Model(&Member{}).Where("workspace_id = ? AND email = ?", p.WorkspaceID, email).
			Count(&members).Error; err != nil {
			return fmt.Errorf("check membership: %w", err)
		}
		if members > 0 {
			return errorf(ErrConflict, "%s is already a member of this workspace", email)
		}
		if err := tx.Model(&Invitation{}).
			Where("workspace_id = ? AND email = ? AND status = ? AND expires_at <= ?", p.WorkspaceID, email, InvitationPending, now).
			Updates(map[string]any{"status": InvitationExpired, "updated_at": now, "updated_by": p.InvitedBy}).Error; err != nil {
			return fmt.Errorf("expire stale invitation: %w", err)
		}
		if err := tx.Clauses(pendingConflict, clause.Returning{}).Create(&inv).Error; err != nil {
			return fmt.Errorf("upsert invitation: %w", err)
		}
		return enqueueInvitationEmail(tx, inv.ID, now)
	})
	if err != nil {
		return Invitation{}, err
	}
	return inv, nil
}

// PendingInvitation returns the pending invitation for email in a workspace.
// Returns ErrNotFound if there is none.
func (s *Store) PendingInvitation(ctx context.Context, workspaceID int64, email string) (Invitation, error) {
	var inv Invitation
	err := s.read.WithContext(ctx).
		Where("workspace_id = ? AND email = ? AND status = ?", workspaceID, NormalizeEmail(email), InvitationPending).
		Take(&inv).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return Invitation{}, errorf(ErrNotFound, "invitation not found")
	}
	return inv, err
}

// CountRows returns the number of rows per table, so tests can check that a
// rejected request wrote nothing.
func (s *Store) CountRows(ctx context.Context) (map[string]int64, error) {
	counts := map[string]int64{}
	for _, m := range allModels() {
		var n int64
		stmt := &gorm.Statement{DB: s.read}
		if err := stmt.Parse(m); err != nil {
			return nil, err
		}
		if err := s.read.WithContext(ctx).Model(m).Count(&n).Error; err != nil {
			return nil, err
		}
		counts[stmt.Schema.Table] = n
	}
	return counts, nil
}
