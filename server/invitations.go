package server

import (
	"context"
	"net/http"
	"time"

	"github.com/membership-api/controlplane/gen"
	"github.com/membership-api/controlplane/store"
)

// InviteWorkspaceUser invites an email to the caller's workspace (admins only).
func (s *Server) InviteWorkspaceUser(ctx context.Context, req gen.InviteWorkspaceUserRequestObject) (gen.InviteWorkspaceUserResponseObject, error) {
	// The seed schema does not mark email required, so the validator lets {} through.
	if req.Body == nil || req.Body.Email == nil || *req.Body.Email == "" {
		return nil, newError(http.StatusBadRequest, KindInvalidEmail, "email is required")
	}
	// The hot path: the membership and admin checks happen inside the
	// store's transaction instead of a separate lookup.
	p, workspace, err := s.workspaceName(ctx, deref(req.Params.XBlaxelWorkspace))
	if err != nil {
		return nil, err
	}
	if req.Params.IdempotencyKey == nil { // the hot path: nothing more than the invite
		inv, err := s.invite(ctx, workspace, p.Sub, *req.Body.Email)
		if err != nil {
			return nil, err
		}
		return gen.InviteWorkspaceUser200JSONResponse{Body: inv}, nil
	}
	inv, replay, err := s.idempotent(ctx, *req.Params.IdempotencyKey, workspace, p.Sub, "InviteWorkspaceUser", req.Body,
		func() (any, error) { return s.invite(ctx, workspace, p.Sub, *req.Body.Email) })
	switch {
	case err != nil:
		return nil, err
	case replay != nil:
		return replay, nil
	}
	return gen.InviteWorkspaceUser200JSONResponse{Body: inv.(gen.PendingInvitation)}, nil
}

// invite is one invitation, answered as the API shows it.
func (s *Server) invite(ctx context.Context, workspace, caller, email string) (gen.PendingInvitation, error) {
	inv, err := s.members.Invite(ctx, store.InviteParams{
		Workspace: workspace,
		Caller:    caller,
		Email:     email,
		Role:      store.RoleMember,
		TTL:       s.cfg.InviteTTL,
	})
	if err != nil {
		return gen.PendingInvitation{}, err
	}
	if s.cfg.MailQueued != nil {
		s.cfg.MailQueued()
	}
	return toPendingInvitation(inv, workspace), nil
}

func toPendingInvitation(inv store.Invitation, workspace string) gen.PendingInvitation {
	return gen.PendingInvitation{
		Email:     &inv.Email,
		Role:      &inv.Role,
		InvitedBy: &inv.InvitedBy,
		Workspace: &workspace,
		ExpiresAt: timeString(inv.ExpiresAt),
		CreatedAt: timeString(inv.CreatedAt),
		UpdatedAt: timeString(inv.UpdatedAt),
		CreatedBy: &inv.CreatedBy,
		UpdatedBy: &inv.UpdatedBy,
	}
}

// timeString renders times as upstream does: RFC 3339 in UTC.
func timeString(t time.Time) *string {
	s := t.UTC().Format(time.RFC3339)
	return &s
}
