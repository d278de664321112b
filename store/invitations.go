package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"gorm.io/gorm"
)

// InviteParams describes one invitation request.
type InviteParams struct {
	Workspace string // workspace name
	Caller    string // sub of the inviter, who must be an admin of the workspace
	Email     string // normalised by Invite
	Role      string // RoleMember when empty
	TTL       time.Duration
}

// upsertInvitationSQL creates the pending invitation, or refreshes the
// expiry of the one already pending (keeping its role), in one statement
// that also checks the email is not a member's. It returns no row when the
// email belongs to a member or when the pending invitation has expired;
// Invite then takes the slow path to tell the two apart. The conflict target
// is the partial unique index idx_invitations_pending, spelled out so that
// PostgreSQL matches it (the WHERE in the SELECT is also what lets SQLite
// parse INSERT … SELECT … ON CONFLICT).
const upsertInvitationSQL = `
INSERT INTO invitations (workspace_id, email, role, status, invited_by, expires_at, created_at, updated_at, created_by, updated_by)
SELECT ?, ?, ?, 'pending', ?, ?, ?, ?, ?, ?
WHERE NOT EXISTS (SELECT 1 FROM members WHERE workspace_id = ? AND email = ?)
ON CONFLICT (workspace_id, email) WHERE status = 'pending'
DO UPDATE SET expires_at = excluded.expires_at, updated_at = excluded.updated_at, updated_by = excluded.updated_by
WHERE invitations.expires_at > excluded.updated_at
RETURNING id, workspace_id, email, role, status, invited_by, expires_at, created_at, updated_at, created_by, updated_by`

// Invite creates a pending invitation, or refreshes the expiry of the one
// already pending for that email (keeping its role), and queues its email,
// all in one transaction that also checks the caller is an admin. A pending
// invitation that has already expired is moved to history first, so the
// re-invite starts a fresh one. The database's partial unique index, not a
// read-then-write check, guarantees at most one pending row per email.
// Returns ErrNotFound if the workspace does not exist or the caller is not a
// member, ErrForbidden if the caller is not an admin, ErrConflict if the
// email already belongs to a member.
func (s *Store) Invite(ctx context.Context, p InviteParams) (Invitation, error) {
	p.Email = NormalizeEmail(p.Email)
	if p.Role == "" {
		p.Role = RoleMember
	}
	if !storable(p.Workspace) || !storable(p.Caller) {
		return Invitation{}, errorf(ErrNotFound, "workspace not found")
	}
	if s.dialect == "postgres" {
		if inv, done, err := s.invitePostgres(ctx, p); done {
			return inv, err
		}
	}
	email, role := p.Email, p.Role
	var inv Invitation
	err := s.inTx(ctx, func(tx *gorm.DB) error {
		// The caller's role, and on PostgreSQL the workspace row in shared
		// mode: invites run side by side, but not beside accept or removal.
		var caller struct {
			ID   int64
			Role string
		}
		q := `SELECT w.id, m.role FROM workspaces w JOIN members m ON m.workspace_id = w.id AND m.sub = ? WHERE w.name = ?`
		if s.dialect == "postgres" {
			q += " FOR SHARE OF w"
		}
		if err := tx.Raw(q, p.Caller, p.Workspace).Scan(&caller).Error; err != nil {
			return fmt.Errorf("check caller: %w", err)
		}
		if caller.ID == 0 {
			return errorf(ErrNotFound, "workspace not found")
		}
		if caller.Role != RoleAdmin {
			return errorf(ErrForbidden, "only workspace admins may invite")
		}
		now := s.now()
		upsert := func() error {
			inv = Invitation{}
			return tx.Raw(upsertInvitationSQL, caller.ID, email, role, p.Caller, now.Add(p.TTL), now, now, p.Caller, p.Caller,
				caller.ID, email).Scan(&inv).Error
		}
		if err := upsert(); err != nil {
			return fmt.Errorf("upsert invitation: %w", err)
		}
		if inv.ID == 0 { // slow path: a member's email, or an expired pending invitation
			var members int64
			if err := tx.Model(&Member{}).Where("workspace_id = ? AND email = ?", caller.ID, email).Count(&members).Error; err != nil {
				return fmt.Errorf("check membership: %w", err)
			}
			if members > 0 {
				return errorf(ErrConflict, "%s is already a member of this workspace", email)
			}
			if err := tx.Model(&Invitation{}).
				Where("workspace_id = ? AND email = ? AND status = ? AND expires_at <= ?", caller.ID, email, InvitationPending, now).
				Updates(map[string]any{"status": InvitationExpired, "updated_at": now, "updated_by": p.Caller}).Error; err != nil {
				return fmt.Errorf("expire stale invitation: %w", err)
			}
			if err := upsert(); err != nil || inv.ID == 0 {
				return fmt.Errorf("upsert invitation after expiry: %w", err)
			}
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

// invitePostgresSQL is the whole common case of Invite as one PostgreSQL
// statement (one round trip, its own transaction): the caller's role with the
// workspace row locked in shared mode, the upsert, and the queued email.
// The last SELECT reports which case happened.
const invitePostgresSQL = `
WITH caller AS (
  SELECT w.id, m.role FROM workspaces w JOIN members m ON m.workspace_id = w.id AND m.sub = @caller
  WHERE w.name = @workspace FOR SHARE OF w
), inv AS (
  INSERT INTO invitations (workspace_id, email, role, status, invited_by, expires_at, created_at, updated_at, created_by, updated_by)
  SELECT caller.id, @email, @role, 'pending', @caller, @expires, @now, @now, @caller, @caller FROM caller
  WHERE caller.role = 'admin' AND NOT EXISTS (SELECT 1 FROM members WHERE workspace_id = caller.id AND email = @email)
  ON CONFLICT (workspace_id, email) WHERE status = 'pending'
  DO UPDATE SET expires_at = excluded.expires_at, updated_at = excluded.updated_at, updated_by = excluded.updated_by
  WHERE invitations.expires_at > excluded.updated_at
  RETURNING *
), queued AS (
  INSERT INTO outbox_messages (invitation_id, status, next_attempt_at, created_at, updated_at)
  SELECT id, 'pending', @now, @now, @now FROM inv
  ON CONFLICT (invitation_id) WHERE status = 'pending'
  DO UPDATE SET next_attempt_at = excluded.next_attempt_at, updated_at = excluded.updated_at
)
SELECT caller.role AS caller_role, inv.* FROM (SELECT 1) AS one
LEFT JOIN caller ON true LEFT JOIN inv ON true`

// invitePostgres runs invitePostgresSQL. done is false when the slow path
// must decide (the email is a member's, or the pending invitation expired).
func (s *Store) invitePostgres(ctx context.Context, p InviteParams) (inv Invitation, done bool, err error) {
	now := s.now()
	var row struct {
		CallerRole *string
		Invitation
	}
	err = s.write.WithContext(ctx).Raw(invitePostgresSQL, map[string]any{
		"caller": p.Caller, "workspace": p.Workspace, "email": p.Email, "role": p.Role,
		"expires": now.Add(p.TTL), "now": now,
	}).Scan(&row).Error
	switch {
	case err != nil:
		return Invitation{}, true, fmt.Errorf("invite: %w", err)
	case row.CallerRole == nil:
		return Invitation{}, true, errorf(ErrNotFound, "workspace not found")
	case *row.CallerRole != RoleAdmin:
		return Invitation{}, true, errorf(ErrForbidden, "only workspace admins may invite")
	case row.ID == 0:
		return Invitation{}, false, nil
	}
	return row.Invitation, true, nil
}
