-- Fair webhook delivery (store/webhook_queue.go): each endpoint's backoff,
-- shared by every dispatcher, and the indexes of the fair claim, which
-- replace idx_webhook_claim. Every statement is idempotent, so a run cut
-- short is finished by the next `migrate`.
--
-- The columns have constant defaults (PostgreSQL adds them without
-- rewriting the table); the indexes are built CONCURRENTLY, outside a
-- transaction, so webhook writes (the previous release's too, during a
-- rolling upgrade) go on during the build. Dropping idx_webhook_claim does
-- not break the previous release: its claim still answers, by a scan of
-- pending messages, until every replica runs this one.

-- +goose NO TRANSACTION
-- +goose Up
ALTER TABLE webhook_endpoints ADD COLUMN IF NOT EXISTS consecutive_failures bigint NOT NULL DEFAULT 0;
ALTER TABLE webhook_endpoints ADD COLUMN IF NOT EXISTS backoff_until timestamptz;
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_webhook_endpoint_queue ON webhook_messages (endpoint_id, next_attempt_at, id) WHERE status = 'pending';
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_webhook_claimed ON webhook_messages (endpoint_id) WHERE status = 'pending' AND claim_token <> '';
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_webhook_pending_tests ON webhook_messages (endpoint_id) WHERE status = 'pending' AND event_id IS NULL;
DROP INDEX CONCURRENTLY IF EXISTS idx_webhook_claim;

-- +goose Down
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_webhook_claim ON webhook_messages (next_attempt_at, id) WHERE status = 'pending';
DROP INDEX CONCURRENTLY IF EXISTS idx_webhook_pending_tests;
DROP INDEX CONCURRENTLY IF EXISTS idx_webhook_claimed;
DROP INDEX CONCURRENTLY IF EXISTS idx_webhook_endpoint_queue;
ALTER TABLE webhook_endpoints DROP COLUMN IF EXISTS backoff_until;
ALTER TABLE webhook_endpoints DROP COLUMN IF EXISTS consecutive_failures;
