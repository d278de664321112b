package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
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

// The common case of Invite (an admin invites an email that is neither a
// member's nor has an expired pending invitation) is one statement that
// checks the caller's role, checks the email is not a member's, and creates
// the pending invitation or refreshes the expiry of the one already pending
// (keeping its role). It returns no row in every other case, and the slow
// path (inviteSlow) works out which. The conflict target spells out the
// partial unique index idx_invitations_pending so PostgreSQL matches it; the
// WHERE of the SELECT is also what lets SQLite parse INSERT … SELECT … ON
// CONFLICT.
var upsertFromSelect = upsertInvitation("")

func upsertInvitation(extraCondition string) string {
	return `
INSERT INTO invitations (workspace_id, email, role, status, invited_by, expires_at, created_at, updated_at, created_by, updated_by)
SELECT w.id, ?, ?, 'pending', ?, ?, ?, ?, ?, ?
FROM workspaces w JOIN members m ON m.workspace_id = w.id AND m.sub = ? AND m.role = 'admin'
WHERE w.name = ? AND NOT EXISTS (SELECT 1 FROM members x WHERE x.workspace_id = w.id AND x.email = ?)` +
		extraCondition + `
ON CONFLICT (workspace_id, email) WHERE status = 'pending'
DO UPDATE SET expires_at = excluded.expires_at, updated_at = excluded.updated_at, updated_by = excluded.updated_by
WHERE invitations.expires_at > excluded.updated_at`
}

const invitationColumns = `id, workspace_id, email, role, status, invited_by, expires_at, created_at, updated_at, created_by, updated_by`

// inviteSQLite (also the slow path's final insert) is the common case on SQLite, where the group committer
// serialises writers (no lock needed); the email is queued by the caller.
var inviteSQLite = upsertFromSelect + "\nRETURNING " + invitationColumns

// lockWorkspaceShared takes the workspace row in shared mode: invites run
// side by side, but not beside accept, removal or role changes.
const lockWorkspaceShared = `SELECT 1 FROM workspaces WHERE name = $1 FOR SHARE`

// invitePostgres is the common case on PostgreSQL as one statement, after
// lockWorkspaceShared in the same transaction: role check, upsert and the
// queued email in one data-modifying CTE.
var invitePostgres = `
WITH caller AS (
  SELECT w.id FROM workspaces w JOIN members m ON m.workspace_id = w.id AND m.sub = ? AND m.role = 'admin'
  WHERE w.name = ?
), inv AS (` + upsertInvitation(" AND w.id IN (SELECT id FROM caller)") + `
  RETURNING ` + invitationColumns + `
), queued AS (
  INSERT INTO outbox_messages (invitation_id, status, next_attempt_at, created_at, updated_at)
  SELECT id, 'pending', ?, ?, ? FROM inv
  ON CONFLICT (invitation_id) WHERE status = 'pending'
  DO UPDATE SET next_attempt_at = excluded.next_attempt_at, updated_at = excluded.updated_at
)
SELECT * FROM inv`

// invitePostgresNumbered is invitePostgres with PostgreSQL's $n
// placeholders, for the driver directly (GORM rewrites SQL on every call).
var invitePostgresNumbered = numberPlaceholders(invitePostgres)

// numberPlaceholders turns each ? into $1, $2, … (our SQL has no ? in literals).
func numberPlaceholders(query string) string {
	var b strings.Builder
	n := 0
	for _, r := range query {
		if r == '?' {
			n++
			b.WriteString("$" + strconv.Itoa(n))
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

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
	var inv Invitation
	if s.dialect == "postgres" {
		found, err := s.invitePostgres(ctx, p, &inv)
		if err != nil {
			return Invitation{}, err
		}
		if found {
			return inv, nil
		}
	}
	err := s.inTx(ctx, func(tx *gorm.DB) error {
		now := s.now()
		if s.dialect == "sqlite" {
			// Straight to the connection's statement cache: this runs on
			// the single writer, where GORM's per-call SQL rewriting and
			// reflection cost more than SQLite's own work.
			err := scanInvitation(tx.ConnPool.QueryRowContext(ctx, inviteSQLite, p.upsertArgs(now)...), &inv)
			switch {
			case err == nil:
				_, err = tx.ConnPool.ExecContext(ctx, enqueueSQL, inv.ID, now, now, now)
				return err
			case !errors.Is(err, sql.ErrNoRows):
				return fmt.Errorf("invite: %w", err)
			}
		}
		return s.inviteSlow(tx, p, now, &inv)
	})
	if err != nil {
		return Invitation{}, err
	}
	return inv, nil
}

// invitePostgres runs the common case in one round trip: lockWorkspaceShared
// and invitePostgres pipelined as one pgx batch. Before a single Sync, the
// two statements form one implicit transaction (committed together, rolled
// back together), and in READ COMMITTED the second takes its snapshot after
// the first got the lock, so it sees any accept or removal that held the
// lock: it cannot re-invite someone who just became a member. found is false
// when the slow path must decide.
func (s *Store) invitePostgres(ctx context.Context, p InviteParams, inv *Invitation) (found bool, err error) {
	sqlDB, err := s.write.DB()
	if err != nil {
		return false, err
	}
	conn, err := sqlDB.Conn(ctx)
	if err != nil {
		return false, err
	}
	defer conn.Close()
	now := s.now()
	args := append(append([]any{p.Caller, p.Workspace}, p.upsertArgs(now)...), now, now, now)
	err = conn.Raw(func(driverConn any) error {
		pc := driverConn.(*stdlib.Conn).Conn()
		batch := &pgx.Batch{}
		batch.Queue(lockWorkspaceShared, p.Workspace)
		batch.Queue(invitePostgresNumbered, args...)
		results := pc.SendBatch(ctx, batch)
		if _, err := results.Exec(); err != nil {
			results.Close()
			return fmt.Errorf("lock workspace: %w", err)
		}
		err := results.QueryRow().Scan(&inv.ID, &inv.WorkspaceID, &inv.Email, &inv.Role, &inv.Status, &inv.InvitedBy,
			&inv.ExpiresAt, &inv.CreatedAt, &inv.UpdatedAt, &inv.CreatedBy, &inv.UpdatedBy)
		switch {
		case err == nil:
			found = true
		case errors.Is(err, pgx.ErrNoRows):
		default:
			results.Close()
			return fmt.Errorf("invite: %w", err)
		}
		return results.Close() // the Sync: commits both statements
	})
	return found, err
}

func scanInvitation(row *sql.Row, inv *Invitation) error {
	return row.Scan(&inv.ID, &inv.WorkspaceID, &inv.Email, &inv.Role, &inv.Status, &inv.InvitedBy,
		&inv.ExpiresAt, &inv.CreatedAt, &inv.UpdatedAt, &inv.CreatedBy, &inv.UpdatedBy)
}

// upsertArgs are the arguments of upsertInvitation, in placeholder order
// (positional: GORM parses named arguments on every call).
func (p InviteParams) upsertArgs(now time.Time) []any {
	return []any{p.Email, p.Role, p.Caller, now.Add(p.TTL), now, now, p.Caller, p.Caller, p.Caller, p.Workspace, p.Email}
}

// inviteSlow handles what the one-statement invite leaves: unknown workspace
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
	if err := tx.Model(&Member{}).Where("workspace_id = ? AND email = ?", ws.ID, p.Email).Count(&members).Error; err != nil {
		return fmt.Errorf("check membership: %w", err)
	}
	if members > 0 {
		return errorf(ErrConflict, "%s is already a member of this workspace", p.Email)
	}
	if err := tx.Model(&Invitation{}).
		Where("workspace_id = ? AND email = ? AND status = ? AND expires_at <= ?", ws.ID, p.Email, InvitationPending, now).
		Updates(map[string]any{"status": InvitationExpired, "updated_at": now, "updated_by": p.Caller}).Error; err != nil {
		return fmt.Errorf("expire stale invitation: %w", err)
	}
	if err := tx.Raw(inviteSQLite, p.upsertArgs(now)...).Scan(inv).Error; err != nil {
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
