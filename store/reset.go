package store

import (
	"context"
	"fmt"

	"gorm.io/gorm"
)

// resetModels are the tables Reset empties, children before their parents
// (foreign keys are on). Left alone: the server's own keys (signing_keys,
// secrets: tokens already issued and cursors keep working, and a running
// issuer keeps its key) and whatever bookkeeping a migration tool keeps
// (goose_db_version), which no model names.
func resetModels() []any {
	return []any{&WebhookAttempt{}, &WebhookMessage{}, &WebhookEndpoint{}, &AuditEvent{}, &IdempotencyRecord{},
		&OutboxMessage{}, &EmailDomainRule{}, &APIKey{}, &ServiceAccount{}, &Invitation{}, &Member{}, &Workspace{}}
}

// Reset deletes every workspace and all they hold (members, invitations,
// keys, service accounts, webhooks, the outbox, audit events, idempotency
// keys) in one transaction: the database is as Migrate left it. For dev
// servers and tests (serve --dev, controlplanetest), never production.
func (s *Store) Reset(ctx context.Context) error {
	return s.inTx(ctx, func(tx *gorm.DB) error { return resetTx(tx) })
}

func resetTx(tx *gorm.DB) error {
	all := tx.Session(&gorm.Session{AllowGlobalUpdate: true})
	for _, m := range resetModels() {
		if err := all.Delete(m).Error; err != nil {
			return fmt.Errorf("reset: %w", err)
		}
	}
	return nil
}
