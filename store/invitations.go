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
	actor     Actor // who asks: Invite takes it from the context (WithActor), for the audit event
}

// Invite creates a pending invitation, or refreshes the expiry of the one
// already pending for that email (keeping its role), and queues its email,
// all in one transaction that also checks the caller is an admin. A pending
// invitation that has already expired is moved to history first, so the
// re-invite starts a fresh one. The database's partial unique index, not a
// read-then-write check, guarantees at most one pending row per email.
// Returns ErrNotFound if the workspace does not exist or the caller is not a
// member, ErrForbidden if the caller is not an admin (not_admin) or the
// workspace's email-domain policy refuses the email (domain_not_allowed,
// domain_policy.go), ErrConflict if the
// email already belongs to a member, ErrInvalid for an empty email.
//
// The rules are below, written once: upsertBatch is the statement that
// settles the common case, for a whole batch of invites at once (batch.go
// runs it, inside the group committer's transaction on SQLite); inviteSlow
// decides the rest, and any invite a batch could not settle, ending with
// the same statement for one row.
func (s *Store) Invite(ctx context.Context, p InviteParams) (Invitation, error) {
	// Once asked for, an invite runs to its end even if the caller leaves:
	// its batch and its slow path are one write (see detach).
	ctx, cancel := detach(ctx)
	defer cancel()
	if err := ctx.Err(); err != nil {
		return Invitation{}, err
	}
	p, err := p.prepare()
	p.actor = ActorFrom(ctx)
	if err != nil {
		return Invitation{}, err
	}
	var inv Invitation
	found, err := s.invites.invite(ctx, p, &inv)
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

// prepare normalises an invite's email and role and refuses what no
// statement should see (Invite and InviteMany alike).
func (p InviteParams) prepare() (InviteParams, error) {
	p.Email = NormalizeEmail(p.Email)
	if p.Role == "" {
		p.Role = RoleMember
	}
	if p.Email == "" {
		// The member-email checks skip empty emails (service accounts have
		// one each; see memberByEmail): an invitation needs a real one.
		return p, codedf(ErrInvalid, CodeInvalidEmail, "the email to invite must not be empty")
	}
	if !storable(p.Workspace) || !storable(p.Caller) {
		return p, codedf(ErrNotFound, CodeWorkspaceNotFound, "workspace not found")
	}
	return p, nil
}

// upsertBatch is the invite statement (also inviteOne's, for one row): from
// is the invites as a table j(ws, caller, email, role); expires, created and
// updated are the placeholders of the expiry and the time. The caller must
// be an admin of the workspace, the email not a member's and allowed by the
// workspace's email-domain policy (domainAllowed); a pending
// invitation is refreshed (keeping its role) unless it has expired (then no
// row, and the slow path moves it to history). The WHERE is also what lets
// SQLite parse INSERT … SELECT … ON CONFLICT; the conflict target spells out
// the partial unique index idx_invitations_pending so PostgreSQL matches it.
//
// The member checks are index lookups whatever the workspace's size (issue
// 10: without that, an invite into a workspace of 20,000 members read all of
// them, per email). The test that x.email is not empty repeats the condition
// of the partial index on member email (idx_members_workspace_email), which
// neither planner infers from x.email = j.email (invited emails are never
// empty: Invite refuses those). OFFSET 0 keeps PostgreSQL from turning the
// checks into joins: it then planned the lookup with workspace_id alone, the
// email or sub applied as a filter, because its statistics (averages over
// all workspaces) made a workspace look cheap to read; as subplans each
// check is planned with all its columns bound. (LIMIT 1 only because SQLite
// accepts OFFSET only after a LIMIT; PostgreSQL drops it.)
// order is lockOrder for PostgreSQL's batches, or empty.
func upsertBatch(from, order, expires, created, updated, returning string) string {
	return `
INSERT INTO invitations (workspace_id, email, role, status, invited_by, expires_at, created_at, updated_at, created_by, updated_by)
SELECT w.id, j.email, j.role, 'pending', j.caller, ` + expires + `, ` + created + `, ` + updated + `, j.caller, j.caller
FROM ` + from + `
JOIN workspaces w ON w.name = j.ws
WHERE EXISTS (SELECT 1 FROM members m WHERE m.workspace_id = w.id AND m.sub = j.caller AND m.role = 'admin' LIMIT 1 OFFSET 0)
  AND NOT EXISTS (SELECT 1 FROM members x WHERE x.workspace_id = w.id AND x.email = j.email AND x.email <> '' LIMIT 1 OFFSET 0)
  AND ` + domainAllowed + `
` + order + `
ON CONFLICT (workspace_id, email) WHERE status = 'pending'
DO UPDATE SET expires_at = excluded.expires_at, updated_at = excluded.updated_at, updated_by = excluded.updated_by
WHERE invitations.expires_at > excluded.updated_at
RETURNING ` + returning
}

// inviteOne is the slow path's final write: upsertBatch for one row, with
// GORM's ? placeholders. Arguments: upsertArgs.
var inviteOne = upsertBatch(`(SELECT ? AS ws, ? AS caller, ? AS email, ? AS role) j`, "", "?", "?", "?", invitationColumns)

// lockOrder writes a PostgreSQL batch's rows in (workspace, email) order, so
// that two batches holding some of the same emails lock them in the same
// order and cannot deadlock. SQLite's batches, on its single writer, have
// nothing to deadlock with and skip the sort.
const lockOrder = "ORDER BY w.id, j.email"

// upsertArgs are the arguments of inviteOne, in placeholder order
// (positional: GORM parses named arguments on every call).
func (p InviteParams) upsertArgs(now time.Time) []any {
	return []any{now.Add(p.TTL), now, now, p.Workspace, p.Caller, p.Email, p.Role}
}

// inviteSlow handles what the batch statement leaves: unknown workspace
// or caller, a caller who is not an admin, an email the domain policy
// refuses, a member's email, and an expired
// pending invitation (moved to history before a fresh one is created).
func (s *Store) inviteSlow(tx *gorm.DB, p InviteParams, now time.Time, inv *Invitation) error {
	var ws Workspace
	q := tx.Table("workspaces AS w").Select("w.*").Where("w.name = ?", p.Workspace)
	if s.dialect == Postgres {
		q = q.Clauses(clause.Locking{Strength: "SHARE", Table: clause.Table{Name: "w"}})
	}
	if err := q.Take(&ws).Error; err != nil {
		return notFoundAs(err, CodeWorkspaceNotFound, "workspace not found")
	}
	var caller Member
	if err := tx.Where("workspace_id = ? AND sub = ?", ws.ID, p.Caller).Take(&caller).Error; err != nil {
		return notFoundAs(err, CodeWorkspaceNotFound, "workspace not found")
	}
	if caller.Role != RoleAdmin {
		return codedf(ErrForbidden, CodeNotAdmin, "only workspace admins may invite")
	}
	if err := checkDomainPolicy(tx, ws.ID, p.Email); err != nil {
		return err
	}
	var members int64
	if err := tx.Model(&Member{}).Where(memberByEmail, ws.ID, p.Email).Count(&members).Error; err != nil {
		return fmt.Errorf("check membership: %w", err)
	}
	if members > 0 {
		return codedf(ErrConflict, CodeAlreadyMember, "%s is already a member of this workspace", p.Email)
	}
	if err := expireStale(tx, ws, p, now); err != nil {
		return fmt.Errorf("expire stale invitation: %w", err)
	}
	if err := tx.Raw(inviteOne, p.upsertArgs(now)...).Scan(inv).Error; err != nil {
		return fmt.Errorf("create invitation: %w", err)
	}
	if inv.ID == 0 {
		return errors.New("create invitation: no row written")
	}
	if err := enqueueInvitationEmail(tx, inv.ID, now); err != nil {
		return err
	}
	ev := auditOf(ws, inviteAction(*inv), TargetInvitation, inv.Email, nil, nil)
	ev.After = inviteAfter(inv.Role, inv.ExpiresAt)
	return appendAudit(tx, ev)
}

const invitationColumns = `id, workspace_id, email, role, status, invited_by, expires_at, created_at, updated_at, created_by, updated_by`

// rowScanner is a *sql.Row, *sql.Rows or pgx.Rows.
type rowScanner interface{ Scan(dest ...any) error }

func scanInvitation(row rowScanner, inv *Invitation) error {
	return row.Scan(&inv.ID, &inv.WorkspaceID, &inv.Email, &inv.Role, &inv.Status, &inv.InvitedBy,
		&inv.ExpiresAt, &inv.CreatedAt, &inv.UpdatedAt, &inv.CreatedBy, &inv.UpdatedBy)
}
