-- Version 1: the schema as the last release before versioned migrations
-- (commit 8c6232f) left it: GORM's AutoMigrate of the models, the lists'
-- keyset indexes and the dropped indexes that others replaced. The
-- statements are what that release ran (copied from a fresh database's
-- `.schema`), each with IF NOT EXISTS: on a database that release
-- made, this version changes nothing and is only recorded; on a new one it
-- creates everything. The per-start work that release did is not repeated
-- here: it recounted workspaces' member_count at every start, so a
-- database it served has right counts (and this release keeps them in
-- every change), and the three indexes it dropped are dropped below once.

-- +goose Up
CREATE TABLE IF NOT EXISTS `workspaces` (`id` integer PRIMARY KEY AUTOINCREMENT,`name` text NOT NULL,`display_name` text NOT NULL DEFAULT '',`member_count` integer NOT NULL DEFAULT 0,`created_at` datetime NOT NULL,`updated_at` datetime NOT NULL,`created_by` text NOT NULL DEFAULT '',`updated_by` text NOT NULL DEFAULT '');
CREATE UNIQUE INDEX IF NOT EXISTS `idx_workspaces_name` ON `workspaces`(`name`);
CREATE TABLE IF NOT EXISTS `members` (`id` integer PRIMARY KEY AUTOINCREMENT,`workspace_id` integer NOT NULL,`sub` text NOT NULL,`email` text NOT NULL DEFAULT '',`role` text NOT NULL,`source` text NOT NULL DEFAULT '',`created_at` datetime NOT NULL,`updated_at` datetime NOT NULL,`created_by` text NOT NULL DEFAULT '',`updated_by` text NOT NULL DEFAULT '',CONSTRAINT `fk_members_workspace` FOREIGN KEY (`workspace_id`) REFERENCES `workspaces`(`id`) ON DELETE CASCADE);
CREATE INDEX IF NOT EXISTS `idx_members_sub` ON `members`(`sub`);
CREATE INDEX IF NOT EXISTS `idx_members_admins` ON `members`(`workspace_id`) WHERE role = 'admin';
CREATE UNIQUE INDEX IF NOT EXISTS `idx_members_workspace_email` ON `members`(`workspace_id`,`email`) WHERE email <> '';
CREATE UNIQUE INDEX IF NOT EXISTS `idx_members_workspace_sub` ON `members`(`workspace_id`,`sub`);
CREATE TABLE IF NOT EXISTS `invitations` (`id` integer PRIMARY KEY AUTOINCREMENT,`workspace_id` integer NOT NULL,`email` text NOT NULL,`role` text NOT NULL,`status` text NOT NULL,`invited_by` text NOT NULL,`expires_at` datetime NOT NULL,`created_at` datetime NOT NULL,`updated_at` datetime NOT NULL,`created_by` text NOT NULL DEFAULT '',`updated_by` text NOT NULL DEFAULT '',CONSTRAINT `fk_invitations_workspace` FOREIGN KEY (`workspace_id`) REFERENCES `workspaces`(`id`) ON DELETE CASCADE);
CREATE UNIQUE INDEX IF NOT EXISTS `idx_invitations_pending` ON `invitations`(`workspace_id`,`email`) WHERE status = 'pending';
CREATE TABLE IF NOT EXISTS `api_keys` (`id` integer PRIMARY KEY AUTOINCREMENT,`workspace_id` integer NOT NULL,`sub` text NOT NULL,`hash` blob NOT NULL,`hint` text NOT NULL,`revoked_at` datetime,`public_id` text NOT NULL DEFAULT '',`name` text NOT NULL DEFAULT '',`expires_in` text NOT NULL DEFAULT '',`expires_at` datetime,`created_at` datetime NOT NULL,`updated_at` datetime NOT NULL,`created_by` text NOT NULL DEFAULT '',`updated_by` text NOT NULL DEFAULT '',CONSTRAINT `fk_api_keys_workspace` FOREIGN KEY (`workspace_id`) REFERENCES `workspaces`(`id`) ON DELETE CASCADE);
CREATE UNIQUE INDEX IF NOT EXISTS `idx_api_keys_public_id` ON `api_keys`(`public_id`) WHERE public_id <> '';
CREATE UNIQUE INDEX IF NOT EXISTS `idx_api_keys_hash` ON `api_keys`(`hash`);
CREATE INDEX IF NOT EXISTS `idx_api_keys_workspace_sub` ON `api_keys`(`workspace_id`,`sub`);
CREATE TABLE IF NOT EXISTS `service_accounts` (`id` integer PRIMARY KEY AUTOINCREMENT,`workspace_id` integer NOT NULL,`client_id` text NOT NULL,`name` text NOT NULL,`description` text NOT NULL DEFAULT '',`secret_hash` blob NOT NULL,`created_at` datetime NOT NULL,`updated_at` datetime NOT NULL,`created_by` text NOT NULL DEFAULT '',`updated_by` text NOT NULL DEFAULT '',CONSTRAINT `fk_service_accounts_workspace` FOREIGN KEY (`workspace_id`) REFERENCES `workspaces`(`id`) ON DELETE CASCADE);
CREATE UNIQUE INDEX IF NOT EXISTS `idx_service_accounts_client_id` ON `service_accounts`(`client_id`);
CREATE UNIQUE INDEX IF NOT EXISTS `idx_service_accounts_workspace_name` ON `service_accounts`(`workspace_id`,`name`);
CREATE TABLE IF NOT EXISTS `outbox_messages` (`id` integer PRIMARY KEY AUTOINCREMENT,`invitation_id` integer NOT NULL,`status` text NOT NULL,`attempts` integer NOT NULL DEFAULT 0,`next_attempt_at` datetime NOT NULL,`claimed_until` datetime,`claim_token` text NOT NULL DEFAULT '',`last_error` text NOT NULL DEFAULT '',`sent_at` datetime,`requeued_at` datetime,`created_at` datetime NOT NULL,`updated_at` datetime NOT NULL,CONSTRAINT `fk_outbox_messages_invitation` FOREIGN KEY (`invitation_id`) REFERENCES `invitations`(`id`) ON DELETE CASCADE);
CREATE UNIQUE INDEX IF NOT EXISTS `idx_outbox_unsent` ON `outbox_messages`(`invitation_id`) WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS `idx_outbox_failed` ON `outbox_messages`(`updated_at`,`id`) WHERE status = 'failed';
CREATE INDEX IF NOT EXISTS `idx_outbox_claim` ON `outbox_messages`(`next_attempt_at`,`id`) WHERE status = 'pending';
CREATE TABLE IF NOT EXISTS `signing_keys` (`id` integer PRIMARY KEY AUTOINCREMENT,`generation` integer NOT NULL,`k_id` text NOT NULL,`algorithm` text NOT NULL,`private_key` blob NOT NULL,`sign_from` datetime NOT NULL,`created_at` datetime NOT NULL,`created_by` text NOT NULL DEFAULT '');
CREATE UNIQUE INDEX IF NOT EXISTS `idx_signing_keys_k_id` ON `signing_keys`(`k_id`);
CREATE UNIQUE INDEX IF NOT EXISTS `idx_signing_keys_generation` ON `signing_keys`(`generation`);
CREATE TABLE IF NOT EXISTS `email_domain_rules` (`workspace_id` integer,`kind` text,`domain` text,PRIMARY KEY (`workspace_id`,`kind`,`domain`),CONSTRAINT `fk_email_domain_rules_workspace` FOREIGN KEY (`workspace_id`) REFERENCES `workspaces`(`id`) ON DELETE CASCADE);
CREATE TABLE IF NOT EXISTS `idempotency_keys` (`id` integer PRIMARY KEY AUTOINCREMENT,`workspace` text NOT NULL,`caller` text NOT NULL,`idem_key` text NOT NULL,`request_hash` blob NOT NULL,`status` integer NOT NULL DEFAULT 0,`body` blob,`locked_until` datetime NOT NULL,`expires_at` datetime NOT NULL,`created_at` datetime NOT NULL);
CREATE INDEX IF NOT EXISTS `idx_idempotency_expiry` ON `idempotency_keys`(`expires_at`);
CREATE UNIQUE INDEX IF NOT EXISTS `idx_idempotency_scope` ON `idempotency_keys`(`workspace`,`caller`,`idem_key`);
CREATE TABLE IF NOT EXISTS `audit_events` (`id` integer PRIMARY KEY AUTOINCREMENT,`workspace_id` integer NOT NULL,`workspace` text NOT NULL,`at` datetime NOT NULL,`actor_kind` text NOT NULL,`actor_sub` text NOT NULL DEFAULT '',`action` text NOT NULL,`target_type` text NOT NULL,`target_id` text NOT NULL,`before` text NOT NULL DEFAULT '',`after` text NOT NULL DEFAULT '',`request_id` text NOT NULL DEFAULT '');
CREATE INDEX IF NOT EXISTS `idx_audit_workspace` ON `audit_events`(`workspace_id`,`id`);
CREATE TABLE IF NOT EXISTS `webhook_endpoints` (`id` integer PRIMARY KEY AUTOINCREMENT,`workspace_id` integer NOT NULL,`url` text NOT NULL,`description` text NOT NULL DEFAULT '',`event_types` text NOT NULL DEFAULT '',`secret` text NOT NULL,`disabled_at` datetime,`disabled_reason` text NOT NULL DEFAULT '',`failing_since` datetime,`created_at` datetime NOT NULL,`updated_at` datetime NOT NULL,`created_by` text NOT NULL DEFAULT '',`updated_by` text NOT NULL DEFAULT '',CONSTRAINT `fk_webhook_endpoints_workspace` FOREIGN KEY (`workspace_id`) REFERENCES `workspaces`(`id`) ON DELETE CASCADE);
CREATE INDEX IF NOT EXISTS `idx_webhook_endpoints_workspace` ON `webhook_endpoints`(`workspace_id`);
CREATE INDEX IF NOT EXISTS `idx_webhook_endpoints_enabled` ON `webhook_endpoints`(`id`) WHERE disabled_at IS NULL;
CREATE TABLE IF NOT EXISTS `webhook_messages` (`id` integer PRIMARY KEY AUTOINCREMENT,`webhook_id` text NOT NULL DEFAULT '',`endpoint_id` integer NOT NULL,`event_id` integer,`event_type` text NOT NULL,`payload` text NOT NULL DEFAULT '',`status` text NOT NULL,`attempts` integer NOT NULL DEFAULT 0,`next_attempt_at` datetime NOT NULL,`claimed_until` datetime,`claim_token` text NOT NULL DEFAULT '',`last_error` text NOT NULL DEFAULT '',`delivered_at` datetime,`created_at` datetime NOT NULL,`updated_at` datetime NOT NULL,CONSTRAINT `fk_webhook_messages_endpoint` FOREIGN KEY (`endpoint_id`) REFERENCES `webhook_endpoints`(`id`) ON DELETE CASCADE);
CREATE INDEX IF NOT EXISTS `idx_webhook_messages_event` ON `webhook_messages`(`event_id`);
CREATE INDEX IF NOT EXISTS `idx_webhook_messages_endpoint` ON `webhook_messages`(`endpoint_id`);
CREATE INDEX IF NOT EXISTS `idx_webhook_claim` ON `webhook_messages`(`next_attempt_at`,`id`) WHERE status = 'pending';
CREATE TABLE IF NOT EXISTS `webhook_attempts` (`id` integer PRIMARY KEY AUTOINCREMENT,`endpoint_id` integer NOT NULL,`message_id` integer NOT NULL,`webhook_id` text NOT NULL DEFAULT '',`event_type` text NOT NULL,`attempt` integer NOT NULL,`at` datetime NOT NULL,`status_code` integer NOT NULL,`latency_ms` integer NOT NULL,`outcome` text NOT NULL,`error` text NOT NULL DEFAULT '',CONSTRAINT `fk_webhook_attempts_endpoint` FOREIGN KEY (`endpoint_id`) REFERENCES `webhook_endpoints`(`id`) ON DELETE CASCADE);
CREATE INDEX IF NOT EXISTS `idx_webhook_attempts_endpoint` ON `webhook_attempts`(`endpoint_id`,`id`);
CREATE TABLE IF NOT EXISTS `secrets` (`name` text,`value` blob NOT NULL,PRIMARY KEY (`name`));
CREATE INDEX IF NOT EXISTS idx_members_list ON members (workspace_id, created_at, id);
CREATE INDEX IF NOT EXISTS idx_invitations_pending_list ON invitations (workspace_id, created_at, id) WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS idx_invitations_pending_email_list ON invitations (email, created_at, id) WHERE status = 'pending';

-- Made by releases before 8c6232f, replaced by indexes that start with the
-- same columns (a no-op on a database 8c6232f migrated).
DROP INDEX IF EXISTS idx_api_keys_workspace_id;
DROP INDEX IF EXISTS idx_outbox_due;
DROP INDEX IF EXISTS idx_invitations_email;

-- +goose Down
DROP TABLE IF EXISTS secrets;
DROP TABLE IF EXISTS webhook_attempts;
DROP TABLE IF EXISTS webhook_messages;
DROP TABLE IF EXISTS webhook_endpoints;
DROP TABLE IF EXISTS audit_events;
DROP TABLE IF EXISTS idempotency_keys;
DROP TABLE IF EXISTS email_domain_rules;
DROP TABLE IF EXISTS signing_keys;
DROP TABLE IF EXISTS outbox_messages;
DROP TABLE IF EXISTS service_accounts;
DROP TABLE IF EXISTS api_keys;
DROP TABLE IF EXISTS invitations;
DROP TABLE IF EXISTS members;
DROP TABLE IF EXISTS workspaces;
