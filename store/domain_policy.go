package store

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"gorm.io/gorm"
)

// CodeDomainNotAllowed is the kind of an invite refused by the workspace's
// email-domain policy.
const CodeDomainNotAllowed = "domain_not_allowed"

// Kinds of email-domain rules.
const (
	DomainAllow = "allow"
	DomainDeny  = "deny"
)

// MaxDomainRules bounds each list of a policy: the invite statement reads a
// workspace's rules of one kind for every invite into it.
const MaxDomainRules = 100

// EmailDomainRule is one domain of a workspace's allowlist or denylist. A
// rule covers its domain and every subdomain of it. The primary key starts
// with the workspace, so the invite statement's checks are index lookups.
type EmailDomainRule struct {
	WorkspaceID int64  `gorm:"primaryKey;autoIncrement:false"`
	Kind        string `gorm:"primaryKey"` // DomainAllow or DomainDeny
	Domain      string `gorm:"primaryKey"` // lower case, no leading dot or @

	Workspace Workspace `gorm:"constraint:OnDelete:CASCADE"`
}

// EmailDomainPolicy is a workspace's allowlist and denylist, each sorted.
type EmailDomainPolicy struct {
	Allow []string
	Deny  []string
}

func readDomainPolicy(tx *gorm.DB, workspaceID int64) (EmailDomainPolicy, error) {
	var rules []EmailDomainRule
	if err := tx.Where("workspace_id = ?", workspaceID).Order("kind, domain").Find(&rules).Error; err != nil {
		return EmailDomainPolicy{}, fmt.Errorf("read email-domain policy: %w", err)
	}
	policy := EmailDomainPolicy{Allow: []string{}, Deny: []string{}}
	for _, r := range rules {
		if r.Kind == DomainAllow {
			policy.Allow = append(policy.Allow, r.Domain)
		} else {
			policy.Deny = append(policy.Deny, r.Domain)
		}
	}
	return policy, nil
}

// CheckDomain normalises a policy domain (lower case, surrounding spaces,
// a leading "@" or "*." dropped: both mean the domain and its subdomains
// here) and checks it is a domain name: labels of letters, digits and inner
// hyphens, at most 253 characters.
func CheckDomain(domain string) (string, error) {
	d := strings.ToLower(strings.TrimSpace(domain))
	d = strings.TrimPrefix(strings.TrimPrefix(d, "@"), "*.")
	if d == "" || len(d) > 253 || !isDomain(d) {
		return "", codedf(ErrInvalid, CodeInvalidRequest, "%q is not a domain name (expected example.com: letters, digits, inner hyphens and dots)", domain)
	}
	return d, nil
}

// CodeInvalidRequest is the generic kind of a request the server cannot use.
const CodeInvalidRequest = "invalid_request"

// normalisePolicy checks, lower-cases, sorts and deduplicates both lists.
// A domain on both lists is refused: which one was meant is unclear.
func normalisePolicy(p EmailDomainPolicy) (EmailDomainPolicy, error) {
	out := EmailDomainPolicy{Allow: []string{}, Deny: []string{}}
	for _, list := range []struct {
		in  []string
		out *[]string
	}{{p.Allow, &out.Allow}, {p.Deny, &out.Deny}} {
		if len(list.in) > MaxDomainRules {
			return out, codedf(ErrInvalid, CodeInvalidRequest, "at most %d domains per list", MaxDomainRules)
		}
		for _, raw := range list.in {
			d, err := CheckDomain(raw)
			if err != nil {
				return out, err
			}
			*list.out = append(*list.out, d)
		}
		slices.Sort(*list.out)
		*list.out = slices.Compact(*list.out)
	}
	for _, d := range out.Allow {
		if _, both := slices.BinarySearch(out.Deny, d); both {
			return out, codedf(ErrInvalid, CodeInvalidRequest, "%s is on both the allowlist and the denylist", d)
		}
	}
	return out, nil
}

// DomainPolicy returns a workspace's email-domain policy (any member may
// read it). Returns ErrNotFound if the workspace does not exist or sub is
// not a member.
func (s *Store) DomainPolicy(ctx context.Context, workspaceName, sub string) (EmailDomainPolicy, error) {
	m, err := s.Membership(ctx, workspaceName, sub)
	if err != nil {
		return EmailDomainPolicy{}, err
	}
	return readDomainPolicy(s.read.WithContext(ctx), m.Workspace.ID)
}

// SetDomainPolicy replaces a workspace's email-domain policy (admins only)
// and returns it as stored. It locks the workspace row first (FOR UPDATE on
// PostgreSQL; invites hold it in shared mode around their statement, and
// SQLite has one writer), so every invite runs wholly before or wholly after
// the change. Returns ErrNotFound (workspace_not_found), ErrForbidden
// (not_admin), ErrInvalid for a list refused by normalisePolicy.
func (s *Store) SetDomainPolicy(ctx context.Context, workspaceName, by string, policy EmailDomainPolicy) (EmailDomainPolicy, error) {
	policy, err := normalisePolicy(policy)
	if err != nil {
		return EmailDomainPolicy{}, err
	}
	err = s.adminTx(ctx, workspaceName, by, func(tx *gorm.DB, ws Workspace) error {
		old, err := readDomainPolicy(tx, ws.ID)
		if err != nil {
			return err
		}
		if b, a := changed(domainPolicyFields(old), domainPolicyFields(policy)); len(a) > 0 {
			if err := appendAudit(tx, auditOf(ws, ActionDomainPolicyUpdated, TargetWorkspace, ws.Name, b, a)); err != nil {
				return err
			}
		}
		if err := tx.Where("workspace_id = ?", ws.ID).Delete(&EmailDomainRule{}).Error; err != nil {
			return fmt.Errorf("replace email-domain policy: %w", err)
		}
		rules := make([]EmailDomainRule, 0, len(policy.Allow)+len(policy.Deny))
		for _, d := range policy.Allow {
			rules = append(rules, EmailDomainRule{WorkspaceID: ws.ID, Kind: DomainAllow, Domain: d})
		}
		for _, d := range policy.Deny {
			rules = append(rules, EmailDomainRule{WorkspaceID: ws.ID, Kind: DomainDeny, Domain: d})
		}
		if len(rules) == 0 {
			return nil
		}
		if err := tx.Omit("Workspace").Create(&rules).Error; err != nil {
			return fmt.Errorf("replace email-domain policy: %w", err)
		}
		return nil
	})
	if err != nil {
		return EmailDomainPolicy{}, err
	}
	return policy, nil
}
