package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/getkin/kin-openapi/openapi3filter"

	"github.com/membership-api/controlplane/auth"
	"github.com/membership-api/controlplane/metrics"
	"github.com/membership-api/controlplane/store"
)

// Security scheme names declared in openapi/controlplane.yml.
const (
	schemeOAuth2 = auth.SchemeOAuth2
	schemeAPIKey = "ApiKeyAuth" //nolint:gosec // G101: the YAML's name for the scheme, not a credential
	// schemeBlaxelAPIKey is the same API key in X-Blaxel-Authorization, as
	// Blaxel's SDKs send it: declared so that contract validators (Prism)
	// accept those requests.
	schemeBlaxelAPIKey = "BlaxelApiKeyAuth" //nolint:gosec // G101: the YAML's name for the scheme, not a credential
)

// errKeyNotInBlaxelHeader: BlaxelApiKeyAuth names X-Blaxel-Authorization.
// It is never the answer to a valid key, because ApiKeyAuth comes first in
// every list and passes it; a shared value, so it allocates nothing.
var errKeyNotInBlaxelHeader = &authError{status: http.StatusUnauthorized, presented: true, reason: metrics.AuthWrongScheme,
	message: "this operation's BlaxelApiKeyAuth requirement needs an API key in the X-Blaxel-Authorization header"}

// WorkspaceHeader names the workspace a request acts on, as Blaxel's SDKs send it.
const WorkspaceHeader = "X-Blaxel-Workspace"

// authError is one security requirement's failure.
type authError struct {
	status    int
	message   string
	reason    string // for metrics: one of metrics.Auth… ("": not an authentication failure)
	applies   bool   // the presented credential was of this scheme's kind
	presented bool   // a credential was sent at all
	cause     error  // what failed, for the log (never shown to the client)
}

func (e *authError) Error() string { return e.message }

// requestState is what the validator learns about a request, cached so the
// credential is classified and verified once however many requirements the
// operation lists.
type requestState struct {
	resolved  bool
	principal *auth.Principal
	err       *authError
	// via: the headers the credential came in (the same credential may come
	// in both), for BlaxelApiKeyAuth.
	via credentialVia
	// id is the request's ID (observe.go); idHeader holds it as the
	// response header's value, allocated with the state.
	id       string
	idHeader [1]string
	// clientAuthFailed: the token endpoint refused the client credentials
	// presented (counted as a failed authentication, ratelimit.go).
	clientAuthFailed bool
}

type requestStateKey struct{}

func stateFrom(ctx context.Context) *requestState {
	st, _ := ctx.Value(requestStateKey{}).(*requestState)
	return st
}

// PrincipalFrom returns the authenticated caller, or nil for operations the
// spec leaves unsecured.
func PrincipalFrom(ctx context.Context) *auth.Principal {
	if st := stateFrom(ctx); st != nil {
		return st.principal
	}
	return nil
}

// authenticator implements the spec's security schemes.
type authenticator struct {
	jwt         *auth.JWTVerifier
	credentials Credentials
	scopes      auth.ScopePolicy
}

// authenticate is the validator's AuthenticationFunc, called once per scheme
// of each security requirement with the scopes the YAML lists, so any
// operation added to the YAML is protected as declared, with no handler code.
// An unknown scheme name fails closed.
func (a *authenticator) authenticate(ctx context.Context, input *openapi3filter.AuthenticationInput) error {
	st := stateFrom(ctx)
	if st == nil {
		return &authError{status: http.StatusUnauthorized, message: "authentication state missing"}
	}
	if !st.resolved {
		st.principal, st.via, st.err = a.resolve(input.RequestValidationInput.Request)
		st.resolved = true
	}
	if st.err != nil {
		return st.err
	}
	p := st.principal
	switch input.SecuritySchemeName {
	case schemeOAuth2:
		if p.APIKey != nil {
			return &authError{status: http.StatusUnauthorized, presented: true, reason: metrics.AuthWrongScheme,
				message: "this operation's OAuth2 requirement needs a JWT access token"}
		}
		if !p.HasScopes(input.Scopes) {
			return &authError{status: http.StatusForbidden, applies: true, presented: true, reason: metrics.AuthInsufficientScope,
				message: fmt.Sprintf("the token lacks a required scope: %v", input.Scopes)}
		}
		return nil
	case schemeAPIKey:
		// A key in either header passes, as before BlaxelApiKeyAuth was
		// declared: ApiKeyAuth comes first in every list, so a key never
		// makes the validator try one more requirement (each one it tries
		// copies the request body again).
		if p.APIKey == nil {
			return &authError{status: http.StatusUnauthorized, presented: true, reason: metrics.AuthWrongScheme,
				message: "this operation's ApiKeyAuth requirement needs an API key"}
		}
		return nil
	case schemeBlaxelAPIKey:
		if p.APIKey == nil {
			return &authError{status: http.StatusUnauthorized, presented: true, reason: metrics.AuthWrongScheme,
				message: "this operation's BlaxelApiKeyAuth requirement needs an API key"}
		}
		if st.via&viaBlaxelHeader == 0 {
			return errKeyNotInBlaxelHeader
		}
		return nil
	}
	return &authError{status: http.StatusUnauthorized, presented: true, reason: metrics.AuthWrongScheme,
		message: fmt.Sprintf("security scheme %q is not supported by this server", input.SecuritySchemeName)}
}

// resolve classifies and verifies the request's credential.
func (a *authenticator) resolve(r *http.Request) (*auth.Principal, credentialVia, *authError) {
	cred, via, err := bearerCredential(r)
	p, aerr := a.verify(r, cred, err)
	return p, via, aerr
}

// verify checks the credential bearerCredential extracted (err: its error).
func (a *authenticator) verify(r *http.Request, cred string, err error) (*auth.Principal, *authError) {
	if errors.Is(err, errTwoCredentials) {
		// Answered before either credential is checked, so sending two
		// tells nothing about either.
		return nil, &authError{status: http.StatusBadRequest, applies: true, presented: true, reason: metrics.AuthTwoCredentials, message: err.Error()}
	}
	if err != nil {
		return nil, &authError{status: http.StatusUnauthorized, applies: true, presented: true, reason: metrics.AuthMalformed, message: err.Error()}
	}
	if cred == "" {
		return nil, &authError{status: http.StatusUnauthorized, applies: true, reason: metrics.AuthMissing,
			message: "missing credentials: send \"Authorization: Bearer <token or API key>\""}
	}
	if store.IsAPIKey(cred) {
		key, err := a.credentials.LookupAPIKey(r.Context(), cred)
		if err != nil {
			if errors.Is(err, store.ErrNotFound) {
				return nil, &authError{status: http.StatusUnauthorized, applies: true, presented: true, reason: metrics.AuthUnknownAPIKey,
					message: "invalid API key: unknown or revoked"}
			}
			return nil, &authError{status: http.StatusInternalServerError, applies: true, presented: true,
				message: "internal error: could not check the API key", cause: err}
		}
		return &auth.Principal{Sub: key.Sub, APIKey: &key, BoundWorkspace: key.Workspace.Name, ServiceAccount: store.IsServiceAccountID(key.Sub)}, nil
	}
	p, _, err := a.jwt.Verify(cred)
	if err != nil {
		reason := metrics.AuthInvalidToken
		if errors.Is(err, auth.ErrTokenExpired) {
			reason = metrics.AuthExpiredToken
		}
		return nil, &authError{status: http.StatusUnauthorized, applies: true, presented: true, reason: reason, message: err.Error()}
	}
	if p.ServiceAccount {
		return a.activeServiceAccount(r.Context(), p)
	}
	return p, nil
}

// errServiceAccountGone: the token's service account was deleted (or its
// workspace is not the token's any more).
var errServiceAccountGone = errors.New("invalid token: service account deleted")

// activeServiceAccount checks, on every request and without a cache, that
// a service-account token's account still exists in the token's workspace:
// DeleteWorkspaceServiceAccount then refuses its unexpired tokens at once,
// on every replica (store.ActiveServiceAccount: one statement by the unique
// client_id; BenchmarkServiceAccountCheck measures it).
// The token's scopes are cut to what the account's current role may hold.
func (a *authenticator) activeServiceAccount(ctx context.Context, p *auth.Principal) (*auth.Principal, *authError) {
	v, err := a.credentials.ActiveServiceAccount(ctx, p.Sub)
	if errors.Is(err, store.ErrNotFound) || err == nil && v.Workspace.Name != p.BoundWorkspace {
		return nil, &authError{status: http.StatusUnauthorized, applies: true, presented: true, reason: metrics.AuthInvalidToken,
			message: errServiceAccountGone.Error()}
	}
	if err != nil {
		return nil, &authError{status: http.StatusInternalServerError, applies: true, presented: true,
			message: "internal error: could not check the service account", cause: err}
	}
	own := *p // p is shared through the verifier's cache
	own.Scopes = a.scopes.ForRole(v.Role, p.Scopes)
	return &own, nil
}
