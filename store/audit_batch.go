package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/membership-api/controlplane/store/internal/commit"
	"gorm.io/gorm"
)

// The audit events of invites. The batches write theirs with one statement
// per batch (SQLite: auditBatchSQLite after the batch's two statements;
// PostgreSQL: two more parts of the batch's CTE), never one per invite, and
// queue webhook messages in the same statement (PostgreSQL) or one more
// (SQLite), which finds nothing for a workspace without endpoints.

// inviteAction tells a new invitation from a refreshed one: the invite
// statement writes the same time to both columns of a new row, and only
// updated_at of a refreshed one.
func inviteAction(inv Invitation) string {
	if inv.CreatedAt.Equal(inv.UpdatedAt) {
		return ActionInvitationCreated
	}
	return ActionInvitationRefreshed
}

// inviteAfter is an invite's audited fields as JSON, written out rather than
// marshalled (the batches write one per invite): the same text on every
// path, PostgreSQL's batch included (auditBatchPostgres). Roles are
// "admin" or "member", which need no escaping.
func inviteAfter(role string, expires time.Time) string {
	return `{"expiresAt":"` + expiresText(expires) + `","role":"` + role + `"}`
}

func expiresText(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

// expireStale moves p's pending invitation past its expiry to history
// (expired), with its audit event, so the invite starts a fresh one.
func expireStale(tx *gorm.DB, ws Workspace, p InviteParams, now time.Time) error {
	var stale Invitation
	err := tx.Where(pendingByEmail+" AND expires_at <= ?", ws.ID, p.Email, now).Take(&stale).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := setInvitationStatus(tx, &stale, InvitationExpired, p.Caller, now); err != nil {
		return err
	}
	return invitationAudit(tx, ws, stale, ActionInvitationExpired)
}

// auditColumns are the columns the batch statements write, in order.
const auditColumns = `workspace_id, workspace, at, actor_kind, actor_sub, action, target_type, target_id, before, after, request_id`

// auditBatchSQLite is the events' insert for 2^i rows (padded with NULL
// rows, as inviteBatchSQLite): the time once, then per row the workspace's
// id and name, actor kind and sub, action, email, after and request ID.
// The rows of one statement get consecutive ids on SQLite's single writer
// (the last one and their count are the statement's result), which is the
// range enqueueWebhooksRange then reads: one index probe per event for a
// workspace without webhooks. (Returning each id and an endpoint check
// instead cost more than the second statement.)
var auditBatchSQLite [maxInviteBatchLog2 + 1]string

const auditBatchSQLiteColumns = 8

// enqueueWebhooksRange queues the webhook messages of the events whose ids
// lie in a range: on SQLite's single writer, the events one statement just
// wrote.
var enqueueWebhooksRange = enqueueWebhooksSQL + "a.id BETWEEN ? AND ?"

func init() {
	for i := range auditBatchSQLite {
		rows := make([]string, 1<<i)
		for r := range rows {
			rows[r] = "(?" + strings.Repeat(", ?", auditBatchSQLiteColumns-1) + ")"
		}
		auditBatchSQLite[i] = `INSERT INTO audit_events (` + auditColumns + `)
SELECT column1, column2, ?, column3, column4, column5, 'invitation', column6, '', column7, column8
FROM (VALUES ` + strings.Join(rows, ", ") + `) WHERE column1 IS NOT NULL`
	}
}

// auditSQLiteBatch writes the events of the invites a SQLite batch settled
// (their jobs are found), then queues their webhook messages.
func auditSQLiteBatch(ctx context.Context, tx *gorm.DB, memo *commit.Memo, now time.Time, batch []*inviteJob) error {
	const cols = auditBatchSQLiteColumns
	n := 0
	for _, job := range batch {
		if job.found {
			n++
		}
	}
	if n == 0 {
		return nil
	}
	size := paddedSize(n)
	args := make([]any, 1+cols<<size)
	args[0] = now
	// Every row of a batch has the batch's expiry: two texts at most.
	after := map[string]string{}
	i := 1
	for _, job := range batch {
		if !job.found {
			continue
		}
		inv, a := &job.inv, job.p.actor
		text, ok := after[inv.Role]
		if !ok {
			text = inviteAfter(inv.Role, inv.ExpiresAt)
			after[inv.Role] = text
		}
		args[i], args[i+1], args[i+2], args[i+3] = inv.WorkspaceID, job.p.Workspace, a.Kind, a.Sub
		args[i+4], args[i+5], args[i+6], args[i+7] = inviteAction(*inv), inv.Email, text, a.RequestID
		i += cols
	}
	res, err := tx.ConnPool.ExecContext(ctx, auditBatchSQLite[size], args...)
	if err != nil {
		return fmt.Errorf("audit invite batch: %w", err)
	}
	last, err1 := res.LastInsertId()
	written, err2 := res.RowsAffected()
	if err := errors.Join(err1, err2); err != nil {
		return fmt.Errorf("audit invite batch: %w", err)
	}
	first := last - written + 1
	if memo != nil {
		enabled, err := anyEnabledWebhook(ctx, tx, memo)
		if err != nil || !enabled {
			return err
		}
	}
	if _, err := tx.ConnPool.ExecContext(ctx, enqueueWebhooksRange, now, now, now, first, last); err != nil {
		return fmt.Errorf("queue webhook messages: %w", err)
	}
	return nil
}

// anyEnabledWebhookSQL tells whether any webhook endpoint is enabled.
const anyEnabledWebhookSQL = `SELECT EXISTS (SELECT 1 FROM webhook_endpoints WHERE disabled_at IS NULL)`

// webhooksEnabled is what an invite batch keeps in its writer
// transaction's memo (commit.Memo): whether any webhook endpoint is enabled.
type webhooksEnabled bool

// anyEnabledWebhook answers, once per writer transaction, whether any
// enabled webhook endpoint exists; when none does, the invite batches of
// that transaction skip their webhook statement. The writer applies a
// transaction's invites in steps of up to 16, each with its own
// statements, and the webhook statement cost about 7% of the SQLite invite
// path's throughput under make bench (README, Performance); this probe
// costs one statement per transaction instead. The answer is kept in the
// transaction's memo, which the writer empties after any job that is not
// an invite batch (it may have added an endpoint).
func anyEnabledWebhook(ctx context.Context, tx *gorm.DB, memo *commit.Memo) (bool, error) {
	if known, ok := memo.Load().(webhooksEnabled); ok {
		return bool(known), nil
	}
	var enabled bool
	if err := tx.ConnPool.QueryRowContext(ctx, anyEnabledWebhookSQL).Scan(&enabled); err != nil {
		return false, fmt.Errorf("check for webhook endpoints: %w", err)
	}
	memo.Store(webhooksEnabled(enabled))
	return enabled, nil
}

// auditBatchPostgres are the parts of inviteBatchPostgres's CTE after inv
// and queued: the events of the rows inv wrote (joined to their jobs by
// email, which a batch holds once), and their webhook messages. Arguments
// beyond the batch's: $7 actor kinds, $8 actor subs, $9 request IDs (per
// job, as batchActors), $10 the expiry as inviteFields writes it.
const auditBatchPostgres = `, audited AS (
INSERT INTO audit_events (` + auditColumns + `)
SELECT inv.workspace_id, a.ws, $2, a.kind, a.sub,
       CASE WHEN inv.created_at = inv.updated_at THEN 'invitation.created' ELSE 'invitation.refreshed' END,
       'invitation', inv.email, '', '{"expiresAt":' || to_json($10::text)::text || ',"role":' || to_json(inv.role)::text || '}', a.rid
FROM inv JOIN unnest($5::text[], $3::text[], $7::text[], $8::text[], $9::text[]) AS a(email, ws, kind, sub, rid) ON a.email = inv.email
RETURNING id, workspace_id, action
), hooked AS (
INSERT INTO webhook_messages (endpoint_id, event_id, event_type, payload, status, attempts, next_attempt_at, created_at, updated_at)
SELECT e.id, au.id, au.action, '', 'pending', 0, $2, $2, $2
FROM audited au JOIN webhook_endpoints e ON e.workspace_id = au.workspace_id
WHERE e.disabled_at IS NULL AND (e.event_types = '' OR e.event_types LIKE '%,' || au.action || ',%')
)`

// batchActors are the per-invite audit inputs of the PostgreSQL batch.
func batchActors(batch []*inviteJob) (kinds, subs, requestIDs []string) {
	n := len(batch)
	kinds, subs, requestIDs = make([]string, n), make([]string, n), make([]string, n)
	for i, job := range batch {
		kinds[i], subs[i], requestIDs[i] = job.p.actor.Kind, job.p.actor.Sub, job.p.actor.RequestID
	}
	return kinds, subs, requestIDs
}
