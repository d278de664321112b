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
	Workspace string // workspace name
	Caller    string // sub of the inviter, who must be an admin of the workspace
	Email     string // normalised by Invite
	Role      string // RoleMember when empty
	TTL       time.Duration
}

// inviteOne is the slow path's final write: the batch statement
// (upsertBatch, the one definition of the invite rules) for one row, with
// GORM's ? placeholders. Arguments: upsertArgs.
var inviteOne = upsertBatch(`(SELECT ? AS ws, ? AS caller, ? AS email, ? AS role) j`, "?", "?", "?", invitationColumns)

const invitationColumns = `id, workspace_id, email, role, status, invited_by, expires_at, created_at, updated_at, created_by, updated_by`

// Invite creates a pending invitation, or refreshes the expiry of the one
// already pending for that email (keeping its role), and queues its email,
// all in one transaction that also checks the caller is an admin. A pending
// invitation that has already expired is moved to history first, so the
// re-invite starts a fresh one. The database's partial unique index, not a
// read-then-write check, guarantees at most one pending row per email.
// Returns ErrNotFound if the workspace does not exist or the caller is not a
// member, ErrForbidden if the caller is not an admin, ErrConflict if the
// email already belongs to a member, ErrInvalid for an empty email.
//
// The common case goes through a batch statement (batch.go): on SQLite in the
// group committer, on PostgreSQL in the invite batcher; the rest, and any
// invite a batch could not settle, through inviteSlow.
func (s *Store) Invite(ctx context.Context, p InviteParams) (Invitation, error) {
	// Once asked for, an invite runs to its end even if the caller leaves:
	// its batch and its slow path are one write (see detach).
	ctx, cancel := detach(ctx)
	defer cancel()
	if err := ctx.Err(); err != nil {
		return Invitation{}, err
	}
	p.Email = NormalizeEmail(p.Email)
	if p.Role == "" {
		p.Role = RoleMember
	}
	if p.Email == "" {
		// The member-email checks skip empty emails (service accounts have
		// one each; see memberByEmail): an invitation needs a real one.
		return Invitation{}, errorf(ErrInvalid, "the email to invite must not be empty")
	}
	if !storable(p.Workspace) || !storable(p.Caller) {
		return Invitation{}, errorf(ErrNotFound, "workspace not found")
	}
	var inv Invitation
	var found bool
	var err error
	if s.committer != nil {
		found, err = s.committer.invite(ctx, p, &inv)
	} else {
		found, err = s.batcher.invite(ctx, p, &inv)
	}
	if err != nil {
		return Invitation{}, err
	}
	if found {
		return inv, nil
	}
	err = s.inTx(ctx, func(tx *gorm.DB) error { return s.inviteSlow(tx, p, s.now(), &inv) })
	if err != nil {
		return Invitation{}, err
	}
	return inv, nil
}

// rowScanner is a *sql.Row, *sql.Rows or pgx.Rows.
type rowScanner interface{ Scan(dest ...any) error }

func scanInvitation(row rowScanner, inv *Invitation) error {
	return row.Scan(&inv.ID, &inv.WorkspaceID, &inv.Email, &inv.Role, &inv.Status, &inv.InvitedBy,
		&inv.ExpiresAt, &inv.CreatedAt, &inv.UpdatedAt, &inv.CreatedBy, &inv.UpdatedBy)
}

// upsertArgs are the arguments of inviteOne, in placeholder order
// (positional: GORM parses named arguments on every call).
func (p InviteParams) upsertArgs(now time.Time) []any {
	return []any{now.Add(p.TTL), now, now, p.Workspace, p.Caller, p.Email, p.Role}
}

// inviteSlow handles what the batch statement leaves: unknown workspace
// or caller, a caller who is not an admin, a member's email, and an expired
// pending invitation (moved to history before a fresh one is created).
func (s *Store) inviteSlow(tx *gorm.DB, p InviteParams, now time.Time, inv *Invitation) error {
	var ws Workspace
	q := tx.Table("workspaces AS w").Select("w.*").Where("w.name = ?", p.Workspace)
	if s.dialect == "postgres" {
		q = q.Clauses(clause.Locking{Strength: "SHARE", Table: clause.Table{Name: "w"}})
	}
	if err := q.Take(&ws).Error; err != nil {
		return notFoundAs(err, "workspace not found")
	}
	var caller Member
	if err := tx.Where("workspace_id = ? AND sub = ?", ws.ID, p.Caller).Take(&caller).Error; err != nil {
		return notFoundAs(err, "workspace not found")
	}
	if caller.Role != RoleAdmin {
		return errorf(ErrForbidden, "only workspace admins may invite")
	}
	var members int64
	if err := tx.Model(&Member{}).Where(memberByEmail, ws.ID, p.Email).Count(&members).Error; err != nil {
		return fmt.Errorf("check membership: %w", err)
	}
	if members > 0 {
		return errorf(ErrConflict, "%s is already a member of this workspace", p.Email)
	}
	if err := tx.Model(&Invitation{}).
		Where(pendingByEmail+" AND expires_at <= ?", ws.ID, p.Email, now).
		Updates(map[string]any{"status": InvitationExpired, "updated_at": now, "updated_by": p.Caller}).Error; err != nil {
		return fmt.Errorf("expire stale invitation: %w", err)
	}
	if err := tx.Raw(inviteOne, p.upsertArgs(now)...).Scan(inv).Error; err != nil {
		return fmt.Errorf("create invitation: %w", err)
	}
	if inv.ID == 0 {
		return errors.New("create invitation: no row written")
	}
	return enqueueInvitationEmail(tx, inv.ID, now)
}

// PendingInvitation returns the pending invitation for email in a workspace.
// Returns ErrNotFound if there is none.
func (s *Store) PendingInvitation(ctx context.Context, workspaceID int64, email string) (Invitation, error) {
	var inv Invitation
	err := s.read.WithContext(ctx).
		Where(pendingByEmail, workspaceID, NormalizeEmail(email)).
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
