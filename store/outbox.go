package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"gorm.io/gorm"
)

// Outbox message states.
const (
	OutboxPending   = "pending"   // waiting to be sent (possibly claimed by a dispatcher)
	OutboxSent      = "sent"      // accepted by the SMTP server (or written as .eml)
	OutboxFailed    = "failed"    // permanent failure, or transient ones until the message was too old (mail-retry requeues it)
	OutboxCancelled = "cancelled" // the invitation stopped being pending before it was sent
)

// OutboxMessage is one invitation email to send, written in the same
// transaction as the invitation (transactional outbox). A dispatcher claims
// it with a lease (ClaimedUntil) so that several can run on one database;
// a claim that outlives its lease (a crashed dispatcher) is claimed again.
//
// Transient failures are retried until the message is older than the
// dispatcher's give-up age, measured from QueuedSince.
//
// idx_outbox_claim holds the pending messages in the claim's order
// (next_attempt_at, id): the claim walks it from the start and stops after
// its limit, whatever the backlog and however stale the statistics (the
// former index on (status, next_attempt_at) left the planner to sort every
// due message when it misjudged how many there were: 1 s per claim with a
// backlog of a million). Sent and failed messages stay out of it.
// idx_outbox_failed holds the failed messages alone, latest failure last, so
// that counting them (metrics, OutboxStats) and listing the latest
// (mail-status) read the failures, not a table of sent mail.
type OutboxMessage struct {
	ID            int64     `gorm:"primaryKey;index:idx_outbox_claim,priority:2,where:status = 'pending';index:idx_outbox_failed,priority:2,where:status = 'failed'"`
	InvitationID  int64     `gorm:"not null;uniqueIndex:idx_outbox_unsent,where:status = 'pending'"`
	Status        string    `gorm:"not null"`
	Attempts      int       `gorm:"not null;default:0"`
	NextAttemptAt time.Time `gorm:"not null;index:idx_outbox_claim,priority:1,where:status = 'pending'"`
	ClaimedUntil  *time.Time
	ClaimToken    string `gorm:"not null;default:''"`
	LastError     string `gorm:"not null;default:''"`
	SentAt        *time.Time
	// RequeuedAt is when an operator last requeued the message (mail-retry).
	// Nullable so that AutoMigrate can add it to existing tables on both
	// databases (SQLite cannot add a column defaulting to the current time)
	// and so that the invite statements, which do not name it, need no change.
	RequeuedAt *time.Time
	CreatedAt  time.Time `gorm:"not null"`
	UpdatedAt  time.Time `gorm:"not null;index:idx_outbox_failed,priority:1,where:status = 'failed'"`

	Invitation Invitation `gorm:"constraint:OnDelete:CASCADE"`
}

// QueuedSince is where the message's age starts: when it was queued, or
// requeued by an operator, who thereby grants it a full retry period again.
func (m OutboxMessage) QueuedSince() time.Time {
	if m.RequeuedAt != nil {
		return *m.RequeuedAt
	}
	return m.CreatedAt
}

// OutboxItem is a claimed message with what rendering it needs.
type OutboxItem struct {
	OutboxMessage
	InvitationEmail      string
	InvitationRole       string
	InvitationStatus     string
	InvitationExpiresAt  time.Time
	InvitedBy            string
	InviterEmail         string
	WorkspaceName        string
	WorkspaceDisplayName string
}

// claimDue claims up to limit due pending messages of table
// (outbox_messages; webhook messages are claimed per endpoint, in
// webhook_queue.go) for token until lease ends, counting the attempt, and
// returns their ids. status = 'pending' is a literal so that the table's
// partial claim index (idx_outbox_claim) can serve it (see memberByEmail).
func (s *Store) claimDue(tx *gorm.DB, table, token string, limit int, lease time.Duration, now time.Time) ([]int64, error) {
	lock := ""
	if s.dialect == Postgres {
		lock = "FOR UPDATE SKIP LOCKED"
	}
	var ids []int64
	err := tx.Raw(`
UPDATE `+table+` SET claimed_until = ?, claim_token = ?, attempts = attempts + 1, updated_at = ?
WHERE id IN (
  SELECT id FROM `+table+`
  WHERE status = 'pending' AND next_attempt_at <= ? AND (claimed_until IS NULL OR claimed_until < ?)
  ORDER BY next_attempt_at, id LIMIT ? `+lock+`
) RETURNING id`, now.Add(lease), token, now, now, now, limit).Scan(&ids).Error
	return ids, err
}

// ClaimOutbox claims up to limit due messages for lease under token, in one
// statement that commits the claim, so nothing is locked while sending. On
// PostgreSQL, FOR UPDATE SKIP LOCKED lets concurrent dispatchers take
// different rows; on SQLite the single writer serialises claims.
func (s *Store) ClaimOutbox(ctx context.Context, token string, limit int, lease time.Duration) ([]OutboxItem, error) {
	now := s.now()
	var items []OutboxItem
	err := s.inTx(ctx, func(tx *gorm.DB) error {
		ids, err := s.claimDue(tx, "outbox_messages", token, limit, lease, now)
		if err != nil || len(ids) == 0 {
			return err
		}
		return tx.Raw(`
SELECT o.*, i.email AS invitation_email, i.role AS invitation_role, i.status AS invitation_status,
       i.expires_at AS invitation_expires_at, i.invited_by, COALESCE(m.email, '') AS inviter_email,
       w.name AS workspace_name, w.display_name AS workspace_display_name
FROM outbox_messages o
JOIN invitations i ON i.id = o.invitation_id
JOIN workspaces w ON w.id = i.workspace_id
LEFT JOIN members m ON m.workspace_id = i.workspace_id AND m.sub = i.invited_by
WHERE o.id IN ? AND o.claim_token = ?
ORDER BY o.id`, ids, token).Scan(&items).Error
	})
	return items, err
}

// finishOutbox updates a message this dispatcher still holds; a claim lost
// to lease expiry is left to its new holder.
func (s *Store) finishOutbox(ctx context.Context, id int64, token string, updates map[string]any) error {
	updates["claimed_until"] = nil
	updates["claim_token"] = ""
	updates["updated_at"] = s.now()
	return s.inTx(ctx, func(tx *gorm.DB) error {
		return tx.Model(&OutboxMessage{}).
			Where("id = ? AND claim_token = ? AND status = ?", id, token, OutboxPending).Updates(updates).Error
	})
}

// MarkOutboxSent records a successful send.
func (s *Store) MarkOutboxSent(ctx context.Context, id int64, token string) error {
	now := s.now()
	return s.finishOutbox(ctx, id, token, map[string]any{"status": OutboxSent, "sent_at": &now, "last_error": ""})
}

// MarkOutboxSentMany records the successful sends of ids, those this
// dispatcher still holds, in one statement (dispatchers record the sends
// that end together at once: one transaction per email cost the single
// SQLite writer most of a dispatcher's time under load).
func (s *Store) MarkOutboxSentMany(ctx context.Context, ids []int64, token string) error {
	now := s.now()
	return s.inTx(ctx, func(tx *gorm.DB) error {
		return tx.Model(&OutboxMessage{}).Where("id IN ? AND claim_token = ? AND status = ?", ids, token, OutboxPending).
			Updates(map[string]any{"status": OutboxSent, "sent_at": &now, "last_error": "", "claimed_until": nil, "claim_token": "", "updated_at": now}).Error
	})
}

// RetryOutbox releases the message for another attempt at next.
func (s *Store) RetryOutbox(ctx context.Context, id int64, token string, next time.Time, lastError string) error {
	return s.finishOutbox(ctx, id, token, map[string]any{"next_attempt_at": next, "last_error": lastError})
}

// EndOutbox gives up on a message: status is OutboxFailed or OutboxCancelled.
func (s *Store) EndOutbox(ctx context.Context, id int64, token, status, lastError string) error {
	return s.finishOutbox(ctx, id, token, map[string]any{"status": status, "last_error": lastError})
}

// ReleaseOutbox hands back every message claimed under token without
// counting the attempt (graceful shutdown).
func (s *Store) ReleaseOutbox(ctx context.Context, token string) error {
	return s.inTx(ctx, func(tx *gorm.DB) error {
		return tx.Model(&OutboxMessage{}).
			Where("claim_token = ? AND status = ?", token, OutboxPending).
			Updates(map[string]any{"claimed_until": nil, "claim_token": "", "attempts": gorm.Expr("attempts - 1"), "updated_at": s.now()}).Error
	})
}

// OutboxCounts returns the number of messages per status.
func (s *Store) OutboxCounts(ctx context.Context) (map[string]int64, error) {
	var rows []struct {
		Status string
		N      int64
	}
	if err := s.read.WithContext(ctx).Model(&OutboxMessage{}).Select("status, COUNT(*) AS n").Group("status").Scan(&rows).Error; err != nil {
		return nil, err
	}
	counts := map[string]int64{OutboxPending: 0, OutboxSent: 0, OutboxFailed: 0, OutboxCancelled: 0}
	for _, r := range rows {
		counts[r.Status] = r.N
	}
	return counts, nil
}

// OutboxStatsLimit bounds what OutboxStats reads: it counts at most this
// many pending and this many failed messages.
const OutboxStatsLimit = 10000

// OutboxStats is the outbox's state for monitoring, read in a bounded time
// whatever the backlog (see Store.OutboxStats).
type OutboxStats struct {
	// Pending and Failed count the messages in each state, up to
	// OutboxStatsLimit (a count at the limit means at least that many).
	Pending, Failed int64
	// OldestPending is when the longest-waiting pending message was queued
	// (or requeued by mail-retry): among the first OutboxStatsLimit in claim
	// order, which is all of them below the limit. Zero when none is pending.
	OldestPending time.Time
}

// Statements of OutboxStats. Each walks a partial index (idx_outbox_claim,
// idx_outbox_failed) from its start and stops at the limit: counting a
// backlog of a million pending messages exactly took longer than a scrape
// should, and no alert needs more than "at least 10,000". The claim order
// is the index's own order, so no sort.
const (
	outboxPendingCountSQL = `SELECT COUNT(*) FROM (SELECT id FROM outbox_messages WHERE status = 'pending'
ORDER BY next_attempt_at, id LIMIT ?) p`
	outboxOldestPendingSQL = `SELECT requeued_at, created_at FROM (SELECT id, requeued_at, created_at FROM outbox_messages
WHERE status = 'pending' ORDER BY next_attempt_at, id LIMIT ?) p
ORDER BY COALESCE(requeued_at, created_at), id LIMIT 1`
	outboxFailedCountSQL = `SELECT COUNT(*) FROM (SELECT id FROM outbox_messages WHERE status = 'failed'
ORDER BY updated_at, id LIMIT ?) p`
)

// OutboxStats reads the counts and the oldest pending message for
// monitoring in three index-bounded statements (see OutboxStatsLimit).
// mail-status (OutboxCounts, OldestPendingOutbox) gives exact figures at
// the price of reading every message.
func (s *Store) OutboxStats(ctx context.Context) (OutboxStats, error) {
	var st OutboxStats
	db := s.read.WithContext(ctx)
	if err := db.Raw(outboxPendingCountSQL, OutboxStatsLimit).Row().Scan(&st.Pending); err != nil {
		return OutboxStats{}, fmt.Errorf("count pending emails: %w", err)
	}
	if err := db.Raw(outboxFailedCountSQL, OutboxStatsLimit).Row().Scan(&st.Failed); err != nil {
		return OutboxStats{}, fmt.Errorf("count failed emails: %w", err)
	}
	if st.Pending == 0 {
		return st, nil
	}
	var requeued *time.Time
	var created time.Time
	err := db.Raw(outboxOldestPendingSQL, OutboxStatsLimit).Row().Scan(&requeued, &created)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		// Sent between the two statements.
	case err != nil:
		return OutboxStats{}, fmt.Errorf("find the oldest pending email: %w", err)
	default:
		st.OldestPending = OutboxMessage{RequeuedAt: requeued, CreatedAt: created}.QueuedSince()
	}
	return st, nil
}

// OutboxFilter selects messages for RequeueFailedOutbox: all of them when
// empty, else one workspace's or one message.
type OutboxFilter struct {
	Workspace string // workspace name
	ID        int64  // outbox message id
}

// requeueSQL makes failed messages pending again, due now, with a fresh age
// and backoff. The partial unique index idx_outbox_unsent allows one pending
// message per invitation, so it takes only the newest failed message of each
// invitation, and none of an invitation that already has a pending one (a
// re-invite after the failure queued it): that one will carry the email.
const requeueSQL = `
UPDATE outbox_messages
SET status = 'pending', attempts = 0, next_attempt_at = ?, requeued_at = ?,
    claimed_until = NULL, claim_token = '', updated_at = ?
WHERE status = 'failed' AND %s
  AND id IN (SELECT MAX(id) FROM outbox_messages WHERE status = 'failed' GROUP BY invitation_id)
  AND NOT EXISTS (SELECT 1 FROM outbox_messages p WHERE p.invitation_id = outbox_messages.invitation_id AND p.status = 'pending')`

// RequeueFailedOutbox makes the failed messages f selects pending again so
// the dispatcher sends them now. It returns how many it requeued and how many
// it left failed: those whose invitation has (or now gets) a pending message,
// and older failed messages of an invitation whose newest one is requeued
// (an invitation has at most one pending message).
// Messages of invitations no longer pending are requeued too: the dispatcher
// cancels them, as it would have before the failure.
// ErrNotFound: f names a workspace or message that does not exist.
func (s *Store) RequeueFailedOutbox(ctx context.Context, f OutboxFilter) (requeued, skipped int64, err error) {
	// On PostgreSQL an invite committing between this statement's snapshot
	// and its write can queue a pending message for the same invitation: the
	// update then violates idx_outbox_unsent. Running it again sees that
	// message and skips the invitation.
	for range 3 {
		requeued, skipped, err = s.requeueFailedOutbox(ctx, f)
		if !errors.Is(err, gorm.ErrDuplicatedKey) {
			break
		}
	}
	return requeued, skipped, err
}

func (s *Store) requeueFailedOutbox(ctx context.Context, f OutboxFilter) (requeued, skipped int64, err error) {
	now := s.now()
	err = s.inTx(ctx, func(tx *gorm.DB) error {
		scope, args := "1 = 1", []any{}
		switch {
		case f.ID != 0:
			var n int64
			if err := tx.Model(&OutboxMessage{}).Where("id = ?", f.ID).Count(&n).Error; err != nil {
				return err
			}
			if n == 0 {
				return errorf(ErrNotFound, "outbox message %d does not exist", f.ID)
			}
			scope, args = "id = ?", []any{f.ID}
		case f.Workspace != "":
			var ws Workspace
			if err := tx.Select("id").Where("name = ?", f.Workspace).Take(&ws).Error; err != nil {
				if errors.Is(err, gorm.ErrRecordNotFound) {
					return codedf(ErrNotFound, CodeWorkspaceNotFound, "workspace %q does not exist", f.Workspace)
				}
				return err
			}
			scope, args = "invitation_id IN (SELECT id FROM invitations WHERE workspace_id = ?)", []any{ws.ID}
		}
		res := tx.Exec(fmt.Sprintf(requeueSQL, scope), append([]any{now, now, now}, args...)...)
		if res.Error != nil {
			return res.Error
		}
		requeued = res.RowsAffected
		return tx.Model(&OutboxMessage{}).Where("status = ? AND "+scope, append([]any{OutboxFailed}, args...)...).Count(&skipped).Error
	})
	if err != nil {
		return 0, 0, fmt.Errorf("requeue failed emails: %w", err)
	}
	return requeued, skipped, nil
}

// OutboxEntry describes a message for operators (mail-status).
type OutboxEntry struct {
	ID          int64
	Workspace   string
	Email       string // the recipient
	Attempts    int
	QueuedSince time.Time // where its age starts (OutboxMessage.QueuedSince)
	UpdatedAt   time.Time // for a failed message: when it failed
	LastError   string
}

// OldestPendingOutbox returns the pending message queued longest ago; ok is
// false when nothing is pending.
func (s *Store) OldestPendingOutbox(ctx context.Context) (e OutboxEntry, ok bool, err error) {
	entries, err := s.outboxEntries(ctx, OutboxPending, "COALESCE(o.requeued_at, o.created_at), o.id", 1)
	if err != nil || len(entries) == 0 {
		return OutboxEntry{}, false, err
	}
	return entries[0], true, nil
}

// FailedOutbox returns up to limit failed messages, the latest failure first.
func (s *Store) FailedOutbox(ctx context.Context, limit int) ([]OutboxEntry, error) {
	return s.outboxEntries(ctx, OutboxFailed, "o.updated_at DESC, o.id DESC", limit)
}

func (s *Store) outboxEntries(ctx context.Context, status, order string, limit int) ([]OutboxEntry, error) {
	var rows []struct {
		OutboxMessage
		Workspace string
		Email     string
	}
	err := s.read.WithContext(ctx).Raw(`
SELECT o.*, w.name AS workspace, i.email
FROM outbox_messages o
JOIN invitations i ON i.id = o.invitation_id
JOIN workspaces w ON w.id = i.workspace_id
WHERE o.status = ?
ORDER BY `+order+` LIMIT ?`, status, limit).Scan(&rows).Error
	if err != nil {
		return nil, fmt.Errorf("list %s emails: %w", status, err)
	}
	entries := make([]OutboxEntry, len(rows))
	for i, r := range rows {
		entries[i] = OutboxEntry{ID: r.ID, Workspace: r.Workspace, Email: r.Email, Attempts: r.Attempts,
			QueuedSince: r.QueuedSince(), UpdatedAt: r.UpdatedAt, LastError: r.LastError}
	}
	return entries, nil
}
