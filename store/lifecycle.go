package store

import (
	"context"
	"errors"
	"strings"
	"time"
	"unicode/utf8"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"
)

// Every change to a workspace's membership or to an invitation's state runs
// in a transaction that first locks the workspace row (FOR UPDATE on
// PostgreSQL; SQLite's immediate transactions already serialise writers).
// Checks such as "is this the last admin?" and transitions such as
// pending → accepted therefore never interleave: an accept racing a revoke,
// two accepts, or a role change racing a removal end in one consistent state.
// Invite takes the same lock in shared mode, so invites run concurrently with
// each other but not with those transitions.

// UserEntry is one line of a workspace's user list: a member, or a pending
// invitation (Accepted false).
type UserEntry struct {
	Sub      string
	Email    string
	Role     string
	Accepted bool
	Expired  bool
	Source   string
}

func memberEntry(m Member) UserEntry {
	return UserEntry{Sub: m.Sub, Email: m.Email, Role: m.Role, Accepted: true, Source: m.Source}
}

func invitationEntry(inv Invitation, now time.Time) UserEntry {
	return UserEntry{Email: inv.Email, Role: inv.Role, Expired: !inv.ExpiresAt.After(now), Source: SourceInvitation}
}

// lockWorkspace takes the row lock of the workspace matching query for the
// rest of the transaction (strength "UPDATE" or "SHARE"; SQLite ignores it).
// Returns ErrNotFound if there is no such workspace.
func lockWorkspace(tx *gorm.DB, strength, query string, arg any) (Workspace, error) {
	if str, ok := arg.(string); ok && !storable(str) {
		return Workspace{}, codedf(ErrNotFound, CodeWorkspaceNotFound, "workspace not found")
	}
	var ws Workspace
	err := tx.Clauses(clause.Locking{Strength: strength}).Where(query, arg).Take(&ws).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return Workspace{}, codedf(ErrNotFound, CodeWorkspaceNotFound, "workspace not found")
	}
	return ws, err
}

func countAdmins(tx *gorm.DB, workspaceID int64) (int64, error) {
	var n int64
	// role = 'admin' literal: idx_members_admins serves it (see memberByEmail).
	err := tx.Model(&Member{}).Where("workspace_id = ? AND role = 'admin'", workspaceID).Count(&n).Error
	return n, err
}

// memberByEmail and pendingByEmail look a workspace's member or pending
// invitation up by email (a non-empty one). They spell out the conditions
// of the partial unique indexes that serve them (a non-empty email, status
// 'pending') as literals: a planner uses a partial index only when the query
// implies its condition, which a parameter (or an equality with a parameter,
// on SQLite and in PostgreSQL's generic plans) does not prove.
const (
	memberByEmail  = "workspace_id = ? AND email = ? AND email <> ''"
	pendingByEmail = "workspace_id = ? AND email = ? AND status = 'pending'"
)

// findMember finds a member by sub or, when subOrEmail looks like an email,
// by email. Returns ErrNotFound when neither matches.
func findMember(tx *gorm.DB, workspaceID int64, subOrEmail string) (Member, error) {
	if !storable(subOrEmail) {
		return Member{}, codedf(ErrNotFound, CodeUserNotFound, "user not found")
	}
	var m Member
	err := tx.Where("workspace_id = ? AND sub = ?", workspaceID, subOrEmail).Take(&m).Error
	if errors.Is(err, gorm.ErrRecordNotFound) && strings.Contains(subOrEmail, "@") {
		err = tx.Where(memberByEmail, workspaceID, NormalizeEmail(subOrEmail)).Take(&m).Error
	}
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return Member{}, codedf(ErrNotFound, CodeUserNotFound, "user not found")
	}
	if err == nil && m.Source == SourceServiceAccount {
		// Its member row goes with the account (service_accounts.go).
		return Member{}, codedf(ErrNotFound, CodeUserNotFound, "%q is a service account, not a user: change or delete it through /service_accounts", subOrEmail)
	}
	return m, err
}

func findPending(tx *gorm.DB, workspaceID int64, email string) (Invitation, error) {
	if !storable(email) {
		return Invitation{}, codedf(ErrNotFound, CodeUserNotFound, "user not found")
	}
	var inv Invitation
	err := tx.Where(pendingByEmail, workspaceID, NormalizeEmail(email)).Take(&inv).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return Invitation{}, codedf(ErrNotFound, CodeUserNotFound, "user not found")
	}
	return inv, err
}

// RemoveUser removes a member (by sub or email) or, failing that, revokes the
// pending invitation of that email. The invitation is kept as history.
// Returns ErrNotFound when neither exists, ErrConflict for the last admin.
func (s *Store) RemoveUser(ctx context.Context, workspaceName, by, subOrEmail string) error {
	return s.adminTx(ctx, workspaceName, by, func(tx *gorm.DB, ws Workspace) error {
		m, err := findMember(tx, ws.ID, subOrEmail)
		if err == nil {
			if err := refuseLastAdmin(tx, m, "remove"); err != nil {
				return err
			}
			if err := deleteMember(tx, m, by, s.now()); err != nil {
				return err
			}
			return appendAudit(tx, auditOf(ws, ActionMemberRemoved, TargetMember, m.Sub, memberFields(m), nil))
		}
		if !errors.Is(err, ErrNotFound) {
			return err
		}
		inv, err := findPending(tx, ws.ID, subOrEmail)
		if err != nil {
			return err
		}
		if err := setInvitationStatus(tx, &inv, InvitationRevoked, by, s.now()); err != nil {
			return err
		}
		return invitationAudit(tx, ws, inv, ActionInvitationRevoked)
	})
}

// adminTx runs fn in a write transaction that first locks the workspace
// called workspaceName for a change (lockWorkspace) and checks that by is
// still one of its admins (requireAdmin): the prologue of every admin-only
// change. Errors as lockWorkspace and requireAdmin, then fn's.
func (s *Store) adminTx(ctx context.Context, workspaceName, by string, fn func(tx *gorm.DB, ws Workspace) error) error {
	return s.inTx(ctx, func(tx *gorm.DB) error {
		ws, err := lockWorkspace(tx, "UPDATE", "name = ?", workspaceName)
		if err != nil {
			return err
		}
		if err := requireAdmin(tx, ws.ID, by); err != nil {
			return err
		}
		return fn(tx, ws)
	})
}

// requireAdmin checks, under the workspace lock, that the caller is still an
// admin: a role read before the transaction could be stale by now (two
// admins demoting each other at once).
func requireAdmin(tx *gorm.DB, workspaceID int64, sub string) error {
	var m Member
	err := tx.Where("workspace_id = ? AND sub = ?", workspaceID, sub).Take(&m).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return codedf(ErrNotFound, CodeWorkspaceNotFound, "workspace not found")
	}
	if err != nil {
		return err
	}
	if m.Role != RoleAdmin {
		return codedf(ErrForbidden, CodeNotAdmin, "only workspace admins may do this")
	}
	return nil
}

// deleteMember removes a member and revokes the API keys it held in the
// workspace, so a key cannot come back to life if the same sub rejoins.
func deleteMember(tx *gorm.DB, m Member, by string, now time.Time) error {
	if err := tx.Delete(&m).Error; err != nil {
		return err
	}
	if err := addToMemberCount(tx, m.WorkspaceID, -1); err != nil {
		return err
	}
	return tx.Model(&APIKey{}).Where("workspace_id = ? AND sub = ? AND revoked_at IS NULL", m.WorkspaceID, m.Sub).
		Updates(map[string]any{"revoked_at": &now, "updated_at": now, "updated_by": by}).Error
}

// createMember inserts m and counts it in its workspace's MemberCount.
func createMember(tx *gorm.DB, m *Member) error {
	if err := tx.Create(m).Error; err != nil {
		return err
	}
	return addToMemberCount(tx, m.WorkspaceID, 1)
}

func addToMemberCount(tx *gorm.DB, workspaceID, delta int64) error {
	return tx.Exec("UPDATE workspaces SET member_count = member_count + ? WHERE id = ?", delta, workspaceID).Error
}

func refuseLastAdmin(tx *gorm.DB, m Member, verb string) error {
	if m.Role != RoleAdmin {
		return nil
	}
	admins, err := countAdmins(tx, m.WorkspaceID)
	if err != nil {
		return err
	}
	if admins <= 1 {
		return codedf(ErrConflict, CodeLastAdmin, "cannot %s the last admin of the workspace: make another member admin first", verb)
	}
	return nil
}

func setInvitationStatus(tx *gorm.DB, inv *Invitation, status, by string, now time.Time) error {
	inv.Status, inv.UpdatedBy, inv.UpdatedAt = status, by, now
	return tx.Model(inv).Updates(map[string]any{"status": status, "updated_by": by, "updated_at": now}).Error
}

// UpdateRole sets the role of a member (by sub or email) or of a pending
// invitation. Returns ErrInvalid for a role other than admin/member,
// ErrNotFound when neither exists, ErrConflict when demoting the last admin.
func (s *Store) UpdateRole(ctx context.Context, workspaceName, by, subOrEmail, role string) (UserEntry, error) {
	if role != RoleAdmin && role != RoleMember {
		return UserEntry{}, codedf(ErrInvalid, CodeInvalidRole, "role must be %q or %q (lower case), got %q", RoleAdmin, RoleMember, role)
	}
	var entry UserEntry
	err := s.adminTx(ctx, workspaceName, by, func(tx *gorm.DB, ws Workspace) error {
		now := s.now()
		m, err := findMember(tx, ws.ID, subOrEmail)
		if err == nil {
			if role == RoleMember {
				if err := refuseLastAdmin(tx, m, "demote"); err != nil {
					return err
				}
			}
			old := m.Role
			m.Role, m.UpdatedBy, m.UpdatedAt = role, by, now
			entry = memberEntry(m)
			if err := tx.Model(&m).Updates(map[string]any{"role": role, "updated_by": by, "updated_at": now}).Error; err != nil || old == role {
				return err
			}
			return appendAudit(tx, auditOf(ws, ActionMemberRoleChanged, TargetMember, m.Sub, fields{"role": old}, fields{"role": role}))
		}
		if !errors.Is(err, ErrNotFound) {
			return err
		}
		inv, err := findPending(tx, ws.ID, subOrEmail)
		if err != nil {
			return err
		}
		old := inv.Role
		inv.Role = role
		entry = invitationEntry(inv, now)
		if err := tx.Model(&inv).Updates(map[string]any{"role": role, "updated_by": by, "updated_at": now}).Error; err != nil || old == role {
			return err
		}
		return appendAudit(tx, auditOf(ws, ActionInvitationRoleChanged, TargetInvitation, inv.Email, fields{"role": old}, fields{"role": role}))
	})
	return entry, err
}

// InvitationView is a pending invitation with what its invitee needs to
// decide: the workspace, the inviter's email and the member count.
type InvitationView struct {
	Invitation
	WorkspaceName        string
	WorkspaceDisplayName string
	InviterEmail         string
	MemberCount          int64
}

// Accept makes sub (whose verified email is email) a member of the workspace
// with the role of its pending, unexpired invitation, which becomes accepted.
// Accepting again once a member is a no-op. Returns ErrNotFound when there is
// no such invitation (expired, revoked, declined, someone else's).
func (s *Store) Accept(ctx context.Context, workspaceName, sub, email string) (Workspace, error) {
	var ws Workspace
	err := s.inTx(ctx, func(tx *gorm.DB) error {
		var err error
		if ws, err = lockWorkspace(tx, "UPDATE", "name = ?", workspaceName); err != nil {
			return notFoundAs(err, CodeInvitationNotFound, "workspace or invitation not found")
		}
		if _, err := findMember(tx, ws.ID, sub); err == nil {
			return nil // already a member: accepting twice changes nothing
		}
		now := s.now()
		inv, err := findPending(tx, ws.ID, email)
		if errors.Is(err, ErrNotFound) || (err == nil && !inv.ExpiresAt.After(now)) {
			return codedf(ErrNotFound, CodeInvitationNotFound, "workspace or invitation not found")
		}
		if err != nil {
			return err
		}
		if err := setInvitationStatus(tx, &inv, InvitationAccepted, sub, now); err != nil {
			return err
		}
		m := Member{WorkspaceID: ws.ID, Sub: sub, Email: inv.Email, Role: inv.Role, Source: SourceInvitation,
			Audit: Audit{CreatedBy: inv.InvitedBy, UpdatedBy: sub}}
		if err := createMember(tx, &m); err != nil {
			if errors.Is(err, gorm.ErrDuplicatedKey) {
				return codedf(ErrConflict, CodeEmailTaken, "%s already belongs to another member of this workspace", inv.Email)
			}
			return err
		}
		return invitationAudit(tx, ws, inv, ActionInvitationAccepted)
	})
	return ws, err
}

// Decline marks the caller's pending, unexpired invitation declined and
// returns it. Returns ErrNotFound when there is nothing to decline.
func (s *Store) Decline(ctx context.Context, workspaceName, by, email string) (Invitation, Workspace, error) {
	var inv Invitation
	var ws Workspace
	err := s.inTx(ctx, func(tx *gorm.DB) error {
		var err error
		if ws, err = lockWorkspace(tx, "UPDATE", "name = ?", workspaceName); err != nil {
			return notFoundAs(err, CodeInvitationNotFound, "workspace or invitation not found")
		}
		now := s.now()
		inv, err = findPending(tx, ws.ID, email)
		if errors.Is(err, ErrNotFound) || (err == nil && !inv.ExpiresAt.After(now)) {
			return codedf(ErrNotFound, CodeInvitationNotFound, "workspace or invitation not found")
		}
		if err != nil {
			return err
		}
		if err := setInvitationStatus(tx, &inv, InvitationDeclined, by, now); err != nil {
			return err
		}
		return invitationAudit(tx, ws, inv, ActionInvitationDeclined)
	})
	return inv, ws, err
}

// Leave removes sub from the workspace. Returns ErrNotFound if sub is not a
// member, ErrConflict if sub is its last admin.
func (s *Store) Leave(ctx context.Context, workspaceName, sub string) (Workspace, error) {
	var ws Workspace
	err := s.inTx(ctx, func(tx *gorm.DB) error {
		var err error
		if ws, err = lockWorkspace(tx, "UPDATE", "name = ?", workspaceName); err != nil {
			return err
		}
		var m Member
		if err := tx.Where("workspace_id = ? AND sub = ?", ws.ID, sub).Take(&m).Error; err != nil {
			if errors.Is(err, gorm.ErrRecordNotFound) {
				return codedf(ErrNotFound, CodeWorkspaceNotFound, "workspace not found")
			}
			return err
		}
		if err := refuseLastAdmin(tx, m, "remove"); err != nil {
			return err
		}
		if err := deleteMember(tx, m, sub, s.now()); err != nil {
			return err
		}
		return appendAudit(tx, auditOf(ws, ActionMemberLeft, TargetMember, m.Sub, memberFields(m), nil))
	})
	return ws, err
}

// notFoundAs rewords ErrNotFound for the operation at hand; other errors pass.
func notFoundAs(err error, code, message string) error {
	if errors.Is(err, ErrNotFound) || errors.Is(err, gorm.ErrRecordNotFound) {
		return codedf(ErrNotFound, code, "%s", message)
	}
	return err
}

// storable tells whether s can be a stored value: PostgreSQL rejects NUL
// bytes and invalid UTF-8 in text parameters outright (an error, not "no
// rows"), so values that cannot exist are answered as not found up front.
func storable(s string) bool {
	return utf8.ValidString(s) && !strings.ContainsRune(s, 0)
}
