package auth

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"

	"github.com/membership-api/controlplane/store"
)

// VerifierConfig selects the JWT issuer the verifier trusts.
type VerifierConfig struct {
	// JWKSURL, JWKSFile and PublicKeyFile name the external issuer's keys;
	// set at most one. With none set the built-in development issuer is used.
	JWKSURL       string
	JWKSFile      string
	PublicKeyFile string
	Issuer        string // required iss; empty: not checked (dev issuer: always checked)
	Audience      string // required aud; empty: not checked
	// RequireEmailVerified makes a token's email count only with
	// "email_verified": true. Without it a token with no email_verified claim
	// is trusted as its issuer's word (access tokens of Auth0, Okta or Entra
	// ID carry an email only where the operator mapped one in, and often
	// without the claim); "email_verified": false is refused either way.
	RequireEmailVerified bool
	// DevIssuer is the development issuer, trusted only when no external one is configured.
	DevIssuer *DevIssuer
	// Now replaces the clock tokens' exp, nbf and iat are checked against
	// (a dev server's test clock); nil means time.Now.
	Now func() time.Time
}

// External tells whether an external issuer is configured.
func (c VerifierConfig) External() bool {
	return c.JWKSURL != "" || c.JWKSFile != "" || c.PublicKeyFile != ""
}

// allowedAlgs are the asymmetric algorithms accepted; listing them refuses
// "none" and HMAC (which would let a public key be used as a shared secret).
var allowedAlgs = []string{"EdDSA", "ES256", "RS256"}

// tokenClaims are the claims read from an access token. They implement
// jwt.Claims themselves instead of embedding jwt.RegisteredClaims, whose
// NumericDate also takes a date written as a JSON string ("exp":"1700000000").
type tokenClaims struct {
	Issuer        string           `json:"iss,omitempty"`
	Subject       string           `json:"sub,omitempty"`
	Audience      jwt.ClaimStrings `json:"aud,omitempty"`
	ExpiresAt     *numericDate     `json:"exp,omitempty"`
	NotBefore     *numericDate     `json:"nbf,omitempty"`
	IssuedAt      *numericDate     `json:"iat,omitempty"`
	Email         string           `json:"email,omitempty"`
	EmailVerified optionalBool     `json:"email_verified,omitzero"`
	Scope         string           `json:"scope,omitempty"`
	Scp           scopeList        `json:"scp,omitempty"`
	// Workspace is the service account's workspace, in this server's own
	// tokens (issuer.go).
	Workspace string `json:"workspace,omitempty"`
}

func (c tokenClaims) GetExpirationTime() (*jwt.NumericDate, error) { return c.ExpiresAt.date(), nil }
func (c tokenClaims) GetNotBefore() (*jwt.NumericDate, error)      { return c.NotBefore.date(), nil }
func (c tokenClaims) GetIssuedAt() (*jwt.NumericDate, error)       { return c.IssuedAt.date(), nil }
func (c tokenClaims) GetIssuer() (string, error)                   { return c.Issuer, nil }
func (c tokenClaims) GetSubject() (string, error)                  { return c.Subject, nil }
func (c tokenClaims) GetAudience() (jwt.ClaimStrings, error)       { return c.Audience, nil }

// numericDate is an RFC 7519 NumericDate: a JSON number of seconds, never a
// string, which jwt.NumericDate would also accept.
type numericDate struct{ jwt.NumericDate }

func (d *numericDate) UnmarshalJSON(b []byte) error {
	if len(b) == 0 || b[0] != '-' && (b[0] < '0' || b[0] > '9') {
		return errNotNumericDate
	}
	return d.NumericDate.UnmarshalJSON(b)
}

var errNotNumericDate = errors.New("exp, nbf and iat must be JSON numbers (RFC 7519 NumericDate)")

func (d *numericDate) date() *jwt.NumericDate {
	if d == nil {
		return nil
	}
	return &d.NumericDate
}

// optionalBool is a boolean claim that remembers whether it was sent. A few
// issuers (older Amazon Cognito) write email_verified as the string "true"
// or "false", so those count too; null counts as false (the issuer says it
// does not know); anything else is refused rather than read as absent.
type optionalBool struct{ present, value bool }

func (b *optionalBool) UnmarshalJSON(raw []byte) error {
	switch string(raw) {
	case "true", `"true"`:
		*b = optionalBool{present: true, value: true}
	case "false", `"false"`, "null":
		*b = optionalBool{present: true}
	default:
		return errors.New("email_verified must be true or false")
	}
	return nil
}

func (b optionalBool) MarshalJSON() ([]byte, error) { return json.Marshal(b.value) }

// scopeList accepts scp as an array (Okta, Azure) or a space-separated string.
type scopeList []string

func (s *scopeList) UnmarshalJSON(b []byte) error {
	var list []string
	if err := json.Unmarshal(b, &list); err == nil {
		*s = list
		return nil
	}
	var str string
	if err := json.Unmarshal(b, &str); err != nil {
		return errors.New("scp must be a string or an array of strings")
	}
	*s = splitScopes(str)
	return nil
}

// splitScopes splits a scope string on U+0020 only, as RFC 6749 §3.3
// defines it; empty items (repeated spaces) are dropped. strings.Fields would
// also split on a no-break space, so "workspaces:list\u00a0admin" would
// grant admin.
func splitScopes(s string) []string {
	var scopes []string
	for item := range strings.SplitSeq(s, " ") {
		if item != "" {
			scopes = append(scopes, item)
		}
	}
	return scopes
}

// JWTVerifier checks access tokens. Verified tokens are cached (signature
// checks cost ~50 µs of CPU each), bounded in number, and never past the
// token's own exp or cacheTTL, whichever comes first.
type JWTVerifier struct {
	keyfunc jwt.Keyfunc
	parser  *jwt.Parser
	closeFn func()
	now     func() time.Time
	// requireEmailVerified: VerifierConfig.RequireEmailVerified.
	requireEmailVerified bool
	// devIssuer: the development issuer is the one trusted (a refused
	// signature then gets a hint about --data-dir).
	devIssuer bool
	// own is this server's issuer of service-account tokens
	// (TrustOwnIssuer), ownParser the parser for its tokens.
	own       *Issuer
	ownParser *jwt.Parser

	mu    sync.RWMutex
	cache map[string]cachedToken
}

type cachedToken struct {
	principal *Principal
	exp       time.Time
	until     time.Time
}

const (
	tokenCacheSize = 10000
	cacheTTL       = 5 * time.Minute
)

// NewJWTVerifier builds the verifier for cfg. A JWKS URL is fetched now and
// refreshed in the background until Close.
func NewJWTVerifier(ctx context.Context, cfg VerifierConfig) (*JWTVerifier, error) {
	opts := []jwt.ParserOption{
		jwt.WithValidMethods(allowedAlgs),
		jwt.WithExpirationRequired(),
		jwt.WithLeeway(tokenLeeway),
		// Canonical base64url only: leniently decoded, a token with another
		// last character can carry the same signature bytes.
		jwt.WithStrictDecoding(),
	}
	v := &JWTVerifier{closeFn: func() {}, now: time.Now, cache: make(map[string]cachedToken),
		requireEmailVerified: cfg.RequireEmailVerified}
	if cfg.Now != nil {
		v.now = cfg.Now
		opts = append(opts, jwt.WithTimeFunc(cfg.Now))
	}
	switch {
	case cfg.JWKSURL != "":
		kctx, cancel := context.WithCancel(ctx)
		kf, err := keyfunc.NewDefaultCtx(kctx, []string{cfg.JWKSURL})
		if err != nil {
			cancel()
			return nil, fmt.Errorf("load JWKS from %s: %w", cfg.JWKSURL, err)
		}
		v.keyfunc, v.closeFn = kf.Keyfunc, cancel
	case cfg.JWKSFile != "":
		raw, err := os.ReadFile(cfg.JWKSFile)
		if err != nil {
			return nil, fmt.Errorf("read JWKS file: %w", err)
		}
		kf, err := keyfunc.NewJWKSetJSON(raw)
		if err != nil {
			return nil, fmt.Errorf("parse JWKS file %s: %w", cfg.JWKSFile, err)
		}
		v.keyfunc = kf.Keyfunc
	case cfg.PublicKeyFile != "":
		key, err := readPublicKey(cfg.PublicKeyFile)
		if err != nil {
			return nil, err
		}
		v.keyfunc = staticKey(key)
	case cfg.DevIssuer != nil:
		v.keyfunc = staticKey(cfg.DevIssuer.PublicKey())
		cfg.Issuer = DevIssuerName
		v.devIssuer = true
	default:
		return nil, errors.New("no JWT issuer configured: set --jwks-url, --jwks-file or --jwt-public-key")
	}
	if cfg.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(cfg.Issuer))
	}
	if cfg.Audience != "" {
		opts = append(opts, jwt.WithAudience(cfg.Audience))
	}
	v.parser = jwt.NewParser(opts...)
	return v, nil
}

// TrustOwnIssuer makes the verifier accept the tokens of this server's own
// issuer beside the configured one. A token is the issuer's when its iss is
// the issuer's URL or its kid one of the issuer's keys; it is then verified
// with those keys alone, and must name a service account and its workspace.
func (v *JWTVerifier) TrustOwnIssuer(i *Issuer) {
	v.own = i
	v.ownParser = jwt.NewParser(jwt.WithValidMethods([]string{jwt.SigningMethodEdDSA.Alg()}), jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(), jwt.WithLeeway(tokenLeeway), jwt.WithStrictDecoding(), jwt.WithIssuer(i.cfg.PublicURL), jwt.WithTimeFunc(v.now))
}

// Close stops the background JWKS refresh.
func (v *JWTVerifier) Close() { v.closeFn() }

// Verify checks the token's signature and time and registered claims and
// returns its principal, which callers must not modify (it is shared through
// the cache). The error text is safe to show the client.
func (v *JWTVerifier) Verify(token string) (*Principal, time.Time, error) {
	now := v.now()
	v.mu.RLock()
	c, ok := v.cache[token]
	v.mu.RUnlock()
	if ok && now.Before(c.until) {
		return c.principal, c.exp, nil
	}
	p, exp, err := v.verify(token)
	if err != nil {
		return nil, time.Time{}, err
	}
	until := now.Add(cacheTTL)
	if exp.Before(until) {
		until = exp
	}
	v.mu.Lock()
	if len(v.cache) >= tokenCacheSize {
		// Evict expired entries, or any (map order is random) if none are.
		for k, e := range v.cache {
			if !now.Before(e.until) || len(v.cache) >= tokenCacheSize {
				delete(v.cache, k)
			}
			if len(v.cache) < tokenCacheSize*9/10 {
				break
			}
		}
	}
	v.cache[token] = cachedToken{principal: p, exp: exp, until: until}
	v.mu.Unlock()
	return p, exp, nil
}

func (v *JWTVerifier) verify(token string) (*Principal, time.Time, error) {
	if v.isOwn(token) {
		return v.verifyOwn(token)
	}
	var claims tokenClaims
	if _, err := v.parser.ParseWithClaims(token, &claims, v.keyfunc); err != nil {
		if errors.Is(err, jwt.ErrTokenExpired) {
			return nil, time.Time{}, fmt.Errorf("invalid token: %w", ErrTokenExpired)
		}
		reason := tokenErrorReason(err)
		if v.devIssuer && errors.Is(err, jwt.ErrTokenSignatureInvalid) {
			// The usual cause in development: serve and token read the
			// issuer key from different directories.
			reason += "; a token from controlplane token must be minted with the --data-dir serve uses"
		}
		return nil, time.Time{}, fmt.Errorf("invalid token: %s", reason)
	}
	if claims.Subject == "" {
		return nil, time.Time{}, errors.New("invalid token: no sub claim")
	}
	if store.IsServiceAccountID(claims.Subject) {
		// Otherwise a person whose IdP sub happened to start with the
		// prefix would act as that service account's member row.
		return nil, time.Time{}, fmt.Errorf("invalid token: subjects starting with %q are reserved for this server's service accounts", store.ServiceAccountPrefix)
	}
	scopes := append(splitScopes(claims.Scope), claims.Scp...)
	verified := !v.requireEmailVerified
	if claims.EmailVerified.present {
		verified = claims.EmailVerified.value
	}
	return &Principal{Sub: claims.Subject, Email: store.NormalizeEmail(claims.Email), EmailVerified: verified, Scopes: scopes},
		claims.ExpiresAt.Time, nil
}

// isOwn tells whether token claims to be this server's own (by iss or kid).
// Read without verifying: it only selects the keys that verify it.
func (v *JWTVerifier) isOwn(token string) bool {
	if v.own == nil {
		return false
	}
	var claims tokenClaims
	t, _, err := jwt.NewParser().ParseUnverified(token, &claims)
	if err != nil {
		return false
	}
	kid, _ := t.Header["kid"].(string)
	return claims.Issuer == v.own.cfg.PublicURL || kid != "" && v.own.ownsKID(kid)
}

// verifyOwn verifies a token of this server's issuer: a service account's.
func (v *JWTVerifier) verifyOwn(token string) (*Principal, time.Time, error) {
	var claims tokenClaims
	if _, err := v.ownParser.ParseWithClaims(token, &claims, v.own.keyfunc); err != nil {
		if errors.Is(err, jwt.ErrTokenExpired) {
			return nil, time.Time{}, fmt.Errorf("invalid token: %w", ErrTokenExpired)
		}
		return nil, time.Time{}, fmt.Errorf("invalid token: %s", tokenErrorReason(err))
	}
	if !store.IsServiceAccountID(claims.Subject) || claims.Workspace == "" {
		return nil, time.Time{}, errors.New("invalid token: not a service account's (sub and workspace claims)")
	}
	return &Principal{Sub: claims.Subject, Scopes: splitScopes(claims.Scope), BoundWorkspace: claims.Workspace, ServiceAccount: true},
		claims.ExpiresAt.Time, nil
}

// ErrTokenExpired is wrapped by Verify's error when the token is past its
// exp (metrics tell it apart from other refusals: a client that does not
// refresh, not someone guessing).
var ErrTokenExpired = errors.New("token expired")

// tokenErrorReason keeps the client-facing reason short and fixed.
func tokenErrorReason(err error) string {
	switch {
	case errors.Is(err, jwt.ErrTokenExpired):
		return "token expired"
	case errors.Is(err, jwt.ErrTokenNotValidYet), errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		return "token not valid yet"
	case errors.Is(err, jwt.ErrTokenSignatureInvalid), errors.Is(err, jwt.ErrTokenUnverifiable):
		return "signature not verifiable with the trusted keys or algorithm not allowed (EdDSA, ES256, RS256)"
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		return "wrong issuer"
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		return "wrong audience"
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return "a required claim (exp) is missing"
	case errors.Is(err, errNotNumericDate):
		return errNotNumericDate.Error()
	case errors.Is(err, jwt.ErrTokenMalformed):
		return "malformed token"
	}
	return "token rejected"
}

func staticKey(key crypto.PublicKey) jwt.Keyfunc {
	return func(*jwt.Token) (any, error) { return key, nil }
}

func readPublicKey(path string) (crypto.PublicKey, error) {
	raw, err := os.ReadFile(path) //nolint:gosec // G304: the operator's --jwt-public-key file, read as configured
	if err != nil {
		return nil, fmt.Errorf("read JWT public key: %w", err)
	}
	block, _ := pem.Decode(raw)
	if block == nil {
		return nil, fmt.Errorf("%s is not PEM: expected a -----BEGIN PUBLIC KEY----- block", path)
	}
	key, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse public key %s: %w", path, err)
	}
	switch key.(type) {
	case ed25519.PublicKey, *ecdsa.PublicKey, *rsa.PublicKey:
		return key, nil
	}
	return nil, fmt.Errorf("%s: unsupported key type %T (use Ed25519, ECDSA P-256 or RSA)", path, key)
}
