package server

import (
	"context"
	"net/http"
	"strconv"
	"strings"

	"github.com/membership-api/controlplane/auth"
	"github.com/membership-api/controlplane/gen"
	"github.com/membership-api/controlplane/store"
)

// ListWorkspaceUsers lists members, then pending invitations (any member
// may), whole or a page at a time, written as they are read (lists.go).
func (s *Server) ListWorkspaceUsers(ctx context.Context, req gen.ListWorkspaceUsersRequestObject) (gen.ListWorkspaceUsersResponseObject, error) {
	c, err := s.workspaceCaller(ctx, req.Params.XBlaxelWorkspace)
	if err != nil {
		return nil, err
	}
	scope := strconv.FormatInt(c.Workspace.ID, 10) + "\x00" + c.Principal.Sub
	pg, err := s.newPaging(ctx, listUsers, scope, req.Params.Limit, req.Params.Cursor)
	if err != nil {
		return nil, err
	}
	return usersListResponse{listResponse{ctx: ctx, log: s.log, paging: pg,
		each: func(add func(any) error) (*store.ListPosition, error) {
			return s.members.EachUser(ctx, c.Workspace.Name, pg.after, pg.limit, func(u store.UserEntry, _ store.ListPosition) error {
				return add(toWorkspaceUser(u))
			})
		}}}, nil
}

// RemoveWorkspaceUser removes a member or revokes a pending invitation (admins only).
func (s *Server) RemoveWorkspaceUser(ctx context.Context, req gen.RemoveWorkspaceUserRequestObject) (gen.RemoveWorkspaceUserResponseObject, error) {
	// The admin check happens in the store, under the workspace lock.
	p, workspace, err := s.workspaceName(ctx, deref(req.Params.XBlaxelWorkspace))
	if err != nil {
		return nil, err
	}
	if err := s.members.RemoveUser(ctx, workspace, p.Sub, subOrEmail(req.SubOrEmail)); err != nil {
		return nil, err
	}
	return gen.RemoveWorkspaceUser200Response{}, nil
}

// UpdateWorkspaceUserRole changes the role of a member or pending invitation (admins only).
func (s *Server) UpdateWorkspaceUserRole(ctx context.Context, req gen.UpdateWorkspaceUserRoleRequestObject) (gen.UpdateWorkspaceUserRoleResponseObject, error) {
	// The admin check happens in the store, under the workspace lock.
	p, workspace, err := s.workspaceName(ctx, deref(req.Params.XBlaxelWorkspace))
	if err != nil {
		return nil, err
	}
	u, err := s.members.UpdateRole(ctx, workspace, p.Sub, subOrEmail(req.SubOrEmail), req.Body.Role)
	if err != nil {
		return nil, err
	}
	return gen.UpdateWorkspaceUserRole200JSONResponse(toWorkspaceUser(u)), nil
}

// subOrEmail trims what clients may send around the path parameter; an
// empty value cannot reach here (the router needs a segment).
func subOrEmail(v string) string { return strings.TrimSpace(v) }

func toWorkspaceUser(u store.UserEntry) gen.WorkspaceUser {
	w := gen.WorkspaceUser{Email: &u.Email, Role: &u.Role, Accepted: &u.Accepted, Expired: &u.Expired}
	if u.Sub != "" {
		w.Sub = &u.Sub
	}
	if u.Source != "" {
		src := gen.WorkspaceUserSource(u.Source)
		w.Source = &src
	}
	return w
}

// person returns the caller of an operation that acts on a person's own
// invitations or memberships across workspaces. API keys are refused: a key
// belongs to one workspace and acts for a member inside it only. With
// needEmail, the token must carry the email invitations are matched by, and
// that email must be verified: whoever can show an invitation's address
// can join the workspace, so an address the IdP says it has not checked
// (a self-registered account) must not be enough.
func person(ctx context.Context, needEmail bool) (*auth.Principal, error) {
	p := PrincipalFrom(ctx)
	switch {
	case p == nil:
		return nil, newError(http.StatusUnauthorized, "", "missing credentials")
	case p.BoundWorkspace != "":
		return nil, newError(http.StatusForbidden, KindPersonRequired, "API keys and service accounts act inside their workspace only: use a user's token for invitations addressed to a person and for leaving a workspace")
	case needEmail && p.Email == "":
		return nil, newError(http.StatusForbidden, KindEmailRequired, "the token has no email claim: invitations are matched by the caller's email")
	case needEmail && !p.EmailVerified:
		return nil, newError(http.StatusForbidden, KindEmailNotVerified, "the token's email is not verified (email_verified is not true): verify the address with your identity provider, then get a new token")
	}
	return p, nil
}
