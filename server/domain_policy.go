package server

import (
	"context"
	"net/http"

	"github.com/membership-api/controlplane/gen"
	"github.com/membership-api/controlplane/store"
)

// GetEmailDomainPolicy answers a workspace's email-domain policy (any member).
func (s *Server) GetEmailDomainPolicy(ctx context.Context, req gen.GetEmailDomainPolicyRequestObject) (gen.GetEmailDomainPolicyResponseObject, error) {
	p, name, err := s.workspaceName(ctx, req.WorkspaceName)
	if err != nil {
		return nil, err
	}
	policy, err := s.workspaces.DomainPolicy(ctx, name, p.Sub)
	if err != nil {
		return nil, err
	}
	return gen.GetEmailDomainPolicy200JSONResponse(toEmailDomainPolicy(policy)), nil
}

// SetEmailDomainPolicy replaces a workspace's email-domain policy (admins only).
func (s *Server) SetEmailDomainPolicy(ctx context.Context, req gen.SetEmailDomainPolicyRequestObject) (gen.SetEmailDomainPolicyResponseObject, error) {
	if req.Body == nil {
		return nil, newError(http.StatusBadRequest, KindInvalidRequest, `a body {"allow": [...], "deny": [...]} is required`)
	}
	p, name, err := s.workspaceName(ctx, req.WorkspaceName)
	if err != nil {
		return nil, err
	}
	policy, err := s.workspaces.SetDomainPolicy(ctx, name, p.Sub, store.EmailDomainPolicy{Allow: derefList(req.Body.Allow), Deny: derefList(req.Body.Deny)})
	if err != nil {
		return nil, err
	}
	return gen.SetEmailDomainPolicy200JSONResponse(toEmailDomainPolicy(policy)), nil
}

func toEmailDomainPolicy(p store.EmailDomainPolicy) gen.EmailDomainPolicy {
	return gen.EmailDomainPolicy{Allow: &p.Allow, Deny: &p.Deny}
}

// derefList is the value of an optional list, nil when absent.
func derefList(l *[]string) []string {
	if l == nil {
		return nil
	}
	return *l
}
