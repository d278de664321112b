package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/membership-api/controlplane/gen"
	"github.com/membership-api/controlplane/store"
)

// BulkInviteWorkspaceUsers invites up to 1,000 emails at once (admins
// only) and answers every row as a single invite of its email would have
// (docs/api/bulk-invitations.md).
func (s *Server) BulkInviteWorkspaceUsers(ctx context.Context, req gen.BulkInviteWorkspaceUsersRequestObject) (gen.BulkInviteWorkspaceUsersResponseObject, error) {
	if req.Body == nil {
		return nil, newError(http.StatusBadRequest, KindInvalidRequest, "a body {\"emails\": [...]} is required")
	}
	role := deref(req.Body.Role)
	switch role {
	case "":
		role = store.RoleMember
	case store.RoleAdmin, store.RoleMember:
	default:
		return nil, newError(http.StatusBadRequest, KindInvalidRole, `role must be "admin" or "member"`)
	}
	p, workspace, err := s.workspaceName(ctx, deref(req.Params.XBlaxelWorkspace))
	if err != nil {
		return nil, err
	}
	// One read up front: a caller who may not invite at all gets that
	// answer once (not 1,000 times), before any of the workspace's
	// invitation quota is spent. The store checks again in each write.
	m, err := s.workspaces.Membership(ctx, workspace, p.Sub)
	if err != nil {
		return nil, err
	}
	if m.Role != store.RoleAdmin {
		return nil, newError(http.StatusForbidden, store.CodeNotAdmin, "only workspace admins may invite")
	}
	run := func() (any, error) { return s.bulkInvite(ctx, workspace, p.Sub, role, req.Body.Emails) }
	if req.Params.IdempotencyKey == nil {
		answer, err := run()
		if err != nil {
			return nil, err
		}
		return gen.BulkInviteWorkspaceUsers200JSONResponse{Body: answer.(gen.BulkInviteResponse)}, nil
	}
	answer, replay, err := s.idempotent(ctx, *req.Params.IdempotencyKey, workspace, p.Sub, "BulkInviteWorkspaceUsers", req.Body, run)
	switch {
	case err != nil:
		return nil, err
	case replay != nil:
		return replay, nil
	}
	return gen.BulkInviteWorkspaceUsers200JSONResponse{Body: answer.(gen.BulkInviteResponse)}, nil
}

// bulkInvite answers every row: rows a single invite's request validation
// would refuse (a malformed email), repeats of an earlier row's email and
// rows over the workspace's invitation quota are answered here; the rest
// are invited together (store.InviteMany) and answered as Invite answered.
// When the database could not be reached and no row was invited, the whole
// request is answered 503 (its error): retrying it is what the client
// should do, and no row can tell it more.
func (s *Server) bulkInvite(ctx context.Context, workspace, caller, role string, emails []string) (gen.BulkInviteResponse, error) {
	results := make([]gen.BulkInviteResult, len(emails))
	params := make([]store.InviteParams, 0, len(emails))
	rows := make([]int, 0, len(emails))
	firstRow := make(map[string]int, len(emails))
	rule := store.EmailOptions{AllowLocalDomains: s.cfg.AllowLocalEmailDomains}
	for i, email := range emails {
		results[i].Email = email
		if err := store.CheckEmail(email, rule); err != nil {
			s.rowError(ctx, &results[i], newError(http.StatusBadRequest, KindInvalidEmail, email+": "+err.Error()))
			continue
		}
		normal := store.NormalizeEmail(email)
		if first, seen := firstRow[normal]; seen {
			s.rowError(ctx, &results[i], newError(http.StatusBadRequest, KindDuplicateEmail,
				fmt.Sprintf("%s is the email of row %d (emails are compared case-insensitively): invited once", email, first)))
			continue
		}
		firstRow[normal] = i
		if apiErr := s.takeInviteQuota(ctx, workspace); apiErr != nil {
			s.rowError(ctx, &results[i], apiErr)
			continue
		}
		params = append(params, store.InviteParams{Workspace: workspace, Caller: caller, Email: email, Role: role, TTL: s.cfg.InviteTTL})
		rows = append(rows, i)
	}
	invited := false
	var unavailable *store.UnavailableError
	for j, res := range s.members.InviteMany(ctx, params) {
		row := &results[rows[j]]
		if res.Err != nil {
			apiErr := toAPIError(res.Err)
			var u *store.UnavailableError
			if apiErr.Status == http.StatusServiceUnavailable && errors.As(apiErr.Cause, &u) {
				unavailable = u // logged once per request, below, and once per outage there
			} else if apiErr.Status >= http.StatusInternalServerError {
				s.log.ErrorContext(ctx, "bulk invite: a row failed", "row", rows[j], "err", res.Err)
			}
			s.rowError(ctx, row, apiErr)
			continue
		}
		inv := toPendingInvitation(res.Invitation, workspace)
		row.Status, row.Invitation, invited = http.StatusOK, &inv, true
	}
	if invited && s.cfg.MailQueued != nil {
		s.cfg.MailQueued()
	}
	if unavailable != nil {
		if !invited {
			return gen.BulkInviteResponse{}, unavailable
		}
		s.outages.answered(ctx, unavailable, true)
	}
	return gen.BulkInviteResponse{Results: results}, nil
}

// rowError answers a row with the error a single invite would have had.
func (s *Server) rowError(ctx context.Context, row *gen.BulkInviteResult, apiErr *APIError) {
	body := errorBody(ctx, apiErr)
	row.Status, row.Error = apiErr.Status, &body
}

// takeInviteQuota spends one invitation of the workspace's quota (the one
// single invites count, docs/api/limits.md), or returns the 429 a single
// invite over it would get. A workspace over it is refused from the local
// gate, which a refused row closes, as for single invites; a limiter that
// fails lets the row through, as the middleware does.
func (s *Server) takeInviteQuota(ctx context.Context, workspace string) *APIError {
	l := s.limiter
	if l == nil || l.cfg.WorkspaceInvites.Off() {
		return nil
	}
	q := l.cfg.WorkspaceInvites
	wait := l.closed(q, workspace)
	if wait == 0 {
		res, err := l.cfg.Limiter.Take(ctx, workspace, q)
		if err != nil {
			s.log.WarnContext(ctx, "rate limit check failed, row allowed", "quota", q.Name, "err", err)
			return nil
		}
		if res.Allowed {
			return nil
		}
		wait = res.UntilNext()
		l.gate.Close(q, workspace, wait, time.Now())
	}
	apiErr := newError(http.StatusTooManyRequests, "", fmt.Sprintf("rate limit reached: at most %d %s %s; retry in %d s",
		q.Rate, quotaWhat[q.Name], per(q.Period), ceilSeconds(wait)))
	apiErr.quota = q.Name
	return apiErr
}
