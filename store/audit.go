package store

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"gorm.io/gorm"
)

// The audit log: every change to membership, invitations, roles,
// API keys, webhook endpoints and workspace settings appends one immutable
// AuditEvent in the transaction of the change, so a change and its event
// commit or roll back together. appendAudit is the one way in; it also
// queues the event's webhook messages (webhooks.go) in the same
// transaction. The invite batches write theirs with one statement per
// batch (auditBatchSQLite, inviteBatchPostgres).

// Actor kinds: who made a change.
const (
	ActorUser           = "user"            // a person's token
	ActorAPIKey         = "api_key"         // a member's API key
	ActorServiceAccount = "service_account" // a service account's token or key
	ActorCLI            = "cli"             // a controlplane command run on the server
	ActorSystem         = "system"          // the server itself (e.g. disabling a failing endpoint)
)

// Actor is who makes the changes of a context's writes, with the request's
// ID when there is one.
type Actor struct {
	Kind, Sub, RequestID string
}

type actorKey struct{}

// WithActor returns ctx carrying a, which every audit event appended by a
// write under it records. The server sets it per request, the CLI per
// command.
func WithActor(ctx context.Context, a Actor) context.Context {
	return context.WithValue(ctx, actorKey{}, a)
}

// ActorFrom returns the actor ctx carries; without one, the system.
func ActorFrom(ctx context.Context) Actor {
	if a, ok := ctx.Value(actorKey{}).(Actor); ok && a.Kind != "" {
		return a
	}
	return Actor{Kind: ActorSystem}
}

// Audit actions, which are also the webhook event types (docs/api/audit-and-webhooks.md, "Event
// catalogue"; the YAML's WebhookEventType).
const (
	ActionInvitationCreated     = "invitation.created"
	ActionInvitationRefreshed   = "invitation.refreshed"
	ActionInvitationAccepted    = "invitation.accepted"
	ActionInvitationDeclined    = "invitation.declined"
	ActionInvitationRevoked     = "invitation.revoked"
	ActionInvitationExpired     = "invitation.expired"
	ActionInvitationRoleChanged = "invitation.role_changed"
	ActionMemberRoleChanged     = "member.role_changed"
	ActionMemberRemoved         = "member.removed"
	ActionMemberLeft            = "member.left"
	ActionWorkspaceCreated      = "workspace.created"
	ActionWorkspaceUpdated      = "workspace.updated"
	ActionWorkspaceDeleted      = "workspace.deleted"
	ActionDomainPolicyUpdated   = "workspace.email_domains_updated"
	ActionAPIKeyCreated         = "api_key.created"
	ActionAPIKeyRevoked         = "api_key.revoked"
	ActionServiceAccountCreated = "service_account.created"
	ActionServiceAccountUpdated = "service_account.updated"
	ActionServiceAccountDeleted = "service_account.deleted"
	ActionWebhookCreated        = "webhook_endpoint.created"
	ActionWebhookUpdated        = "webhook_endpoint.updated"
	ActionWebhookDeleted        = "webhook_endpoint.deleted"
	ActionWebhookDisabled       = "webhook_endpoint.disabled"
	// ActionWebhookTest is never audited: it is the type of the test events
	// SendWebhookTest queues.
	ActionWebhookTest = "webhook.test"
)

// Actions lists every audit action (webhook event types), for validation.
var Actions = []string{
	ActionInvitationCreated, ActionInvitationRefreshed, ActionInvitationAccepted, ActionInvitationDeclined,
	ActionInvitationRevoked, ActionInvitationExpired, ActionInvitationRoleChanged, ActionMemberRoleChanged,
	ActionMemberRemoved, ActionMemberLeft, ActionWorkspaceCreated, ActionWorkspaceUpdated, ActionWorkspaceDeleted, ActionDomainPolicyUpdated,
	ActionAPIKeyCreated, ActionAPIKeyRevoked, ActionServiceAccountCreated, ActionServiceAccountUpdated,
	ActionServiceAccountDeleted, ActionWebhookCreated, ActionWebhookUpdated, ActionWebhookDeleted,
	ActionWebhookDisabled, ActionWebhookTest,
}

// Target types of audit events.
const (
	TargetInvitation = "invitation"
	TargetMember     = "member"
	TargetWorkspace  = "workspace"
	TargetAPIKey     = "api_key"
	TargetWebhook    = "webhook_endpoint"
	// TargetServiceAccount's id is the client ID.
	TargetServiceAccount = "service_account"
)

// AuditEvent is one immutable audit row. Before and After are JSON objects
// of the changed fields ("" when there is none), never a secret. The
// workspace's name is kept beside its id, and there is no foreign key: the
// events of a deleted workspace stay (until retention removes them), and a
// new workspace of the same name has another id, so it never sees them.
// idx_audit_workspace serves the list (a workspace's events, newest first);
// idx_audit_actor_workspace and idx_audit_action_workspace its pages
// filtered by actor or action (schema version 2), so that a filtered page
// reads its own rows, not the workspace's history. The filter comes first
// in them, before workspace_id: an unfiltered page then has one index that
// gives its order (with workspace_id first, SQLite took the action index
// for unfiltered pages too, and sorted the whole workspace).
type AuditEvent struct {
	ID          int64     `gorm:"primaryKey;index:idx_audit_workspace,priority:2;index:idx_audit_actor_workspace,priority:3;index:idx_audit_action_workspace,priority:3"`
	WorkspaceID int64     `gorm:"not null;index:idx_audit_workspace,priority:1;index:idx_audit_actor_workspace,priority:2;index:idx_audit_action_workspace,priority:2"`
	Workspace   string    `gorm:"not null"`
	At          time.Time `gorm:"not null"`
	ActorKind   string    `gorm:"not null"`
	ActorSub    string    `gorm:"not null;default:'';index:idx_audit_actor_workspace,priority:1"`
	Action      string    `gorm:"not null;index:idx_audit_action_workspace,priority:1"`
	TargetType  string    `gorm:"not null"`
	TargetID    string    `gorm:"not null"`
	Before      string    `gorm:"not null;default:''"`
	After       string    `gorm:"not null;default:''"`
	RequestID   string    `gorm:"not null;default:''"`
}

// TableName names the table audit_events.
func (AuditEvent) TableName() string { return "audit_events" }

// fields is the before or after of an event: changed field → value.
type fields map[string]any

func (f fields) json() string {
	if len(f) == 0 {
		return ""
	}
	b, err := json.Marshal(f)
	if err != nil {
		// Only strings, numbers, booleans and times go in: cannot fail.
		panic(fmt.Sprintf("audit fields: %v", err))
	}
	return string(b)
}

func jsonString(v any) (string, error) {
	b, err := json.Marshal(v)
	return string(b), err
}

func parseJSON(s string, v any) error { return json.Unmarshal([]byte(s), v) }

// auditOf is an event of ws about a target; the actor, time and request ID
// are appendAudit's.
func auditOf(ws Workspace, action, targetType, targetID string, before, after fields) AuditEvent {
	return AuditEvent{WorkspaceID: ws.ID, Workspace: ws.Name, Action: action, TargetType: targetType, TargetID: targetID,
		Before: before.json(), After: after.json()}
}

// appendAudit appends events inside tx, the transaction of the change they
// record, and queues their webhook messages for the workspace's subscribed
// endpoints. The actor and request ID are the transaction's context's
// (WithActor), unless an event names its own; the time is the store's
// clock. Other operations add their events with one call.
func appendAudit(tx *gorm.DB, events ...AuditEvent) error {
	if len(events) == 0 {
		return nil
	}
	actor := ActorFrom(tx.Statement.Context)
	now := tx.NowFunc()
	for i := range events {
		e := &events[i]
		if e.ActorKind == "" {
			e.ActorKind, e.ActorSub = actor.Kind, actor.Sub
			if e.RequestID == "" {
				e.RequestID = actor.RequestID
			}
		}
		if e.At.IsZero() {
			e.At = now
		}
	}
	if err := tx.Create(&events).Error; err != nil {
		return fmt.Errorf("append audit event: %w", err)
	}
	ids := make([]int64, len(events))
	for i, e := range events {
		ids[i] = e.ID
	}
	if err := tx.Exec(enqueueWebhooks(tx)+"a.id IN ?", webhookIDPrefix(now), now, now, now, ids).Error; err != nil {
		return fmt.Errorf("queue webhook messages: %w", err)
	}
	return nil
}

// AuditFilter selects a workspace's events for ListAudit. It names the
// workspace by its ID, unlike the methods, which take its name: the events
// of a deleted workspace stay, and a new workspace of the same name must
// not see them (AuditEvent), so only the ID says whose log it is.
type AuditFilter struct {
	WorkspaceID  int64
	Since, Until time.Time // zero: unbounded
	Action       string
	ActorSub     string
	BeforeID     int64 // the cursor: events older than this one; 0: from the newest
	Limit        int
}

// ListAudit returns a workspace's events matching f, newest first, walking
// backwards from the cursor idx_audit_workspace, or, filtered by actor or
// action, idx_audit_actor_workspace or idx_audit_action_workspace
// (TestAudit_FilteredPagesPlans). A filter on time alone still walks the
// workspace's events from the cursor.
func (s *Store) ListAudit(ctx context.Context, f AuditFilter) ([]AuditEvent, error) {
	q := s.read.WithContext(ctx).Where("workspace_id = ?", f.WorkspaceID)
	if f.BeforeID > 0 {
		q = q.Where("id < ?", f.BeforeID)
	}
	if !f.Since.IsZero() {
		q = q.Where("at >= ?", f.Since.UTC())
	}
	if !f.Until.IsZero() {
		q = q.Where("at < ?", f.Until.UTC())
	}
	if f.Action != "" {
		q = q.Where("action = ?", f.Action)
	}
	if f.ActorSub != "" {
		q = q.Where("actor_sub = ?", f.ActorSub)
	}
	events := []AuditEvent{}
	if err := q.Order("workspace_id DESC, id DESC").Limit(f.Limit).Find(&events).Error; err != nil {
		return nil, fmt.Errorf("list audit events: %w", err)
	}
	return events, nil
}

// DefaultAuditRetention is how long audit events are kept unless
// --audit-retention says otherwise: 400 days, a yearly audit's year and a
// month's slack. Kept forever, the log grows with every change for ever
// (a filtered page stays index-bounded either way); --audit-retention 0
// keeps everything.
const DefaultAuditRetention = 400 * 24 * time.Hour

// pruneBatch bounds one pruning statement.
const pruneBatch = 5000

// PruneAudit deletes the audit events older than before (retention), with
// their webhook messages, a bounded batch at a time from the oldest
// (primary key order, which is time order): no index on the time is
// written for it, and no statement holds the writer long. Returns how many
// events it deleted.
func (s *Store) PruneAudit(ctx context.Context, before time.Time) (int64, error) {
	var total int64
	for {
		var n int64
		err := s.inTx(ctx, func(tx *gorm.DB) error {
			var ids []int64
			err := tx.Raw(`SELECT id FROM (SELECT id, at FROM audit_events ORDER BY id LIMIT ?) o WHERE at < ?`,
				pruneBatch, before.UTC()).Scan(&ids).Error
			if err != nil || len(ids) == 0 {
				return err
			}
			if err := tx.Where("event_id IN ?", ids).Delete(&WebhookMessage{}).Error; err != nil {
				return err
			}
			res := tx.Where("id IN ?", ids).Delete(&AuditEvent{})
			n = res.RowsAffected
			return res.Error
		})
		if err != nil {
			return total, fmt.Errorf("prune audit events: %w", err)
		}
		total += n
		if n < pruneBatch {
			return total, nil
		}
	}
}

// serviceAccountFields is a service account's audited fields (never its secret).
func serviceAccountFields(v ServiceAccountView) fields {
	return fields{"name": v.Name, "description": v.Description, "role": v.Role}
}

// domainPolicyFields is an email-domain policy's audited fields.
func domainPolicyFields(p EmailDomainPolicy) fields {
	return fields{"allow": append([]string{}, p.Allow...), "deny": append([]string{}, p.Deny...)}
}

// memberFields is a removed member's audited fields.
func memberFields(m Member) fields { return fields{"role": m.Role, "email": m.Email} }

// invitationAudit appends the event of an invitation's transition out of
// pending (inv already holds its new status; accepted: the new member's sub
// is its UpdatedBy).
func invitationAudit(tx *gorm.DB, ws Workspace, inv Invitation, action string) error {
	after := fields{"status": inv.Status}
	if action == ActionInvitationAccepted {
		after["sub"], after["role"] = inv.UpdatedBy, inv.Role
	}
	return appendAudit(tx, auditOf(ws, action, TargetInvitation, inv.Email, fields{"status": InvitationPending}, after))
}
