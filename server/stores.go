package server

import (
	"context"
	"time"

	"github.com/membership-api/controlplane/auth"
	"github.com/membership-api/controlplane/store"
)

// The store as the handlers use it: one small interface per group of
// operations, declared here by their consumer (store.Store implements them
// all; the compiler checks it in stores_test.go). Handler tests can stand
// in a fake for a group without a database; the store itself is tested on
// real databases in store/ and e2e/. The errors are the store's: *store.Error
// wrapping store.ErrNotFound, ErrConflict, ErrInvalid or ErrForbidden, which
// fromStoreError maps to statuses, and anything else an internal error.

// Workspaces reads and changes workspaces and tells who belongs to them.
type Workspaces interface {
	// Membership returns sub's membership of the named workspace; ErrNotFound
	// (workspace_not_found) if the workspace does not exist or sub is not a
	// member.
	Membership(ctx context.Context, workspaceName, sub string) (store.Membership, error)
	// WorkspacesOf returns the workspaces sub is a member of.
	WorkspacesOf(ctx context.Context, sub string) ([]store.Workspace, error)
	// CreateWorkspace creates a workspace whose first admin is adminSub.
	CreateWorkspace(ctx context.Context, nw store.NewWorkspace, emails ...store.EmailOptions) (store.Workspace, error)
	// UpdateWorkspace changes a workspace's display name (admins only).
	UpdateWorkspace(ctx context.Context, workspaceName, by string, displayName *string) (store.Workspace, error)
	// DeleteWorkspace deletes a workspace and what it holds (admins only).
	DeleteWorkspace(ctx context.Context, workspaceName, by string) (store.Workspace, error)
	// WorkspaceNameTaken tells whether a workspace has that name.
	WorkspaceNameTaken(ctx context.Context, name string) (bool, error)
	// DomainPolicy returns a workspace's email-domain policy (any member).
	DomainPolicy(ctx context.Context, workspaceName, sub string) (store.EmailDomainPolicy, error)
	// SetDomainPolicy replaces a workspace's email-domain policy (admins only).
	SetDomainPolicy(ctx context.Context, workspaceName, by string, policy store.EmailDomainPolicy) (store.EmailDomainPolicy, error)
}

// Members invites people to a workspace and manages its members, and lets
// an invitee answer their invitations.
type Members interface {
	// Invite invites p.Email; ErrForbidden (not_admin) if the caller is not
	// an admin, ErrConflict (already_member) if the email is a member's.
	Invite(ctx context.Context, p store.InviteParams) (store.Invitation, error)
	// InviteMany invites every row together and answers each as Invite would.
	InviteMany(ctx context.Context, ps []store.InviteParams) []store.InviteResult
	// EachUser hands fn the workspace's members, then its pending
	// invitations, after the position after (nil: from the start), at most
	// limit of them (0: all); it returns the last position when more follow.
	EachUser(ctx context.Context, workspaceName string, after *store.ListPosition, limit int, fn func(store.UserEntry, store.ListPosition) error) (*store.ListPosition, error)
	// RemoveUser removes a member or revokes an invitation (admins only).
	RemoveUser(ctx context.Context, workspaceName, by, subOrEmail string) error
	// UpdateRole changes the role of a member or invitation (admins only).
	UpdateRole(ctx context.Context, workspaceName, by, subOrEmail, role string) (store.UserEntry, error)
	// EachPendingInvitationFor hands fn the pending invitations addressed
	// to email, paged as EachUser.
	EachPendingInvitationFor(ctx context.Context, email string, after *store.ListPosition, limit int, fn func(store.InvitationView, store.ListPosition) error) (*store.ListPosition, error)
	// Accept makes sub a member by the invitation addressed to email.
	Accept(ctx context.Context, workspaceName, sub, email string) (store.Workspace, error)
	// Decline marks the invitation addressed to email declined.
	Decline(ctx context.Context, workspaceName, by, email string) (store.Invitation, store.Workspace, error)
	// Leave removes sub from the workspace.
	Leave(ctx context.Context, workspaceName, sub string) (store.Workspace, error)
}

// ServiceAccounts manages a workspace's service accounts and their API
// keys, and authenticates them at the token endpoint.
type ServiceAccounts interface {
	ServiceAccounts(ctx context.Context, workspaceName, by string) ([]store.ServiceAccountView, error)
	// CreateServiceAccount returns the account's secret (shown once) and the account.
	CreateServiceAccount(ctx context.Context, workspaceName, by string, sa store.NewServiceAccount) (string, store.ServiceAccountView, error)
	UpdateServiceAccount(ctx context.Context, workspaceName, by, clientID string, c store.ServiceAccountChange) (store.ServiceAccountView, error)
	DeleteServiceAccount(ctx context.Context, workspaceName, by, clientID string) (store.ServiceAccountView, error)
	ServiceAccountKeys(ctx context.Context, workspaceName, by, clientID string) ([]store.APIKey, error)
	// CreateServiceAccountKey returns the key (shown once) and its record.
	CreateServiceAccountKey(ctx context.Context, workspaceName, by, clientID string, nk store.NewServiceAccountKey) (string, store.APIKey, error)
	RevokeServiceAccountKey(ctx context.Context, workspaceName, by, clientID, keyID string) error
	// AuthenticateServiceAccount checks client credentials; ErrNotFound for
	// an unknown client or a wrong secret alike.
	AuthenticateServiceAccount(ctx context.Context, clientID, secret string) (store.ServiceAccountView, error)
}

// Credentials is what the authenticator looks up on every request.
type Credentials interface {
	// LookupAPIKey returns an unrevoked, unexpired key; ErrNotFound otherwise.
	LookupAPIKey(ctx context.Context, key string) (store.APIKey, error)
	// ActiveServiceAccount returns the service account a token names;
	// ErrNotFound once it was deleted.
	ActiveServiceAccount(ctx context.Context, clientID string) (store.ServiceAccountView, error)
}

// Webhooks manages a workspace's webhook endpoints and reads their delivery log.
type Webhooks interface {
	Webhooks(ctx context.Context, workspaceName string) ([]store.WebhookEndpoint, error)
	// Webhook returns one endpoint; ErrNotFound (webhook_not_found) if the
	// workspace has none of that id.
	Webhook(ctx context.Context, workspaceName string, id int64) (store.WebhookEndpoint, error)
	CreateWebhook(ctx context.Context, workspaceName, by string, in store.WebhookInput) (store.WebhookEndpoint, error)
	UpdateWebhook(ctx context.Context, workspaceName, by string, id int64, in store.WebhookInput) (store.WebhookEndpoint, error)
	DeleteWebhook(ctx context.Context, workspaceName, by string, id int64) error
	// SendWebhookTest queues a webhook.test event for one endpoint.
	SendWebhookTest(ctx context.Context, workspaceName, by string, id int64) (store.WebhookMessage, store.AuditEvent, error)
	WebhookAttempts(ctx context.Context, endpointID int64, limit int) ([]store.WebhookAttempt, error)
}

// Audit reads a workspace's audit log.
type Audit interface {
	ListAudit(ctx context.Context, f store.AuditFilter) ([]store.AuditEvent, error)
}

// Idempotency remembers the answers given to Idempotency-Keys (idempotency.go).
type Idempotency interface {
	// BeginIdempotent claims the key, or says why not (claim.Outcome).
	BeginIdempotent(ctx context.Context, scope store.IdempotencyScope, hash []byte, ttl time.Duration) (store.IdempotencyClaim, error)
	// FinishIdempotent keeps the answer of a claimed key for replay.
	FinishIdempotent(ctx context.Context, claim store.IdempotencyClaim, status int, body []byte) error
	// ReleaseIdempotent frees a claimed key without an answer.
	ReleaseIdempotent(ctx context.Context, claim store.IdempotencyClaim) error
	// SweepIdempotencyKeys deletes expired keys and returns how many.
	SweepIdempotencyKeys(ctx context.Context) (int64, error)
}

// Database is what the server needs of the database itself: readiness
// (/readyz) and the key list cursors are signed with.
type Database interface {
	// Ping tells whether the database answers.
	Ping(ctx context.Context) error
	// CursorKey returns the key list cursors are signed with, the same on
	// every replica.
	CursorKey(ctx context.Context) ([]byte, error)
}

// Store is everything New needs: every group above and the OAuth issuer's
// signing keys.
type Store interface {
	Workspaces
	Members
	ServiceAccounts
	Credentials
	Webhooks
	Audit
	Idempotency
	Database
	auth.KeyStore
}
