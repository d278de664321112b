// Package auth issues and verifies access tokens: the JWT verifier (an
// external issuer's keys by JWKS URL, JWKS file or PEM public key, with its
// issuer and audience checks), the development issuer (`controlplane
// token`), this server's own OAuth 2.0 issuer of service-account tokens and
// its signing keys, and the scope policy. It knows nothing of HTTP routing:
// the token endpoint, the well-known documents and the validator's
// authentication function that calls this package live in server.
package auth

import "github.com/membership-api/controlplane/store"

// Principal is the authenticated caller.
type Principal struct {
	Sub   string
	Email string
	// EmailVerified tells whether Email may be trusted as the caller's
	// address (see VerifierConfig.RequireEmailVerified).
	EmailVerified bool
	Scopes        []string
	// APIKey is set when the caller authenticated with an API key.
	APIKey *store.APIKey
	// BoundWorkspace, when set, is the one workspace the credential may act
	// in: an API key's own, or a service-account token's workspace claim.
	BoundWorkspace string
	// ServiceAccount: the caller is a service account (Sub is its client
	// ID), by its token or by one of its API keys.
	ServiceAccount bool
}

// ScopeAdmin is the OAuth2 scope that implies every other scope (the seed's
// default security requirement is `OAuth2: [admin]`).
const ScopeAdmin = "admin"

// HasScopes tells whether the principal holds every scope in required.
func (p *Principal) HasScopes(required []string) bool {
	for _, r := range required {
		if !p.hasScope(r) {
			return false
		}
	}
	return true
}

func (p *Principal) hasScope(scope string) bool {
	for _, s := range p.Scopes {
		if s == scope || s == ScopeAdmin {
			return true
		}
	}
	return false
}
