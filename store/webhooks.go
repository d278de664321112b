package store

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"gorm.io/gorm"
)

// Webhooks: admins register endpoints per workspace; every audit
// event of the workspace that an enabled endpoint subscribes to becomes a
// WebhookMessage in the event's own transaction (appendAudit, and the
// invite batches), which a dispatcher (package webhook) delivers like the
// email outbox: claimed under a lease, retried with backoff, at least once
// with a stable webhook-id (WebhookMessage.WebhookID).

// WebhookSecretPrefix starts every signing secret (Standard Webhooks).
const WebhookSecretPrefix = "whsec_"

// The machine-readable kinds of the webhook operations' refusals (Error.Code).
const (
	CodeWebhookNotFound   = "webhook_not_found"
	CodeWebhookDisabled   = "webhook_disabled"
	CodeTooManyWebhooks   = "too_many_webhooks"
	CodeInvalidWebhookURL = "invalid_webhook_url"
)

// WebhookEndpoint is a URL receiving a workspace's events. EventTypes is
// ",a,b," (so one LIKE finds a type; types are checked against Actions, none
// holds a LIKE wildcard but '_', which matches itself among them) or "" for
// every type. Signing needs the secret itself (HMAC), so it is sealed with
// the secrets key when one is configured (secrets.go), else stored as is;
// the API shows it once, at creation.
type WebhookEndpoint struct {
	// idx_webhook_endpoints_enabled holds the enabled endpoints only, so
	// "is any endpoint enabled?" (anyEnabledWebhookSQL) reads one entry
	// however many endpoints are disabled.
	ID             int64  `gorm:"primaryKey;index:idx_webhook_endpoints_enabled,where:disabled_at IS NULL"`
	WorkspaceID    int64  `gorm:"not null;index:idx_webhook_endpoints_workspace"`
	URL            string `gorm:"not null"`
	Description    string `gorm:"not null;default:''"`
	EventTypes     string `gorm:"not null;default:''"`
	Secret         string `gorm:"not null"`
	DisabledAt     *time.Time
	DisabledReason string `gorm:"not null;default:''"`
	// FailingSince is the start of the current run of failed attempts
	// (nil after a success): the endpoint is disabled once it is too old.
	FailingSince *time.Time
	// ConsecutiveFailures and BackoffUntil are the endpoint's backoff
	// (webhook_queue.go): failed probes in a row, and when it may be tried
	// again (nil: now).
	ConsecutiveFailures int `gorm:"not null;default:0"`
	BackoffUntil        *time.Time
	Audit

	Workspace Workspace `gorm:"constraint:OnDelete:CASCADE"`
}

// Types returns the event types the endpoint subscribes to (none: all).
func (e WebhookEndpoint) Types() []string {
	return strings.FieldsFunc(e.EventTypes, func(r rune) bool { return r == ',' })
}

// Webhook message states.
const (
	WebhookPending   = "pending"
	WebhookDelivered = "delivered"
	WebhookFailed    = "failed"    // given up: too old
	WebhookCancelled = "cancelled" // its endpoint was disabled first
)

// WebhookMessage is one event to deliver to one endpoint. WebhookID is the
// webhook-id of every attempt, made when the message is queued (newWebhookID,
// enqueueWebhooksSQL): "msg_", the queueing time in milliseconds as 12 hex
// digits (ids sort by creation), then 80 random bits as 20 hex digits, so a
// receiver hearing from several deployments never sees one id twice, as
// Standard Webhooks asks. Rows queued before the column existed hold "" and
// keep the id they were first sent with, "msg_" + ID (MessageWebhookID).
// EventID names the audit event;
// a test event has none and carries its event in Payload (JSON of an
// AuditEvent). For the fair claim (webhook_queue.go),
// idx_webhook_endpoint_queue holds each endpoint's pending messages in due
// order (it replaced idx_webhook_claim, all of them in due order, which
// put one endpoint's backlog ahead of everyone's fresh messages),
// idx_webhook_claimed the claimed ones and idx_webhook_pending_tests the
// pending test events.
type WebhookMessage struct {
	ID            int64     `gorm:"primaryKey;index:idx_webhook_endpoint_queue,priority:3,where:status = 'pending'"`
	WebhookID     string    `gorm:"not null;default:''"`
	EndpointID    int64     `gorm:"not null;index:idx_webhook_messages_endpoint;index:idx_webhook_endpoint_queue,priority:1,where:status = 'pending';index:idx_webhook_claimed,where:status = 'pending' AND claim_token <> '';index:idx_webhook_pending_tests,where:status = 'pending' AND event_id IS NULL"`
	EventID       *int64    `gorm:"index:idx_webhook_messages_event"`
	EventType     string    `gorm:"not null"`
	Payload       string    `gorm:"not null;default:''"`
	Status        string    `gorm:"not null"`
	Attempts      int       `gorm:"not null;default:0"`
	NextAttemptAt time.Time `gorm:"not null;index:idx_webhook_endpoint_queue,priority:2,where:status = 'pending'"`
	ClaimedUntil  *time.Time
	ClaimToken    string `gorm:"not null;default:''"`
	LastError     string `gorm:"not null;default:''"`
	DeliveredAt   *time.Time
	CreatedAt     time.Time `gorm:"not null"`
	UpdatedAt     time.Time `gorm:"not null"`

	Endpoint WebhookEndpoint `gorm:"constraint:OnDelete:CASCADE"`
}

// Outcomes of a delivery attempt.
const (
	AttemptDelivered = "delivered"
	AttemptRetry     = "retry"
	AttemptFailed    = "failed"
)

// WebhookAttempt is one line of an endpoint's delivery log. About the
// latest maxWebhookAttempts of an endpoint are kept (pruneAttempts).
type WebhookAttempt struct {
	ID         int64     `gorm:"primaryKey;index:idx_webhook_attempts_endpoint,priority:2"`
	EndpointID int64     `gorm:"not null;index:idx_webhook_attempts_endpoint,priority:1"`
	MessageID  int64     `gorm:"not null"`
	WebhookID  string    `gorm:"not null;default:''"` // the message's (MessageWebhookID)
	EventType  string    `gorm:"not null"`
	Attempt    int       `gorm:"not null"`
	At         time.Time `gorm:"not null"`
	StatusCode int       `gorm:"not null"`
	LatencyMS  int64     `gorm:"not null"`
	Outcome    string    `gorm:"not null"`
	Error      string    `gorm:"not null;default:''"`

	Endpoint WebhookEndpoint `gorm:"constraint:OnDelete:CASCADE"`
}

const maxWebhookAttempts = 100

// MaxWebhooks bounds a workspace's endpoints: every audited change of the
// workspace reads them (enqueueWebhooksSQL).
const MaxWebhooks = 20

// enqueueWebhooksSQL queues, for audit events, one message per enabled
// endpoint of their workspace that subscribes to their action; the caller
// appends which events ("a.id IN ?", or a range) and gives the webhook-id
// prefix (webhookIDPrefix), then the time three times. Driven from the events (few) through idx_webhook_endpoints_workspace:
// for a workspace without endpoints it is one index probe per event, which
// is the cheap check every audited change pays.
//
// An endpoint is not sent the webhook_endpoint.created event of its own
// creation (the endpoints already there are). That event would otherwise
// reach it within milliseconds of the registration, before its creator has
// read the signing secret out of the create call's answer and stored it, so
// the receiver could not verify it; and it tells the new endpoint nothing
// its creator did not just learn from that answer. Leaving it out is
// decided here, when the messages are written, so it holds for every path
// that queues messages and does not depend on timing; delaying first
// deliveries until the answer is out was the other choice, but nothing on
// the server knows when the creator has stored the secret.
//
// The webhook-id is made in the statement: the caller's prefix
// (webhookIDPrefix: "msg_" and the time) then 80 random bits per row, from
// randomblob on SQLite and from gen_random_uuid (built in since
// PostgreSQL 13, a CSPRNG; pgcrypto is not needed) hashed to hex on
// PostgreSQL. Making them in Go instead would need the inserted rows back
// (RETURNING, then one UPDATE per row) on the path every audited change takes.
const enqueueWebhooksSQL = `INSERT INTO webhook_messages (webhook_id, endpoint_id, event_id, event_type, payload, status, attempts, next_attempt_at, created_at, updated_at)
SELECT CAST(? AS TEXT) || ` + randomHexMarker + `, e.id, a.id, a.action, '', 'pending', 0, ?, ?, ?
FROM audit_events a CROSS JOIN webhook_endpoints e
WHERE e.workspace_id = a.workspace_id AND e.disabled_at IS NULL
  AND (e.event_types = '' OR e.event_types LIKE '%,' || a.action || ',%')
  AND NOT (a.action = '` + ActionWebhookCreated + `' AND a.target_type = '` + TargetWebhook + `' AND a.target_id = CAST(e.id AS TEXT)) AND `

// randomHexMarker stands in enqueueWebhooksSQL for the dialect's
// expression of 20 random hex digits.
const randomHexMarker = "{random_hex}"

// Each dialect's 20 random hex digits (80 bits), evaluated once per row.
const (
	randomHexSQLite   = "lower(hex(randomblob(10)))"
	randomHexPostgres = "substr(md5(CAST(gen_random_uuid() AS TEXT)), 1, 20)"
)

var (
	enqueueWebhooksSQLite   = strings.Replace(enqueueWebhooksSQL, randomHexMarker, randomHexSQLite, 1)
	enqueueWebhooksPostgres = strings.Replace(enqueueWebhooksSQL, randomHexMarker, randomHexPostgres, 1)
)

// enqueueWebhooks is enqueueWebhooksSQL for the database behind tx.
func enqueueWebhooks(tx *gorm.DB) string {
	if Dialect(tx.Dialector.Name()) == Postgres {
		return enqueueWebhooksPostgres
	}
	return enqueueWebhooksSQLite
}

// webhookIDPrefix is the start of the webhook-ids of messages queued at
// now: the time in milliseconds, 12 hex digits (enough until the year
// 10889), so ids sort by when they were queued.
func webhookIDPrefix(now time.Time) string { return fmt.Sprintf("msg_%012x", now.UnixMilli()) }

// newWebhookID is a message's webhook-id made in Go (test events), of the
// form enqueueWebhooksSQL makes.
func newWebhookID(now time.Time) (string, error) {
	raw := make([]byte, 10)
	if _, err := rand.Read(raw); err != nil {
		return "", err
	}
	return webhookIDPrefix(now) + hex.EncodeToString(raw), nil
}

// MessageWebhookID is the webhook-id of message id whose stored webhook-id
// is stored: stored, or "msg_" + id for messages queued before webhook-ids
// were stored (their redeliveries keep the id they were first sent with).
func MessageWebhookID(stored string, id int64) string {
	if stored != "" {
		return stored
	}
	return "msg_" + strconv.FormatInt(id, 10)
}

// WebhookInput is a new endpoint, or changes to one (nil: unchanged).
type WebhookInput struct {
	URL         *string
	Description *string
	EventTypes  *[]string
	Enabled     *bool
}

func (in WebhookInput) check() error {
	if in.EventTypes != nil {
		for _, t := range *in.EventTypes {
			if !slices.Contains(Actions, t) {
				return errorf(ErrInvalid, "unknown event type %q", t)
			}
		}
	}
	if in.Description != nil && (!storable(*in.Description) || utf8.RuneCountInString(*in.Description) > 200) {
		return errorf(ErrInvalid, "description must be valid UTF-8 of at most 200 characters")
	}
	if in.URL != nil && !storable(*in.URL) {
		return errorf(ErrInvalid, "url must be valid UTF-8")
	}
	return nil
}

func joinTypes(types []string) string {
	if len(types) == 0 {
		return ""
	}
	t := slices.Clone(types)
	slices.Sort(t)
	return "," + strings.Join(slices.Compact(t), ",") + ","
}

// webhookFields is an endpoint's audited fields (never its secret).
func webhookFields(e WebhookEndpoint) fields {
	return fields{"url": RedactURL(e.URL), "description": e.Description, "eventTypes": e.Types(), "enabled": e.DisabledAt == nil}
}

// RedactURL is a webhook URL for audit events and logs: scheme and host
// only, since webhook URLs often carry a token in their path or query (chat
// services' incoming webhooks do). Never a secret in the audit log.
func RedactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return "(invalid URL)"
	}
	r := u.Scheme + "://" + u.Host
	if (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
		r += "/…"
	}
	return r
}

func findWebhook(tx *gorm.DB, workspaceID, id int64) (WebhookEndpoint, error) {
	var e WebhookEndpoint
	err := tx.Where("workspace_id = ? AND id = ?", workspaceID, id).Take(&e).Error
	return e, webhookNotFound(err, id)
}

// webhookNotFound is the error of a lookup of endpoint id: ErrNotFound
// for no row.
func webhookNotFound(err error, id int64) error {
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return codedf(ErrNotFound, CodeWebhookNotFound, "webhook endpoint %d not found in this workspace", id)
	}
	return err
}

// CreateWebhook registers an endpoint (admins only) with a new secret,
// returned in the endpoint this once. in.URL must have been checked by the
// caller (webhook.CheckURL). Errors as requireAdmin, ErrInvalid.
func (s *Store) CreateWebhook(ctx context.Context, workspaceName, by string, in WebhookInput) (WebhookEndpoint, error) {
	if in.URL == nil {
		return WebhookEndpoint{}, errorf(ErrInvalid, "url is required")
	}
	if err := in.check(); err != nil {
		return WebhookEndpoint{}, err
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return WebhookEndpoint{}, err
	}
	e := WebhookEndpoint{URL: *in.URL, Secret: WebhookSecretPrefix + base64.StdEncoding.EncodeToString(raw),
		Audit: Audit{CreatedBy: by, UpdatedBy: by}}
	if in.Description != nil {
		e.Description = *in.Description
	}
	if in.EventTypes != nil {
		e.EventTypes = joinTypes(*in.EventTypes)
	}
	err := s.adminTx(ctx, workspaceName, by, func(tx *gorm.DB, ws Workspace) error {
		var n int64
		if err := tx.Model(&WebhookEndpoint{}).Where("workspace_id = ?", ws.ID).Count(&n).Error; err != nil {
			return err
		}
		if n >= MaxWebhooks {
			return codedf(ErrConflict, CodeTooManyWebhooks, "a workspace has at most %d webhook endpoints: delete one first", MaxWebhooks)
		}
		e.WorkspaceID = ws.ID
		if err := s.createWebhookEndpoint(tx, &e); err != nil {
			return err
		}
		return appendAudit(tx, auditOf(ws, ActionWebhookCreated, TargetWebhook, strconv.FormatInt(e.ID, 10), nil, webhookFields(e)))
	})
	return e, err
}

// Webhooks lists a workspace's endpoints, oldest first (none for an
// unknown workspace).
func (s *Store) Webhooks(ctx context.Context, workspaceName string) ([]WebhookEndpoint, error) {
	out := []WebhookEndpoint{}
	if !storable(workspaceName) {
		return out, nil
	}
	err := s.read.WithContext(ctx).Where("workspace_id = "+workspaceIDByName, workspaceName).Order("id").Find(&out).Error
	return out, err
}

// Webhook returns one endpoint of a workspace; ErrNotFound if none (or no
// such workspace).
func (s *Store) Webhook(ctx context.Context, workspaceName string, id int64) (WebhookEndpoint, error) {
	if !storable(workspaceName) {
		return WebhookEndpoint{}, codedf(ErrNotFound, CodeWebhookNotFound, "webhook endpoint %d not found in this workspace", id)
	}
	var e WebhookEndpoint
	err := s.read.WithContext(ctx).Where("workspace_id = "+workspaceIDByName+" AND id = ?", workspaceName, id).Take(&e).Error
	return e, webhookNotFound(err, id)
}

// UpdateWebhook changes an endpoint (admins only); enabling it clears its
// failure. Errors as CreateWebhook, ErrNotFound for an unknown endpoint.
func (s *Store) UpdateWebhook(ctx context.Context, workspaceName, by string, id int64, in WebhookInput) (WebhookEndpoint, error) {
	if err := in.check(); err != nil {
		return WebhookEndpoint{}, err
	}
	var e WebhookEndpoint
	err := s.adminTx(ctx, workspaceName, by, func(tx *gorm.DB, ws Workspace) error {
		var err error
		if e, err = findWebhook(tx, ws.ID, id); err != nil {
			return err
		}
		before, oldURL := webhookFields(e), e.URL
		now := s.now()
		if in.URL != nil {
			e.URL = *in.URL
		}
		if in.Description != nil {
			e.Description = *in.Description
		}
		if in.EventTypes != nil {
			e.EventTypes = joinTypes(*in.EventTypes)
		}
		if in.Enabled != nil {
			switch {
			case *in.Enabled:
				e.DisabledAt, e.DisabledReason, e.FailingSince = nil, "", nil
			case e.DisabledAt == nil:
				e.DisabledAt, e.DisabledReason = &now, "disabled by "+by
			}
		}
		e.UpdatedAt, e.UpdatedBy = now, by
		updates := map[string]any{
			"url": e.URL, "description": e.Description, "event_types": e.EventTypes, "disabled_at": e.DisabledAt,
			"disabled_reason": e.DisabledReason, "failing_since": e.FailingSince, "updated_at": now, "updated_by": by}
		if (in.Enabled != nil && *in.Enabled) || e.URL != oldURL {
			resetEndpointBackoff(updates)
		}
		err = tx.Model(&WebhookEndpoint{}).Where("id = ?", e.ID).Updates(updates).Error
		if err != nil {
			return err
		}
		if e.DisabledAt != nil {
			if err := cancelWebhookMessages(tx, e.ID, now); err != nil {
				return err
			}
		}
		b, a := changed(before, webhookFields(e))
		if in.URL != nil && *in.URL != oldURL && a["url"] == nil {
			// Changed past the host: the redacted form cannot show it.
			b["url"], a["url"] = before["url"], RedactURL(e.URL)
		}
		if len(a) == 0 {
			return nil
		}
		return appendAudit(tx, auditOf(ws, ActionWebhookUpdated, TargetWebhook, strconv.FormatInt(e.ID, 10), b, a))
	})
	return e, err
}

// changed keeps the fields whose values differ.
func changed(before, after fields) (fields, fields) {
	b, a := fields{}, fields{}
	for k, v := range after {
		if fmt.Sprint(before[k]) != fmt.Sprint(v) {
			b[k], a[k] = before[k], v
		}
	}
	return b, a
}

// DeleteWebhook deletes an endpoint (admins only) with its messages and
// delivery log. Errors as UpdateWebhook.
func (s *Store) DeleteWebhook(ctx context.Context, workspaceName, by string, id int64) error {
	return s.adminTx(ctx, workspaceName, by, func(tx *gorm.DB, ws Workspace) error {
		e, err := findWebhook(tx, ws.ID, id)
		if err != nil {
			return err
		}
		for _, m := range []any{&WebhookAttempt{}, &WebhookMessage{}} {
			if err := tx.Where("endpoint_id = ?", e.ID).Delete(m).Error; err != nil {
				return err
			}
		}
		if err := tx.Delete(&WebhookEndpoint{}, e.ID).Error; err != nil {
			return err
		}
		return appendAudit(tx, auditOf(ws, ActionWebhookDeleted, TargetWebhook, strconv.FormatInt(e.ID, 10), webhookFields(e), nil))
	})
}

// SendWebhookTest queues a webhook.test event for one endpoint (admins
// only) and returns its message and event. ErrConflict if the endpoint is
// disabled or has MaxPendingTestEvents pending (admitTestEvent); otherwise
// errors as UpdateWebhook.
func (s *Store) SendWebhookTest(ctx context.Context, workspaceName, by string, id int64) (WebhookMessage, AuditEvent, error) {
	var msg WebhookMessage
	var ev AuditEvent
	err := s.adminTx(ctx, workspaceName, by, func(tx *gorm.DB, ws Workspace) error {
		e, err := findWebhook(tx, ws.ID, id)
		if err != nil {
			return err
		}
		if e.DisabledAt != nil {
			return codedf(ErrConflict, CodeWebhookDisabled, "webhook endpoint %d is disabled: enable it first (PUT with enabled: true)", id)
		}
		now := s.now()
		if err := admitTestEvent(tx, e, now); err != nil {
			return err
		}
		actor := ActorFrom(ctx)
		ev = auditOf(ws, ActionWebhookTest, TargetWebhook, strconv.FormatInt(e.ID, 10), nil, nil)
		ev.At, ev.ActorKind, ev.ActorSub, ev.RequestID = now, actor.Kind, actor.Sub, actor.RequestID
		payload, err := jsonString(ev)
		if err != nil {
			return err
		}
		webhookID, err := newWebhookID(now)
		if err != nil {
			return err
		}
		msg = WebhookMessage{WebhookID: webhookID, EndpointID: e.ID, EventType: ActionWebhookTest, Payload: payload, Status: WebhookPending,
			NextAttemptAt: now, CreatedAt: now, UpdatedAt: now}
		return tx.Omit("Endpoint").Create(&msg).Error
	})
	return msg, ev, err
}

// cancelWebhookMessages cancels an endpoint's pending messages (it was disabled).
func cancelWebhookMessages(tx *gorm.DB, endpointID int64, now time.Time) error {
	return tx.Model(&WebhookMessage{}).Where("endpoint_id = ? AND status = ?", endpointID, WebhookPending).
		Updates(map[string]any{"status": WebhookCancelled, "claimed_until": nil, "claim_token": "", "updated_at": now}).Error
}

// WebhookAttempts returns an endpoint's latest attempts, latest first.
func (s *Store) WebhookAttempts(ctx context.Context, endpointID int64, limit int) ([]WebhookAttempt, error) {
	out := []WebhookAttempt{}
	err := s.read.WithContext(ctx).Where("endpoint_id = ?", endpointID).Order("endpoint_id DESC, id DESC").Limit(limit).Find(&out).Error
	return out, err
}

// WebhookMessages returns an endpoint's messages, oldest first (tests and operators).
func (s *Store) WebhookMessages(ctx context.Context, endpointID int64) ([]WebhookMessage, error) {
	out := []WebhookMessage{}
	err := s.read.WithContext(ctx).Where("endpoint_id = ?", endpointID).Order("id").Find(&out).Error
	return out, err
}
