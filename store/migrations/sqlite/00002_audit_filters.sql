-- Version 2: indexes for the audit log's filtered pages. GET /v0/audit?actor=…
-- (or action=…) walks a workspace's events newest first (ListAudit: ORDER BY
-- workspace_id DESC, id DESC); through idx_audit_workspace alone it read every
-- event of the workspace until the page filled (0.51–0.56 s at 1,000,000
-- events). With the filter's column between workspace_id and id, a page reads
-- its own rows only, whatever the log's size.

-- +goose Up
CREATE INDEX IF NOT EXISTS idx_audit_workspace_actor ON audit_events (workspace_id, actor_sub, id);
CREATE INDEX IF NOT EXISTS idx_audit_workspace_action ON audit_events (workspace_id, action, id);

-- +goose Down
DROP INDEX IF EXISTS idx_audit_workspace_action;
DROP INDEX IF EXISTS idx_audit_workspace_actor;
