package server

import (
	"context"
	"strconv"

	"github.com/membership-api/controlplane/gen"
	"github.com/membership-api/controlplane/store"
)

// invitationTypeWorkspace is the only PendingInvitationRender type this server has.
const invitationTypeWorkspace = "workspace"

// ListAllPendingInvitations lists the caller's pending, unexpired invitations
// across workspaces (an empty list when there are none), whole or a page at
// a time, written as they are read (lists.go).
func (s *Server) ListAllPendingInvitations(ctx context.Context, req gen.ListAllPendingInvitationsRequestObject) (gen.ListAllPendingInvitationsResponseObject, error) {
	p, err := person(ctx, true)
	if err != nil {
		return nil, err
	}
	scope := store.NormalizeEmail(p.Email) + "\x00" + p.Sub
	pg, err := s.newPaging(ctx, listInvitations, scope, req.Params.Limit, req.Params.Cursor)
	if err != nil {
		return nil, err
	}
	return invitationsListResponse{listResponse{ctx: ctx, log: s.log, paging: pg,
		each: func(add func(any) error) (*store.ListPosition, error) {
			return s.members.EachPendingInvitationFor(ctx, p.Email, pg.after, pg.limit, func(v store.InvitationView, _ store.ListPosition) error {
				return add(toPendingInvitationRender(v))
			})
		}}}, nil
}

// AcceptWorkspaceInvitation makes the caller a member with the invited role.
func (s *Server) AcceptWorkspaceInvitation(ctx context.Context, req gen.AcceptWorkspaceInvitationRequestObject) (gen.AcceptWorkspaceInvitationResponseObject, error) {
	p, err := person(ctx, true)
	if err != nil {
		return nil, err
	}
	ws, err := s.members.Accept(ctx, req.WorkspaceName, p.Sub, p.Email)
	if err != nil {
		return nil, err
	}
	w := toWorkspace(ws)
	return gen.AcceptWorkspaceInvitation200JSONResponse{Email: &p.Email, Workspace: &w}, nil
}

// DeclineWorkspaceInvitation marks the caller's invitation declined.
func (s *Server) DeclineWorkspaceInvitation(ctx context.Context, req gen.DeclineWorkspaceInvitationRequestObject) (gen.DeclineWorkspaceInvitationResponseObject, error) {
	p, err := person(ctx, true)
	if err != nil {
		return nil, err
	}
	inv, ws, err := s.members.Decline(ctx, req.WorkspaceName, p.Sub, p.Email)
	if err != nil {
		return nil, err
	}
	return gen.DeclineWorkspaceInvitation200JSONResponse(toPendingInvitation(inv, ws.Name)), nil
}

// LeaveWorkspace removes the caller from the workspace.
func (s *Server) LeaveWorkspace(ctx context.Context, req gen.LeaveWorkspaceRequestObject) (gen.LeaveWorkspaceResponseObject, error) {
	p, err := person(ctx, false)
	if err != nil {
		return nil, err
	}
	ws, err := s.members.Leave(ctx, req.WorkspaceName, p.Sub)
	if err != nil {
		return nil, err
	}
	return gen.LeaveWorkspace200JSONResponse(toWorkspace(ws)), nil
}

func toWorkspace(ws store.Workspace) gen.Workspace {
	id := strconv.FormatInt(ws.ID, 10)
	return gen.Workspace{
		Id: &id, Name: &ws.Name, DisplayName: &ws.DisplayName,
		CreatedAt: timeString(ws.CreatedAt), UpdatedAt: timeString(ws.UpdatedAt),
		CreatedBy: &ws.CreatedBy, UpdatedBy: &ws.UpdatedBy,
	}
}

func toPendingInvitationRender(v store.InvitationView) gen.PendingInvitationRender {
	id := strconv.FormatInt(v.ID, 10)
	typ := invitationTypeWorkspace
	count := float32(v.MemberCount)
	inviter := gen.PendingInvitationRenderInvitedBy{Sub: &v.InvitedBy}
	if v.InviterEmail != "" {
		inviter.Email = &v.InviterEmail
	}
	return gen.PendingInvitationRender{
		InvitationId: &id,
		Type:         &typ,
		Email:        &v.Email,
		Role:         &v.Role,
		ExpiresAt:    timeString(v.ExpiresAt),
		InvitedAt:    timeString(v.CreatedAt),
		InvitedBy:    &inviter,
		Workspace:    &gen.PendingInvitationRenderWorkspace{Name: &v.WorkspaceName, DisplayName: &v.WorkspaceDisplayName},
		// Member emails are not shown to someone who is not a member yet.
		WorkspaceDetails: &gen.PendingInvitationWorkspaceDetails{UserNumber: &count},
	}
}
