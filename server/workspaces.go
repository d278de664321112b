package server

import (
	"context"
	"errors"
	"net/http"

	"github.com/membership-api/controlplane/gen"
	"github.com/membership-api/controlplane/store"
)

// The workspace operations. Membership decides visibility as in
// the /users operations: a workspace the caller is not in is answered 404
// workspace_not_found like one that does not exist; an API key sees its own
// workspace only. The admin checks of the changes happen in the store,
// under the workspace's lock.

// ListWorkspaces lists the caller's workspaces by name; an API key's or a
// service account's is its own workspace alone.
func (s *Server) ListWorkspaces(ctx context.Context, _ gen.ListWorkspacesRequestObject) (gen.ListWorkspacesResponseObject, error) {
	p := PrincipalFrom(ctx)
	if p == nil {
		return nil, newError(http.StatusUnauthorized, "", "missing credentials")
	}
	out := gen.ListWorkspaces200JSONResponse{}
	if p.BoundWorkspace != "" {
		// Read again rather than answer the key's cached copy: the display
		// name may have changed since the key was checked.
		m, err := s.workspaces.Membership(ctx, p.BoundWorkspace, p.Sub)
		if errors.Is(err, store.ErrNotFound) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		return append(out, toWorkspace(m.Workspace)), nil
	}
	workspaces, err := s.workspaces.WorkspacesOf(ctx, p.Sub)
	if err != nil {
		return nil, err
	}
	for _, ws := range workspaces {
		out = append(out, toWorkspace(ws))
	}
	return out, nil
}

// CreateWorkspace creates a workspace whose first admin is the caller, a
// person: the name is required (the store's rule), displayName optional,
// the other fields of upstream's Workspace are ignored.
func (s *Server) CreateWorkspace(ctx context.Context, req gen.CreateWorkspaceRequestObject) (gen.CreateWorkspaceResponseObject, error) {
	if p := PrincipalFrom(ctx); p != nil && p.BoundWorkspace != "" {
		return nil, newError(http.StatusForbidden, KindPersonRequired, "API keys and service accounts act inside their workspace only: use a person's token to create a workspace")
	}
	// The email becomes the admin member's, as invitations match members by it.
	p, err := person(ctx, true)
	if err != nil {
		return nil, err
	}
	var name, displayName string
	if req.Body != nil {
		name, displayName = deref(req.Body.Name), deref(req.Body.DisplayName)
	}
	ws, err := s.workspaces.CreateWorkspace(ctx, store.NewWorkspace{Name: name, DisplayName: displayName, AdminSub: p.Sub, AdminEmail: p.Email},
		store.EmailOptions{AllowLocalDomains: s.cfg.AllowLocalEmailDomains})
	if err != nil {
		return nil, err
	}
	return gen.CreateWorkspace200JSONResponse(toWorkspace(ws)), nil
}

// GetWorkspace answers a workspace to its members. countResources is
// accepted and ignored: this server holds no resources to count.
func (s *Server) GetWorkspace(ctx context.Context, req gen.GetWorkspaceRequestObject) (gen.GetWorkspaceResponseObject, error) {
	p, name, err := s.workspaceName(ctx, req.WorkspaceName)
	if err != nil {
		return nil, err
	}
	m, err := s.workspaces.Membership(ctx, name, p.Sub)
	if err != nil {
		return nil, err
	}
	return gen.GetWorkspace200JSONResponse(toWorkspace(m.Workspace)), nil
}

// UpdateWorkspace changes a workspace's displayName (admins only); the
// other fields of the body are ignored (the name cannot change, upstream
// says; the rest this server does not hold).
func (s *Server) UpdateWorkspace(ctx context.Context, req gen.UpdateWorkspaceRequestObject) (gen.UpdateWorkspaceResponseObject, error) {
	p, name, err := s.workspaceName(ctx, req.WorkspaceName)
	if err != nil {
		return nil, err
	}
	var displayName *string
	if req.Body != nil {
		displayName = req.Body.DisplayName
	}
	ws, err := s.workspaces.UpdateWorkspace(ctx, name, p.Sub, displayName)
	if err != nil {
		return nil, err
	}
	return gen.UpdateWorkspace200JSONResponse(toWorkspace(ws)), nil
}

// DeleteWorkspace deletes a workspace with its members, invitations, API
// keys and queued emails (admins only), and answers it as it was.
func (s *Server) DeleteWorkspace(ctx context.Context, req gen.DeleteWorkspaceRequestObject) (gen.DeleteWorkspaceResponseObject, error) {
	p, name, err := s.workspaceName(ctx, req.WorkspaceName)
	if err != nil {
		return nil, err
	}
	ws, err := s.workspaces.DeleteWorkspace(ctx, name, p.Sub)
	if err != nil {
		return nil, err
	}
	return gen.DeleteWorkspace200JSONResponse(toWorkspace(ws)), nil
}

// CheckWorkspaceAvailability tells whether a workspace could be created
// with that name now: a bare boolean, or with withReason the structured
// answer. A name CreateWorkspace would refuse as malformed is a 400 with
// the rule (none of upstream's reasons describes it); a reserved one is
// unavailable (forbidden_reserved).
func (s *Server) CheckWorkspaceAvailability(ctx context.Context, req gen.CheckWorkspaceAvailabilityRequestObject) (gen.CheckWorkspaceAvailabilityResponseObject, error) {
	var name string
	if req.Body != nil {
		name = req.Body.Name
	}
	if err := store.CheckWorkspaceName(name); err != nil {
		return nil, err
	}
	var reason gen.WorkspaceAvailabilityReason
	var message string
	if store.WorkspaceNameReserved(name) {
		reason, message = gen.ForbiddenReserved, "this name is reserved"
	} else {
		taken, err := s.workspaces.WorkspaceNameTaken(ctx, name)
		if err != nil {
			return nil, err
		}
		if taken {
			reason, message = gen.Taken, "a workspace with this name already exists"
		}
	}
	available := reason == ""
	var out gen.CheckWorkspaceAvailability200JSONResponse
	var err error
	if req.Params.WithReason == nil || !*req.Params.WithReason {
		err = out.FromCheckWorkspaceAvailability200JSONResponseBody0(available)
	} else {
		a := gen.WorkspaceAvailability{Available: &available, Message: &message}
		if !available {
			a.Reason = &reason
		}
		err = out.FromWorkspaceAvailability(a)
	}
	if err != nil {
		return nil, err
	}
	return out, nil
}
