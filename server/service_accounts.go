package server

import (
	"context"

	"github.com/membership-api/controlplane/gen"
	"github.com/membership-api/controlplane/store"
)

// The service-account operations (upstream's /service_accounts…). They act
// in the caller's workspace (X-Blaxel-Workspace, or the credential's own);
// the store checks the caller's role under the workspace's lock: any
// member may list, only admins may change.

// GetWorkspaceServiceAccounts lists the workspace's service accounts.
func (s *Server) GetWorkspaceServiceAccounts(ctx context.Context, req gen.GetWorkspaceServiceAccountsRequestObject) (gen.GetWorkspaceServiceAccountsResponseObject, error) {
	p, workspace, err := s.workspaceName(ctx, deref(req.Params.XBlaxelWorkspace))
	if err != nil {
		return nil, err
	}
	list, err := s.serviceAccounts.ServiceAccounts(ctx, workspace, p.Sub)
	if err != nil {
		return nil, err
	}
	out := make(gen.GetWorkspaceServiceAccounts200JSONResponse, 0, len(list))
	for _, v := range list {
		out = append(out, toServiceAccount(v))
	}
	return out, nil
}

// CreateWorkspaceServiceAccount creates one and answers its secret, once.
func (s *Server) CreateWorkspaceServiceAccount(ctx context.Context, req gen.CreateWorkspaceServiceAccountRequestObject) (gen.CreateWorkspaceServiceAccountResponseObject, error) {
	p, workspace, err := s.workspaceName(ctx, deref(req.Params.XBlaxelWorkspace))
	if err != nil {
		return nil, err
	}
	secret, v, err := s.serviceAccounts.CreateServiceAccount(ctx, workspace, p.Sub,
		store.NewServiceAccount{Name: req.Body.Name, Description: deref(req.Body.Description), Role: roleOf(req.Body.Role)})
	if err != nil {
		return nil, err
	}
	sa := toServiceAccount(v)
	return gen.CreateWorkspaceServiceAccount200JSONResponse{ClientId: sa.ClientId, ClientSecret: &secret,
		Name: sa.Name, Description: sa.Description, Role: sa.Role, CreatedAt: sa.CreatedAt, UpdatedAt: sa.UpdatedAt}, nil
}

// UpdateWorkspaceServiceAccount changes its name, description or role.
func (s *Server) UpdateWorkspaceServiceAccount(ctx context.Context, req gen.UpdateWorkspaceServiceAccountRequestObject) (gen.UpdateWorkspaceServiceAccountResponseObject, error) {
	p, workspace, err := s.workspaceName(ctx, deref(req.Params.XBlaxelWorkspace))
	if err != nil {
		return nil, err
	}
	change := store.ServiceAccountChange{Name: req.Body.Name, Description: req.Body.Description}
	if req.Body.Role != nil {
		role := string(*req.Body.Role)
		change.Role = &role
	}
	v, err := s.serviceAccounts.UpdateServiceAccount(ctx, workspace, p.Sub, req.ClientId, change)
	if err != nil {
		return nil, err
	}
	return gen.UpdateWorkspaceServiceAccount200JSONResponse(toServiceAccount(v)), nil
}

// DeleteWorkspaceServiceAccount deletes it with its keys; its tokens stop
// working on the next request (the authenticator looks the account up).
func (s *Server) DeleteWorkspaceServiceAccount(ctx context.Context, req gen.DeleteWorkspaceServiceAccountRequestObject) (gen.DeleteWorkspaceServiceAccountResponseObject, error) {
	p, workspace, err := s.workspaceName(ctx, deref(req.Params.XBlaxelWorkspace))
	if err != nil {
		return nil, err
	}
	v, err := s.serviceAccounts.DeleteServiceAccount(ctx, workspace, p.Sub, req.ClientId)
	if err != nil {
		return nil, err
	}
	return gen.DeleteWorkspaceServiceAccount200JSONResponse(toServiceAccount(v)), nil
}

// ListApiKeysForServiceAccount lists its unrevoked keys (never the keys themselves).
//
//nolint:revive // var-naming: the generated interface's name (upstream's operationId)
func (s *Server) ListApiKeysForServiceAccount(ctx context.Context, req gen.ListApiKeysForServiceAccountRequestObject) (gen.ListApiKeysForServiceAccountResponseObject, error) {
	p, workspace, err := s.workspaceName(ctx, deref(req.Params.XBlaxelWorkspace))
	if err != nil {
		return nil, err
	}
	keys, err := s.serviceAccounts.ServiceAccountKeys(ctx, workspace, p.Sub, req.ClientId)
	if err != nil {
		return nil, err
	}
	out := make(gen.ListApiKeysForServiceAccount200JSONResponse, 0, len(keys))
	for _, k := range keys {
		out = append(out, toAPIKey(k, ""))
	}
	return out, nil
}

// CreateApiKeyForServiceAccount issues a key and answers it, once.
//
//nolint:revive // var-naming: the generated interface's name (upstream's operationId)
func (s *Server) CreateApiKeyForServiceAccount(ctx context.Context, req gen.CreateApiKeyForServiceAccountRequestObject) (gen.CreateApiKeyForServiceAccountResponseObject, error) {
	p, workspace, err := s.workspaceName(ctx, deref(req.Params.XBlaxelWorkspace))
	if err != nil {
		return nil, err
	}
	key, k, err := s.serviceAccounts.CreateServiceAccountKey(ctx, workspace, p.Sub, req.ClientId,
		store.NewServiceAccountKey{Name: deref(req.Body.Name), ExpiresIn: deref(req.Body.ExpiresIn)})
	if err != nil {
		return nil, err
	}
	return gen.CreateApiKeyForServiceAccount200JSONResponse(toAPIKey(k, key)), nil
}

// DeleteApiKeyForServiceAccount revokes a key by its ID.
//
//nolint:revive // var-naming: the generated interface's name (upstream's operationId)
func (s *Server) DeleteApiKeyForServiceAccount(ctx context.Context, req gen.DeleteApiKeyForServiceAccountRequestObject) (gen.DeleteApiKeyForServiceAccountResponseObject, error) {
	p, workspace, err := s.workspaceName(ctx, deref(req.Params.XBlaxelWorkspace))
	if err != nil {
		return nil, err
	}
	if err := s.serviceAccounts.RevokeServiceAccountKey(ctx, workspace, p.Sub, req.ClientId, req.ApiKeyId); err != nil {
		return nil, err
	}
	return gen.DeleteApiKeyForServiceAccount200Response{}, nil
}

// roleOf is the requested role, "" (the store's default) when absent.
func roleOf(r *gen.ServiceAccountRole) string {
	if r == nil {
		return ""
	}
	return string(*r)
}

func toServiceAccount(v store.ServiceAccountView) gen.ServiceAccount {
	role := gen.ServiceAccountRole(v.Role)
	return gen.ServiceAccount{ClientId: &v.ClientID, Name: &v.Name, Description: &v.Description, Role: &role,
		CreatedAt: timeString(v.CreatedAt), UpdatedAt: timeString(v.UpdatedAt)}
}

// subTypeServiceAccount is ApiKey.sub_type for a service account's key.
const subTypeServiceAccount = "service_account"

// toAPIKey renders a key; plain is the key itself, only when just created.
func toAPIKey(k store.APIKey, plain string) gen.ApiKey {
	subType := subTypeServiceAccount
	out := gen.ApiKey{Id: &k.PublicID, Name: &k.Name, Sub: &k.Sub, SubType: &subType,
		CreatedAt: timeString(k.CreatedAt), UpdatedAt: timeString(k.UpdatedAt), CreatedBy: &k.CreatedBy, UpdatedBy: &k.UpdatedBy}
	if k.ExpiresIn != "" {
		out.ExpiresIn = &k.ExpiresIn
	}
	if plain != "" {
		out.ApiKey = &plain
	}
	return out
}
