-- Version 2: indexes for the audit log's filtered pages. GET /v0/audit?actor=…
-- (or action=…) walks a workspace's events newest first (ListAudit: ORDER BY
-- workspace_id DESC, id DESC); through idx_audit_workspace alone it read every
-- event of the workspace until the page filled (0.51–0.56 s at 1,000,000
-- events). With the filter's column and workspace_id before id, a page reads
-- its own rows only, whatever the log's size. The filter's column comes
-- first so that an unfiltered page cannot take these indexes (SQLite did,
-- with workspace_id first, and sorted the whole workspace).

-- +goose Up
CREATE INDEX IF NOT EXISTS idx_audit_actor_workspace ON audit_events (actor_sub, workspace_id, id);
CREATE INDEX IF NOT EXISTS idx_audit_action_workspace ON audit_events (action, workspace_id, id);

-- +goose Down
DROP INDEX IF EXISTS idx_audit_action_workspace;
DROP INDEX IF EXISTS idx_audit_actor_workspace;
