package store

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"gorm.io/gorm"
)

// Fixtures are a declared starting state for a dev server or a test
// (serve --dev --fixtures, controlplanetest): workspaces with their members,
// pending invitations, service accounts and API keys whose secrets are
// fixed, so a test can use them without reading anything back. Line fields
// say where an item was declared (its YAML line), for error messages; zero
// when not from a file.
type Fixtures struct {
	Workspaces []FixtureWorkspace
}

// FixtureWorkspace is a workspace and everything in it. Its first admin
// is Admin; Members adds more people.
type FixtureWorkspace struct {
	Line            int
	Name            string
	DisplayName     string
	Admin           FixtureMember
	Members         []FixtureMember
	Invitations     []FixtureInvitation
	ServiceAccounts []FixtureServiceAccount
	// APIKeys act as a member (FixtureAPIKey.Sub) of the workspace.
	APIKeys []FixtureAPIKey
}

// FixtureMember is a person in a workspace.
type FixtureMember struct {
	Line       int
	Sub, Email string
	Role       string // RoleAdmin or RoleMember; "": member (admin for FixtureWorkspace.Admin)
}

// FixtureInvitation is a pending invitation, as if its admin had just
// invited: no email is queued for it.
type FixtureInvitation struct {
	Line      int
	Email     string
	Role      string // "": member
	InvitedBy string // a sub of the workspace's admins; "": the first admin
	// TTL is how long it stays acceptable from the load; 0: the
	// FixtureOptions' InviteTTL.
	TTL time.Duration
}

// FixtureServiceAccount is a service account with a fixed client ID and
// secret (OAuth client credentials) and its API keys.
type FixtureServiceAccount struct {
	Line         int
	Name         string
	Description  string
	Role         string // "": member
	ClientID     string // ServiceAccountPrefix…
	ClientSecret string // ClientSecretPrefix…
	APIKeys      []FixtureAPIKey
}

// FixtureAPIKey is an API key with a fixed secret.
type FixtureAPIKey struct {
	Line int
	// Sub is the member the key acts as (workspace API keys); ignored
	// under a service account, which is the key's principal.
	Sub       string
	Name      string
	Key       string // APIKeyPrefix and at least minFixtureSecret more characters
	ExpiresIn string // ParseExpiresIn's form; "": never
}

// FixtureOptions tune LoadFixtures.
type FixtureOptions struct {
	// Reset empties the database first (Reset), in the same transaction.
	Reset bool
	// InviteTTL is the invitations' lifetime when they give none.
	InviteTTL time.Duration
	// Emails are the email rules (--allow-local-email-domains).
	Emails EmailOptions
}

// minFixtureSecret is the least length of a fixed secret after its prefix:
// short enough to type, long enough that nobody mistakes it for a guessable one.
const minFixtureSecret = 16

// fixtureError is one refusal, at the line of the item at fault.
func fixtureError(line int, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	if line > 0 {
		msg = fmt.Sprintf("line %d: %s", line, msg)
	}
	return errorf(ErrInvalid, "%s", msg)
}

// Validate checks every rule LoadFixtures would enforce, without a
// database, and returns every refusal (errors.Join), each with its line.
func (f Fixtures) Validate(emails EmailOptions) error {
	var errs []error
	bad := func(line int, format string, args ...any) { errs = append(errs, fixtureError(line, format, args...)) }
	workspaces := map[string]int{}
	clientIDs := map[string]int{}
	keys := map[string]int{}
	checkKey := func(k FixtureAPIKey, needSub bool, members map[string]bool) {
		switch {
		case !strings.HasPrefix(k.Key, APIKeyPrefix) || len(k.Key) < len(APIKeyPrefix)+minFixtureSecret:
			bad(k.Line, "API key %q must start with %q and have at least %d more characters", k.Key, APIKeyPrefix, minFixtureSecret)
		case keys[k.Key] > 0:
			bad(k.Line, "API key %q is declared twice (first at line %d)", k.Key, keys[k.Key])
		default:
			keys[k.Key] = k.Line
		}
		if needSub && !members[k.Sub] {
			bad(k.Line, "API key's sub %q is not a member of its workspace", k.Sub)
		}
		if k.ExpiresIn != "" {
			if _, err := ParseExpiresIn(k.ExpiresIn); err != nil {
				bad(k.Line, "%s", err)
			}
		}
	}
	for _, w := range f.Workspaces {
		if err := CheckWorkspaceName(w.Name); err != nil {
			bad(w.Line, "%s", err)
		} else if WorkspaceNameReserved(w.Name) {
			bad(w.Line, "workspace name %q is reserved", w.Name)
		}
		if first, dup := workspaces[w.Name]; dup {
			bad(w.Line, "workspace %q is declared twice (first at line %d)", w.Name, first)
		} else {
			workspaces[w.Name] = w.Line
		}
		if err := checkDisplayName(w.DisplayName); err != nil {
			bad(w.Line, "%s", err)
		}
		subs, emailsSeen, admins := map[string]bool{}, map[string]bool{}, map[string]bool{}
		people := append([]FixtureMember{w.Admin}, w.Members...)
		for i, m := range people {
			line := m.Line
			if i == 0 && line == 0 {
				line = w.Line
			}
			role := m.Role
			if role == "" {
				role = RoleMember
				if i == 0 {
					role = RoleAdmin
				}
			}
			switch {
			case i == 0 && role != RoleAdmin:
				bad(line, "the workspace's admin must have the role %q", RoleAdmin)
			case checkRole(role) != nil:
				bad(line, "unknown role %q: use %q or %q", m.Role, RoleAdmin, RoleMember)
			}
			if strings.TrimSpace(m.Sub) == "" || IsServiceAccountID(m.Sub) {
				bad(line, "a member needs a sub, not starting with %q", ServiceAccountPrefix)
			} else if subs[m.Sub] {
				bad(line, "member %q is declared twice in workspace %q", m.Sub, w.Name)
			}
			subs[m.Sub] = true
			if role == RoleAdmin {
				admins[m.Sub] = true
			}
			email := NormalizeEmail(m.Email)
			if err := CheckEmail(email, emails); err != nil {
				bad(line, "bad email %q: %s", m.Email, err)
			} else if emailsSeen[email] {
				bad(line, "email %q belongs to two members of workspace %q", email, w.Name)
			}
			emailsSeen[email] = true
		}
		invited := map[string]bool{}
		for _, inv := range w.Invitations {
			email := NormalizeEmail(inv.Email)
			if err := CheckEmail(email, emails); err != nil {
				bad(inv.Line, "bad email %q: %s", inv.Email, err)
			} else if emailsSeen[email] {
				bad(inv.Line, "%q is already a member of workspace %q", email, w.Name)
			} else if invited[email] {
				bad(inv.Line, "%q is invited twice to workspace %q", email, w.Name)
			}
			invited[email] = true
			if inv.Role != "" && checkRole(inv.Role) != nil {
				bad(inv.Line, "unknown role %q: use %q or %q", inv.Role, RoleAdmin, RoleMember)
			}
			if inv.InvitedBy != "" && !admins[inv.InvitedBy] {
				bad(inv.Line, "invitedBy %q is not an admin of workspace %q", inv.InvitedBy, w.Name)
			}
			if inv.TTL < 0 {
				bad(inv.Line, "an invitation's lifetime must be positive")
			}
		}
		names := map[string]bool{}
		for _, sa := range w.ServiceAccounts {
			if err := firstError(checkServiceAccountText("name", sa.Name, true), checkServiceAccountText("description", sa.Description, false)); err != nil {
				bad(sa.Line, "%s", err)
			} else if names[sa.Name] {
				bad(sa.Line, "service account %q is declared twice in workspace %q", sa.Name, w.Name)
			}
			names[sa.Name] = true
			if sa.Role != "" && checkRole(sa.Role) != nil {
				bad(sa.Line, "unknown role %q: use %q or %q", sa.Role, RoleAdmin, RoleMember)
			}
			switch {
			case !IsServiceAccountID(sa.ClientID) || len(sa.ClientID) < len(ServiceAccountPrefix)+minFixtureSecret/2:
				bad(sa.Line, "clientId %q must start with %q and have at least %d more characters", sa.ClientID, ServiceAccountPrefix, minFixtureSecret/2)
			case clientIDs[sa.ClientID] > 0:
				bad(sa.Line, "clientId %q is declared twice (first at line %d)", sa.ClientID, clientIDs[sa.ClientID])
			default:
				clientIDs[sa.ClientID] = sa.Line
			}
			if !strings.HasPrefix(sa.ClientSecret, ClientSecretPrefix) || len(sa.ClientSecret) < len(ClientSecretPrefix)+minFixtureSecret {
				bad(sa.Line, "clientSecret must start with %q and have at least %d more characters", ClientSecretPrefix, minFixtureSecret)
			}
			for _, k := range sa.APIKeys {
				checkKey(k, false, nil)
			}
		}
		for _, k := range w.APIKeys {
			checkKey(k, true, subs)
		}
	}
	return errors.Join(errs...)
}

// LoadFixtures validates f (Validate) and writes it in one transaction:
// everything or, on any refusal, nothing. With opts.Reset the database is
// emptied first, in the same transaction. Returns ErrInvalid (every
// refusal, with its line) or ErrConflict (a workspace of that name exists
// already).
func (s *Store) LoadFixtures(ctx context.Context, f Fixtures, opts FixtureOptions) error {
	if err := f.Validate(opts.Emails); err != nil {
		return err
	}
	if opts.InviteTTL <= 0 {
		opts.InviteTTL = 7 * 24 * time.Hour
	}
	return s.inTx(ctx, func(tx *gorm.DB) error {
		if opts.Reset {
			if err := resetTx(tx); err != nil {
				return err
			}
		}
		now := s.now()
		for _, w := range f.Workspaces {
			if err := writeFixtureWorkspace(tx, w, opts, now); err != nil {
				return err
			}
		}
		return nil
	})
}

func writeFixtureWorkspace(tx *gorm.DB, w FixtureWorkspace, opts FixtureOptions, now time.Time) error {
	admin := w.Admin.Sub
	by := Audit{CreatedBy: admin, UpdatedBy: admin}
	display := w.DisplayName
	if display == "" {
		display = w.Name
	}
	ws := Workspace{Name: w.Name, DisplayName: display, Audit: by}
	if err := tx.Create(&ws).Error; err != nil {
		if errors.Is(err, gorm.ErrDuplicatedKey) {
			return fixtureError(w.Line, "workspace %q exists already", w.Name)
		}
		return fmt.Errorf("fixtures: create workspace %s: %w", w.Name, err)
	}
	for i, m := range append([]FixtureMember{w.Admin}, w.Members...) {
		role := cmp.Or(m.Role, RoleMember)
		if i == 0 {
			role = RoleAdmin
		}
		if err := createMember(tx, &Member{WorkspaceID: ws.ID, Sub: m.Sub, Email: NormalizeEmail(m.Email), Role: role, Audit: by}); err != nil {
			return fmt.Errorf("fixtures: member %s of %s: %w", m.Sub, w.Name, err)
		}
	}
	for _, inv := range w.Invitations {
		ttl := inv.TTL
		if ttl <= 0 {
			ttl = opts.InviteTTL
		}
		invitedBy := inv.InvitedBy
		if invitedBy == "" {
			invitedBy = admin
		}
		row := Invitation{WorkspaceID: ws.ID, Email: NormalizeEmail(inv.Email), Role: cmp.Or(inv.Role, RoleMember), Status: InvitationPending,
			InvitedBy: invitedBy, ExpiresAt: now.Add(ttl), Audit: Audit{CreatedBy: invitedBy, UpdatedBy: invitedBy}}
		if err := tx.Omit("Workspace").Create(&row).Error; err != nil {
			return fmt.Errorf("fixtures: invitation of %s to %s: %w", inv.Email, w.Name, err)
		}
	}
	for _, sa := range w.ServiceAccounts {
		row := ServiceAccount{WorkspaceID: ws.ID, ClientID: sa.ClientID, Name: sa.Name, Description: sa.Description,
			SecretHash: HashAPIKey(sa.ClientSecret), Audit: by}
		if err := tx.Omit("Workspace").Create(&row).Error; err != nil {
			if errors.Is(err, gorm.ErrDuplicatedKey) {
				return fixtureError(sa.Line, "service account %q exists already", sa.ClientID)
			}
			return fmt.Errorf("fixtures: service account %s: %w", sa.Name, err)
		}
		// Not createMember: member_count counts people.
		if err := tx.Omit("Workspace").Create(&Member{WorkspaceID: ws.ID, Sub: sa.ClientID, Role: cmp.Or(sa.Role, RoleMember),
			Source: SourceServiceAccount, Audit: by}).Error; err != nil {
			return fmt.Errorf("fixtures: service account %s: %w", sa.Name, err)
		}
		for _, k := range sa.APIKeys {
			if err := writeFixtureKey(tx, ws.ID, sa.ClientID, k, true, by, now); err != nil {
				return err
			}
		}
	}
	for _, k := range w.APIKeys {
		if err := writeFixtureKey(tx, ws.ID, k.Sub, k, false, by, now); err != nil {
			return err
		}
	}
	return nil
}

func writeFixtureKey(tx *gorm.DB, workspaceID int64, sub string, k FixtureAPIKey, serviceAccount bool, by Audit, now time.Time) error {
	row := APIKey{WorkspaceID: workspaceID, Sub: sub, Hash: HashAPIKey(k.Key), Hint: k.Key[:len(APIKeyPrefix)+6],
		Name: k.Name, ExpiresIn: k.ExpiresIn, Audit: by}
	if k.ExpiresIn != "" {
		d, err := ParseExpiresIn(k.ExpiresIn)
		if err != nil {
			return fixtureError(k.Line, "%s", err)
		}
		at := now.Add(d)
		row.ExpiresAt = &at
	}
	if serviceAccount {
		// A service account's keys are named in the API by a public ID.
		id, err := randomToken(APIKeyIDPrefix)
		if err != nil {
			return err
		}
		row.PublicID = id[:len(APIKeyIDPrefix)+16]
	}
	if err := tx.Omit("Workspace").Create(&row).Error; err != nil {
		if errors.Is(err, gorm.ErrDuplicatedKey) {
			return fixtureError(k.Line, "API key %s… exists already", row.Hint)
		}
		return fmt.Errorf("fixtures: API key %s…: %w", row.Hint, err)
	}
	return nil
}
