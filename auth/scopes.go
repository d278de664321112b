package auth

import (
	"slices"
	"strings"

	"github.com/getkin/kin-openapi/openapi3"

	"github.com/membership-api/controlplane/store"
)

// ScopePolicy says which scopes a service account may hold, read from the
// loaded spec (never a list written here): an admin may hold every scope of
// the OAuth2 scheme's clientCredentials flow and by default gets "admin"
// (which implies all); a member may hold every scope but "admin" and by
// default gets the scopes the spec's operations require, minus "admin".
// The role is the account's member role; the store still decides what a
// member may do in its workspace (a member holding workspaces:invite is
// refused an invitation as any member is).
type ScopePolicy struct {
	all           []string // the clientCredentials flow's scopes, sorted
	memberDefault []string
}

// SchemeOAuth2 is the name of the spec's OAuth2 security scheme, whose
// clientCredentials flow lists the scopes a service account may hold.
const SchemeOAuth2 = "OAuth2"

// All is every scope of the OAuth2 scheme's clientCredentials flow, sorted
// (the metadata's scopes_supported).
func (p ScopePolicy) All() []string { return p.all }

// NewScopePolicy reads the policy from the loaded spec.
func NewScopePolicy(doc *openapi3.T) ScopePolicy {
	var p ScopePolicy
	if ref := doc.Components.SecuritySchemes[SchemeOAuth2]; ref != nil && ref.Value != nil && ref.Value.Flows != nil && ref.Value.Flows.ClientCredentials != nil {
		for s := range ref.Value.Flows.ClientCredentials.Scopes {
			p.all = append(p.all, s)
		}
	}
	slices.Sort(p.all)
	required := map[string]bool{}
	for _, item := range doc.Paths.Map() {
		for _, op := range item.Operations() {
			security := doc.Security
			if op.Security != nil {
				security = *op.Security
			}
			for _, req := range security {
				for _, s := range req[SchemeOAuth2] {
					required[s] = true
				}
			}
		}
	}
	for _, s := range p.all {
		if required[s] && s != ScopeAdmin {
			p.memberDefault = append(p.memberDefault, s)
		}
	}
	return p
}

// allowed tells whether a service account of role may hold scope.
func (p ScopePolicy) allowed(role, scope string) bool {
	if scope == ScopeAdmin && role != store.RoleAdmin {
		return false
	}
	_, ok := slices.BinarySearch(p.all, scope)
	return ok
}

// Grant returns the scopes a token for role carries: requested (a
// space-separated scope parameter) when every one is allowed, the role's
// default when none is requested. bad is the first scope refused.
func (p ScopePolicy) Grant(role, requested string) (scopes []string, bad string) {
	asked := splitScopes(requested)
	if len(asked) == 0 {
		if role == store.RoleAdmin {
			return []string{ScopeAdmin}, ""
		}
		return p.memberDefault, ""
	}
	for _, s := range asked {
		if !p.allowed(role, s) {
			return nil, s
		}
		if !slices.Contains(scopes, s) {
			scopes = append(scopes, s)
		}
	}
	return scopes, ""
}

// ForRole drops what role may no longer hold from a token's scopes: a
// service account demoted to member since its token was issued loses
// "admin" at once.
func (p ScopePolicy) ForRole(role string, scopes []string) []string {
	if role == store.RoleAdmin || !slices.Contains(scopes, ScopeAdmin) {
		return scopes
	}
	return slices.DeleteFunc(slices.Clone(scopes), func(s string) bool { return s == ScopeAdmin })
}

// JoinScopes is a scope parameter: scopes separated by U+0020 (RFC 6749 §3.3).
func JoinScopes(scopes []string) string { return strings.Join(scopes, " ") }
