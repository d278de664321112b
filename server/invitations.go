package server

import (
	"context"
	"net/http"
	"time"

	"controlplane/gen"
	"controlplane/store"
)

// InviteWorkspaceUser invites an email to the caller's workspace (admins only).
func (s *Server) InviteWorkspaceUser(ctx context.Context, req gen.InviteWorkspaceUserRequestObject) (gen.InviteWorkspaceUserResponseObject, error) {
	// The seed schema does not mark email required, so the validator lets {} through.
	if req.Body == nil || req.Body.Email == nil || *req.Body.Email == "" {
		return nil, newError(http.StatusBadRequest, "email is required")
	}
	c, err := s.workspaceCaller(ctx, store.RoleAdmin)
	if err != nil {
		return nil, err
	}
	inv, err := s.store.Invite(ctx, store.InviteParams{
		WorkspaceID: c.Workspace.ID,
		Email:       *req.Body.Email,
		Role:        store.RoleMember,
		InvitedBy:   c.Sub,
		TTL:         s.cfg.InviteTTL,
	})
	if err != nil {
		return nil, err
	}
	if s.cfg.MailQueued != nil {
		s.cfg.MailQueued()
	}
	return gen.InviteWorkspaceUser200JSONResponse(toPendingInvitation(inv, c.Workspace.Name)), nil
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
