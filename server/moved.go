package server

import "github.com/membership-api/controlplane/auth"

// Forwarding declarations of names that moved to package auth. They exist
// only until the end-to-end tests (e2e/) use auth's names; then delete this
// file.

// AuthConfig is auth.VerifierConfig.
type AuthConfig = auth.VerifierConfig

// TokenRequest is auth.TokenRequest.
type TokenRequest = auth.TokenRequest

// DevIssuerName is auth.DevIssuerName.
const DevIssuerName = auth.DevIssuerName

// LoadDevIssuer is auth.LoadDevIssuer.
var LoadDevIssuer = auth.LoadDevIssuer
