package store

import "time"

// Roles a member or an invitation can carry.
const (
	RoleAdmin  = "admin"
	RoleMember = "member"
)

// Invitation states. Only one pending invitation may exist per workspace and
// email (a partial unique index); the others are kept as history.
const (
	InvitationPending  = "pending"
	InvitationAccepted = "accepted"
	InvitationDeclined = "declined"
	InvitationRevoked  = "revoked"
	InvitationExpired  = "expired"
)

// Audit holds who created and last changed a row, as the spec's OwnerFields.
type Audit struct {
	CreatedAt time.Time `gorm:"not null"`
	UpdatedAt time.Time `gorm:"not null"`
	CreatedBy string    `gorm:"not null;default:''"`
	UpdatedBy string    `gorm:"not null;default:''"`
}

// Workspace is a tenant: members and invitations belong to one.
type Workspace struct {
	ID          int64  `gorm:"primaryKey"`
	Name        string `gorm:"not null;uniqueIndex"`
	DisplayName string `gorm:"not null;default:''"`
	// MemberCount is the number of its members, kept in the transaction of
	// every change to them (createMember, deleteMember) so that listing
	// invitations with their workspace's size reads one row per workspace,
	// not its members; Migrate recomputes it.
	MemberCount int64 `gorm:"not null;default:0"`
	Audit
}

// Member is a principal (sub) belonging to a workspace with a role.
// Email is stored normalised (lower case) and may be empty for service accounts.
// idx_members_admins holds the admins alone, so counting a workspace's
// admins (the last-admin check) reads its admins, not all its members.
type Member struct {
	ID          int64  `gorm:"primaryKey"`
	WorkspaceID int64  `gorm:"not null;uniqueIndex:idx_members_workspace_sub,priority:1;uniqueIndex:idx_members_workspace_email,priority:1,where:email <> '';index:idx_members_admins,where:role = 'admin'"`
	Sub         string `gorm:"not null;uniqueIndex:idx_members_workspace_sub,priority:2;index:idx_members_sub"` // idx_members_sub: a person's workspaces (ListWorkspaces)
	Email       string `gorm:"not null;default:'';uniqueIndex:idx_members_workspace_email,priority:2,where:email <> ''"`
	Role        string `gorm:"not null"`
	Source      string `gorm:"not null;default:''"` // SourceInvitation when joined by accepting one
	Audit

	Workspace Workspace `gorm:"constraint:OnDelete:CASCADE"`
}

// Invitation asks Email to join a workspace with Role until ExpiresAt.
type Invitation struct {
	ID          int64     `gorm:"primaryKey"`
	WorkspaceID int64     `gorm:"not null;uniqueIndex:idx_invitations_pending,priority:1,where:status = 'pending'"`
	Email       string    `gorm:"not null;uniqueIndex:idx_invitations_pending,priority:2,where:status = 'pending'"` // by email alone: idx_invitations_pending_email_list (lists.go)
	Role        string    `gorm:"not null"`
	Status      string    `gorm:"not null"` // no index of its own: every query also names the workspace or the email
	InvitedBy   string    `gorm:"not null"`
	ExpiresAt   time.Time `gorm:"not null"`
	Audit

	Workspace Workspace `gorm:"constraint:OnDelete:CASCADE"`
}

// APIKey is an opaque credential bound to one workspace and one principal.
// Only the SHA-256 of the key is stored; the key itself is shown once.
type APIKey struct {
	ID          int64  `gorm:"primaryKey"`
	WorkspaceID int64  `gorm:"not null;index:idx_api_keys_workspace_sub,priority:1"`
	Sub         string `gorm:"not null;index:idx_api_keys_workspace_sub,priority:2"` // a member's keys are revoked when it leaves
	Hash        []byte `gorm:"not null;uniqueIndex"`
	Hint        string `gorm:"not null"` // first characters, to tell keys apart in listings
	RevokedAt   *time.Time
	// PublicID names the key in the API (ak_…); keys made by the CLI for
	// people, before service accounts existed, have none ('').
	PublicID string `gorm:"not null;default:'';uniqueIndex:idx_api_keys_public_id,where:public_id <> ''"`
	Name     string `gorm:"not null;default:''"`
	// ExpiresIn is the lifetime asked for ("30d"), answered as upstream's
	// ApiKey.expires_in; ExpiresAt is when the key stops working (nil: never).
	ExpiresIn string `gorm:"not null;default:''"`
	ExpiresAt *time.Time
	Audit

	Workspace Workspace `gorm:"constraint:OnDelete:CASCADE"`
}

// TableName keeps the table name readable ("api_keys", not "api_keys" vs "a_p_i_keys").
func (APIKey) TableName() string { return "api_keys" }

func allModels() []any {
	return []any{&Workspace{}, &Member{}, &Invitation{}, &APIKey{}, &ServiceAccount{}, &OutboxMessage{}, &SigningKey{}, &EmailDomainRule{}, &IdempotencyRecord{},
		&AuditEvent{}, &WebhookEndpoint{}, &WebhookMessage{}, &WebhookAttempt{}}
}

// SourceInvitation marks members who joined by accepting an invitation.
const SourceInvitation = "invitation"
