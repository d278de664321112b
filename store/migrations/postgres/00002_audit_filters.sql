-- Version 2: indexes for the audit log's filtered pages. GET /v0/audit?actor=…
-- (or action=…) walks a workspace's events newest first (ListAudit: ORDER BY
-- workspace_id DESC, id DESC); through idx_audit_workspace alone it read every
-- event of the workspace until the page filled (0.51–0.56 s at 1,000,000
-- events). With the filter's column and workspace_id before id, a page reads
-- its own rows only, whatever the log's size. The filter's column comes
-- first so that an unfiltered page cannot take these indexes (SQLite did,
-- with workspace_id first, and sorted the whole workspace).
--
-- Built CONCURRENTLY, outside a transaction: audit_events takes a row with
-- every audited change, and a plain CREATE INDEX would block those writes
-- (the previous release's too, during a rolling upgrade) for the whole
-- build. If the build is cut short, PostgreSQL leaves an INVALID index that
-- IF NOT EXISTS would then skip: docs/operations/upgrading.md says how to
-- drop it and run migrate again.

-- +goose NO TRANSACTION
-- +goose Up
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_audit_actor_workspace ON audit_events (actor_sub, workspace_id, id);
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_audit_action_workspace ON audit_events (action, workspace_id, id);

-- +goose Down
DROP INDEX CONCURRENTLY IF EXISTS idx_audit_action_workspace;
DROP INDEX CONCURRENTLY IF EXISTS idx_audit_actor_workspace;
