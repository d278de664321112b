package store

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"
)

// The rules of an invite, each written once. An invite is settled by one
// of two paths that must decide alike: the batch statement (upsertBatch,
// for a whole batch of invites at once, run by invite_batch.go) and the
// slow path (inviteSlow, Go checks ending with the same statement for one
// row), which decides whatever a batch leaves. Where a rule must be
// written in SQL for the statement and in Go for the slow path, the two
// stand side by side below, and TestInviteRules runs every case of them
// through both paths on both databases:
//
//   - the caller must be an admin of the workspace (adminCheckSQL / inviteSlow);
//   - the email must not be a member's (notMemberSQL / inviteSlow);
//   - the workspace's email-domain policy must allow the email
//     (domainAllowed / EmailDomainPolicy.DomainAllowed);
//   - a pending invitation is refreshed, keeping its role, unless it has
//     expired (refreshableSQL / inviteStale, then expireStale);
//   - a new invitation's event is invitation.created, a refreshed one's
//     invitation.refreshed (createdNowSQL, inviteActionSQL / inviteAction).
//
// Every path writes the same audit event, whose fields inviteEvent sets,
// and queues one email per invitation (enqueueEmails).

// InviteParams describes one invitation request.
type InviteParams struct {
	Workspace string // workspace name
	Caller    string // sub of the inviter, who must be an admin of the workspace
	Email     string // normalised by Invite
	Role      string // RoleMember when empty
	TTL       time.Duration
	actor     Actor // who asks: Invite takes it from the context (WithActor), for the audit event
}

// prepare normalises an invite's email and role and refuses what no
// statement should see (Invite and InviteMany alike).
func (p InviteParams) prepare() (InviteParams, error) {
	p.Email = NormalizeEmail(p.Email)
	if p.Role == "" {
		p.Role = RoleMember
	}
	if p.Email == "" {
		// The member-email checks skip empty emails (service accounts have
		// one each; see memberByEmail): an invitation needs a real one.
		return p, codedf(ErrInvalid, CodeInvalidEmail, "the email to invite must not be empty")
	}
	if !storable(p.Workspace) || !storable(p.Caller) {
		return p, codedf(ErrNotFound, CodeWorkspaceNotFound, "workspace not found")
	}
	return p, nil
}

// upsertBatch is the invite statement (also inviteOne's, for one row): from
// is the invites as a table j(ws, caller, email, role); expires, created and
// updated are the placeholders of the expiry and the time. The WHERE holds
// the rules (adminCheckSQL, notMemberSQL, domainAllowed); the conflict
// clause refreshes a pending invitation (keeping its role) unless it has
// expired (refreshableSQL: then no row, and the slow path moves it to
// history). The WHERE is also what lets SQLite parse INSERT … SELECT … ON
// CONFLICT; the conflict target spells out the partial unique index
// idx_invitations_pending so PostgreSQL matches it.
//
// The member checks are index lookups whatever the workspace's size
// (without that, an invite into a workspace of 20,000 members read all of
// them, per email). OFFSET 0 keeps PostgreSQL from turning the checks into
// joins: it then planned the lookup with workspace_id alone, the email or
// sub applied as a filter, because its statistics (averages over all
// workspaces) made a workspace look cheap to read; as subplans each check
// is planned with all its columns bound. (LIMIT 1 only because SQLite
// accepts OFFSET only after a LIMIT; PostgreSQL drops it.)
// order is lockOrder for PostgreSQL's batches, or empty.
func upsertBatch(from, order, expires, created, updated, returning string) string {
	return `
INSERT INTO invitations (workspace_id, email, role, status, invited_by, expires_at, created_at, updated_at, created_by, updated_by)
SELECT w.id, j.email, j.role, 'pending', j.caller, ` + expires + `, ` + created + `, ` + updated + `, j.caller, j.caller
FROM ` + from + `
JOIN workspaces w ON w.name = j.ws
WHERE ` + adminCheckSQL + `
  AND ` + notMemberSQL + `
  AND ` + domainAllowed + `
` + order + `
ON CONFLICT (workspace_id, email) WHERE status = 'pending'
DO UPDATE SET expires_at = excluded.expires_at, updated_at = excluded.updated_at, updated_by = excluded.updated_by
WHERE ` + refreshableSQL + `
RETURNING ` + returning
}

// adminCheckSQL: the caller j.caller is an admin of the workspace w. In Go
// (inviteSlow): the caller's member row, then its role.
const adminCheckSQL = `EXISTS (SELECT 1 FROM members m WHERE m.workspace_id = w.id AND m.sub = j.caller AND m.role = 'admin' LIMIT 1 OFFSET 0)`

// notMemberSQL: the invited email is not a member's. The test that
// x.email is not empty repeats the condition of the partial index on
// member email (idx_members_workspace_email), which neither planner infers
// from x.email = j.email (invited emails are never empty: prepare refuses
// those). In Go (inviteSlow): a count by memberByEmail.
const notMemberSQL = `NOT EXISTS (SELECT 1 FROM members x WHERE x.workspace_id = w.id AND x.email = j.email AND x.email <> '' LIMIT 1 OFFSET 0)`

// domainAllowed is the statement's email-domain policy check: the
// workspace has no rule at all (one index probe, the common case: the OR
// stops there on both databases), or no deny rule matches and either no
// allow rule exists or one matches. Deny wins over allow. OFFSET 0 keeps
// each check a subplan, as upsertBatch's member checks.
const domainAllowed = `(NOT EXISTS (SELECT 1 FROM email_domain_rules r WHERE r.workspace_id = w.id LIMIT 1 OFFSET 0)
    OR (NOT EXISTS (SELECT 1 FROM email_domain_rules r WHERE r.workspace_id = w.id AND r.kind = 'deny' AND ` + domainRuleMatches + ` LIMIT 1 OFFSET 0)
      AND (NOT EXISTS (SELECT 1 FROM email_domain_rules r WHERE r.workspace_id = w.id AND r.kind = 'allow' LIMIT 1 OFFSET 0)
        OR EXISTS (SELECT 1 FROM email_domain_rules r WHERE r.workspace_id = w.id AND r.kind = 'allow' AND ` + domainRuleMatches + ` LIMIT 1 OFFSET 0))))`

// domainRuleMatches is true when the invited email j.email is at rule r's
// domain or one of its subdomains (ruleCovers in Go). An email has exactly
// one @ and its domain no @, so a suffix "@d" is the whole domain and ".d"
// a subdomain's end (a checked email's domain never starts with a dot).
// Rule domains are letters, digits, dots and hyphens only (CheckDomain), so
// they carry no LIKE wildcard; emails are stored lower-cased, like the rules.
const domainRuleMatches = `(j.email LIKE ('%@' || r.domain) OR j.email LIKE ('%.' || r.domain))`

// DomainAllowed applies policy to an email's domain as the invite
// statement does (domainAllowed): deny wins, then a non-empty allowlist
// must cover it.
func (p EmailDomainPolicy) DomainAllowed(email string) bool {
	domain := domainOf(NormalizeEmail(email))
	for _, rule := range p.Deny {
		if ruleCovers(rule, domain) {
			return false
		}
	}
	if len(p.Allow) == 0 {
		return true
	}
	for _, rule := range p.Allow {
		if ruleCovers(rule, domain) {
			return true
		}
	}
	return false
}

// ruleCovers tells whether a rule for rule covers an email at domain
// (domainRuleMatches in SQL).
func ruleCovers(rule, domain string) bool {
	return domain == rule || strings.HasSuffix(domain, "."+rule)
}

// domainOf returns what follows the email's @.
func domainOf(email string) string {
	_, domain, _ := strings.Cut(email, "@")
	return domain
}

// checkDomainPolicy is the slow path's policy check, inside the invite's
// transaction (after the workspace lock): ErrForbidden with
// CodeDomainNotAllowed when the policy refuses email.
func checkDomainPolicy(tx *gorm.DB, workspaceID int64, email string) error {
	policy, err := readDomainPolicy(tx, workspaceID)
	if err != nil {
		return err
	}
	if !policy.DomainAllowed(email) {
		return codedf(ErrForbidden, CodeDomainNotAllowed,
			"%s is not allowed by this workspace's email-domain policy (see GET /workspaces/{name}/email-domains)", email)
	}
	return nil
}

// refreshableSQL: the statement refreshes a pending invitation only while
// it has not expired at the invite's time (excluded.updated_at). In Go:
// inviteStale, whose invitations expireStale moves to history first.
const refreshableSQL = `invitations.expires_at > excluded.updated_at`

// inviteStale tells whether a pending invitation has expired by now, so an
// invite must not refresh it (refreshableSQL in SQL).
func inviteStale(pending Invitation, now time.Time) bool { return !pending.ExpiresAt.After(now) }

// expireStale moves p's pending invitation past its expiry (inviteStale)
// to history (expired), with its audit event, so the invite starts a fresh
// one.
func expireStale(tx *gorm.DB, ws Workspace, p InviteParams, now time.Time) error {
	var pending Invitation
	err := tx.Where(pendingByEmail, ws.ID, p.Email).Take(&pending).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return nil
	}
	if err != nil || !inviteStale(pending, now) {
		return err
	}
	if err := setInvitationStatus(tx, &pending, InvitationExpired, p.Caller, now); err != nil {
		return err
	}
	return invitationAudit(tx, ws, pending, ActionInvitationExpired)
}

// createdNowSQL tells, of a row the invite statement returned, whether the
// statement created it: it writes the same time to both columns of a new
// row, and only updated_at of a refreshed one. inviteAction is the rule in
// Go, inviteActionSQL in SQL.
const createdNowSQL = `created_at = updated_at`

// inviteAction tells a new invitation from a refreshed one (createdNowSQL).
func inviteAction(inv Invitation) string {
	if inv.CreatedAt.Equal(inv.UpdatedAt) {
		return ActionInvitationCreated
	}
	return ActionInvitationRefreshed
}

// inviteActionSQL is inviteAction for a row returned by the statement, for
// the PostgreSQL batch, which writes its events in the same statement.
const inviteActionSQL = `CASE WHEN ` + createdNowSQL + ` THEN '` + ActionInvitationCreated + `' ELSE '` + ActionInvitationRefreshed + `' END`

// inviteEvent is the audit event of the invite p that left inv (created or
// refreshed) at now, after its inviteAfter text: the one place its fields
// are set. The slow path appends it (appendAudit) and the SQLite batch
// sends its columns as parameters; the PostgreSQL batch, which learns its
// rows only inside its one statement, sends inviteEventOf's fields and the
// after text of each role (inviteAfters) as parameters, and takes the row's
// part (workspace id, inviteActionSQL) from the row.
func inviteEvent(p InviteParams, inv Invitation, now time.Time, after string) AuditEvent {
	ev := inviteEventOf(p, now)
	ev.WorkspaceID, ev.Action, ev.After = inv.WorkspaceID, inviteAction(inv), after
	return ev
}

// inviteEventOf is what an invite's event holds before its row is known.
func inviteEventOf(p InviteParams, now time.Time) AuditEvent {
	return AuditEvent{Workspace: p.Workspace, At: now, ActorKind: p.actor.Kind, ActorSub: p.actor.Sub,
		TargetType: TargetInvitation, TargetID: p.Email, RequestID: p.actor.RequestID}
}

// inviteAfter is an invite's audited fields as JSON, written out rather than
// marshalled (the batches write one per invite): the same text on every
// path. Roles are "admin" or "member", which need no escaping.
func inviteAfter(role string, expires time.Time) string {
	return `{"expiresAt":"` + expires.UTC().Format(time.RFC3339Nano) + `","role":"` + role + `"}`
}

// afterTexts keeps the after texts of one batch, whose rows share one
// expiry: two texts at most (one per role), instead of one per invite.
type afterTexts map[string]string

func (t afterTexts) of(role string, expires time.Time) string {
	text, ok := t[role]
	if !ok {
		text = inviteAfter(role, expires)
		t[role] = text
	}
	return text
}

// inviteAfters are the after texts of a batch expiring at expires, by
// role: of the roles the API gives (a refreshed row keeps its own) and of
// the batch's own invites (jobRoles: a new row's role), which are the
// same but for a caller of the store that invents one.
func inviteAfters(expires time.Time, jobRoles []string) (roles, afters []string) {
	roles = apiRoles
	for _, role := range jobRoles {
		if !slices.Contains(roles, role) {
			roles = append(roles[:len(roles):len(roles)], role) // a copy: apiRoles is shared
		}
	}
	afters = make([]string, len(roles))
	for i, role := range roles {
		afters[i] = inviteAfter(role, expires)
	}
	return roles, afters
}

// apiRoles are the roles the API lets an invitation have.
var apiRoles = []string{RoleAdmin, RoleMember}

// enqueueEmails is the one statement that queues invitation emails: rows
// yields (invitation_id, status, next_attempt_at, created_at, updated_at).
// The partial unique index idx_outbox_unsent keeps at most one unsent
// message per invitation, so a re-invite (or fifty) before the send queues
// one email. Used as is by the slow path (enqueueSQL) and in the batch
// statements (invite_batch.go).
func enqueueEmails(rows string) string {
	return `INSERT INTO outbox_messages (invitation_id, status, next_attempt_at, created_at, updated_at)
` + rows + `
ON CONFLICT (invitation_id) WHERE status = 'pending'
DO UPDATE SET next_attempt_at = excluded.next_attempt_at, updated_at = excluded.updated_at`
}

var enqueueSQL = enqueueEmails(`VALUES (?, 'pending', ?, ?, ?)`)

// inviteOne is the slow path's final write: upsertBatch for one row, with
// GORM's ? placeholders. Arguments: upsertArgs.
var inviteOne = upsertBatch(`(SELECT ? AS ws, ? AS caller, ? AS email, ? AS role) j`, "", "?", "?", "?", invitationColumns)

// upsertArgs are the arguments of inviteOne, in placeholder order
// (positional: GORM parses named arguments on every call).
func (p InviteParams) upsertArgs(now time.Time) []any {
	return []any{now.Add(p.TTL), now, now, p.Workspace, p.Caller, p.Email, p.Role}
}

// inviteSlow decides an invite with every rule in Go: unknown workspace or
// caller, a caller who is not an admin, an email the domain policy
// refuses, a member's email, and an expired pending invitation (moved to
// history before a fresh one is created); then it writes with inviteOne.
// It runs for every invite a batch did not settle.
func (s *Store) inviteSlow(tx *gorm.DB, p InviteParams, now time.Time, inv *Invitation) error {
	var ws Workspace
	q := tx.Table("workspaces AS w").Select("w.*").Where("w.name = ?", p.Workspace)
	if s.dialect == Postgres {
		q = q.Clauses(clause.Locking{Strength: "SHARE", Table: clause.Table{Name: "w"}})
	}
	if err := q.Take(&ws).Error; err != nil {
		return notFoundAs(err, CodeWorkspaceNotFound, "workspace not found")
	}
	var caller Member
	if err := tx.Where("workspace_id = ? AND sub = ?", ws.ID, p.Caller).Take(&caller).Error; err != nil {
		return notFoundAs(err, CodeWorkspaceNotFound, "workspace not found")
	}
	if caller.Role != RoleAdmin {
		return codedf(ErrForbidden, CodeNotAdmin, "only workspace admins may invite")
	}
	if err := checkDomainPolicy(tx, ws.ID, p.Email); err != nil {
		return err
	}
	var members int64
	if err := tx.Model(&Member{}).Where(memberByEmail, ws.ID, p.Email).Count(&members).Error; err != nil {
		return fmt.Errorf("check membership: %w", err)
	}
	if members > 0 {
		return codedf(ErrConflict, CodeAlreadyMember, "%s is already a member of this workspace", p.Email)
	}
	if err := expireStale(tx, ws, p, now); err != nil {
		return fmt.Errorf("expire stale invitation: %w", err)
	}
	if err := tx.Raw(inviteOne, p.upsertArgs(now)...).Scan(inv).Error; err != nil {
		return fmt.Errorf("create invitation: %w", err)
	}
	if inv.ID == 0 {
		return errors.New("create invitation: no row written")
	}
	if err := tx.Exec(enqueueSQL, inv.ID, now, now, now).Error; err != nil {
		return fmt.Errorf("queue invitation email: %w", err)
	}
	return appendAudit(tx, inviteEvent(p, *inv, now, inviteAfter(inv.Role, inv.ExpiresAt)))
}

// invitationColumns are what the invite statement returns of a row.
const invitationColumns = `id, workspace_id, email, role, status, invited_by, expires_at, created_at, updated_at, created_by, updated_by`
