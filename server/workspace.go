package server

import (
	"context"
	"net/http"

	"github.com/membership-api/controlplane/auth"
	"github.com/membership-api/controlplane/store"
)

// caller is an authenticated principal acting in one workspace.
type caller struct {
	*auth.Principal
	store.Membership
}

// workspaceCaller resolves the workspace a request acts on and the caller's
// role in it. The workspace is the X-Blaxel-Workspace header (the
// operation's declared parameter), else the credential's own workspace (an
// API key's, a service-account token's). A workspace that does not exist,
// that the caller is not a member of, or that the credential is not bound
// to is "workspace not found" alike, so nothing is revealed about other
// tenants.
func (s *Server) workspaceCaller(ctx context.Context, header *string) (caller, error) {
	p, name, err := s.workspaceName(ctx, deref(header))
	if err != nil {
		return caller{}, err
	}
	m, err := s.workspaces.Membership(ctx, name, p.Sub)
	if err != nil {
		return caller{}, err
	}
	return caller{Principal: p, Membership: m}, nil
}

// workspaceName returns the caller and the name of the workspace the request
// acts on (header: the X-Blaxel-Workspace value, "" when absent), without
// looking anything up.
func (s *Server) workspaceName(ctx context.Context, header string) (*auth.Principal, string, error) {
	p := PrincipalFrom(ctx)
	if p == nil {
		return nil, "", newError(http.StatusUnauthorized, "", "missing credentials")
	}
	name := header
	if p.BoundWorkspace != "" {
		if name == "" {
			name = p.BoundWorkspace
		} else if name != p.BoundWorkspace {
			return nil, "", newError(http.StatusNotFound, KindWorkspaceNotFound, "workspace not found")
		}
	}
	if name == "" {
		return nil, "", newError(http.StatusBadRequest, KindWorkspaceRequired, "no workspace: send the "+WorkspaceHeader+" header")
	}
	return p, name, nil
}

// deref is the value of an optional parameter, "" when absent.
func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
