-- Fair webhook delivery (store/webhook_queue.go): each endpoint's backoff,
-- shared by every dispatcher, and the indexes of the fair claim, which
-- replace idx_webhook_claim. In one transaction: SQLite has no
-- ADD COLUMN IF NOT EXISTS, and the transaction makes the version all or
-- nothing.

-- +goose Up
ALTER TABLE webhook_endpoints ADD COLUMN consecutive_failures integer NOT NULL DEFAULT 0;
ALTER TABLE webhook_endpoints ADD COLUMN backoff_until datetime;
CREATE INDEX IF NOT EXISTS idx_webhook_endpoint_queue ON webhook_messages (endpoint_id, next_attempt_at, id) WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS idx_webhook_claimed ON webhook_messages (endpoint_id) WHERE status = 'pending' AND claim_token <> '';
CREATE INDEX IF NOT EXISTS idx_webhook_pending_tests ON webhook_messages (endpoint_id) WHERE status = 'pending' AND event_id IS NULL;
DROP INDEX IF EXISTS idx_webhook_claim;

-- +goose Down
CREATE INDEX IF NOT EXISTS idx_webhook_claim ON webhook_messages (next_attempt_at, id) WHERE status = 'pending';
DROP INDEX IF EXISTS idx_webhook_pending_tests;
DROP INDEX IF EXISTS idx_webhook_claimed;
DROP INDEX IF EXISTS idx_webhook_endpoint_queue;
ALTER TABLE webhook_endpoints DROP COLUMN backoff_until;
ALTER TABLE webhook_endpoints DROP COLUMN consecutive_failures;
