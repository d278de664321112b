package server

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/membership-api/controlplane/gen"
	"github.com/membership-api/controlplane/store"
	"github.com/membership-api/controlplane/webhook"
)

// listAudit names the audit list in its cursors' MAC.
const listAudit = "audit"

// defaultAuditLimit is a page's size without ?limit.
const defaultAuditLimit = 100

// requireAdminCaller resolves the request's workspace and checks that the
// caller is its admin (the audit log and webhooks are admins' only).
func (s *Server) requireAdminCaller(ctx context.Context, header *string) (caller, error) {
	c, err := s.workspaceCaller(ctx, header)
	if err != nil {
		return caller{}, err
	}
	if c.Role != store.RoleAdmin {
		return caller{}, newError(http.StatusForbidden, store.CodeNotAdmin, "only workspace admins may read the audit log and manage webhooks")
	}
	return c, nil
}

// ListAuditEvents answers a page of the workspace's audit log, newest
// first. The cursor is the last event's id, signed for this workspace,
// caller and filters (a cursor used with other filters is a 400).
func (s *Server) ListAuditEvents(ctx context.Context, req gen.ListAuditEventsRequestObject) (gen.ListAuditEventsResponseObject, error) {
	c, err := s.requireAdminCaller(ctx, req.Params.XBlaxelWorkspace)
	if err != nil {
		return nil, err
	}
	p := req.Params
	f := store.AuditFilter{WorkspaceID: c.Workspace.ID, Action: deref(p.Action), ActorSub: deref(p.Actor), Limit: defaultAuditLimit}
	if p.Since != nil {
		f.Since = *p.Since
	}
	if p.Until != nil {
		f.Until = *p.Until
	}
	if p.Limit != nil {
		f.Limit = *p.Limit
	}
	q := url.Values{}
	for k, v := range map[string]string{"action": f.Action, "actor": f.ActorSub, "since": timeParam(f.Since), "until": timeParam(f.Until)} {
		if v != "" {
			q.Set(k, v)
		}
	}
	scope := strconv.FormatInt(c.Workspace.ID, 10) + "\x00" + c.Principal.Sub + "\x00" + q.Encode()
	if p.Cursor != nil {
		pos, err := decodeCursor(s.cursorKey, listAudit, scope, *p.Cursor)
		if err != nil {
			return nil, err
		}
		f.BeforeID = pos.ID
	}
	// One more than the page tells whether a next page exists.
	f.Limit++
	events, err := s.audit.ListAudit(ctx, f)
	if err != nil {
		return nil, err
	}
	out := gen.ListAuditEvents200JSONResponse{Body: make([]gen.AuditEvent, 0, len(events))}
	if len(events) == f.Limit {
		events = events[:f.Limit-1]
		q.Set("limit", strconv.Itoa(f.Limit-1))
		q.Set("cursor", encodeCursor(s.cursorKey, listAudit, scope, store.ListPosition{ID: events[len(events)-1].ID}))
		link := fmt.Sprintf("<%s/audit?%s>; rel=\"next\"", APIBasePath, q.Encode())
		out.Headers.Link = &link
	}
	for _, e := range events {
		out.Body = append(out.Body, webhook.AuditEvent(e, 0))
	}
	return out, nil
}

func timeParam(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339Nano)
}
