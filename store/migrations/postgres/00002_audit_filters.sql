-- Version 2: indexes for the audit log's filtered pages. GET /v0/audit?actor=…
-- (or action=…) walks a workspace's events newest first (ListAudit: ORDER BY
-- workspace_id DESC, id DESC); through idx_audit_workspace alone it read every
-- event of the workspace until the page filled (0.51–0.56 s at 1,000,000
-- events). With the filter's column between workspace_id and id, a page reads
-- its own rows only, whatever the log's size.
--
-- Built CONCURRENTLY, outside a transaction: audit_events takes a row with
-- every audited change, and a plain CREATE INDEX would block those writes
-- (the previous release's too, during a rolling upgrade) for the whole
-- build. If the build is cut short, PostgreSQL leaves an INVALID index that
-- IF NOT EXISTS would then skip: docs/operations/upgrading.md says how to
-- drop it and run migrate again.

-- +goose NO TRANSACTION
-- +goose Up
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_audit_workspace_actor ON audit_events (workspace_id, actor_sub, id);
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_audit_workspace_action ON audit_events (workspace_id, action, id);

-- +goose Down
DROP INDEX CONCURRENTLY IF EXISTS idx_audit_workspace_action;
DROP INDEX CONCURRENTLY IF EXISTS idx_audit_workspace_actor;
