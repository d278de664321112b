package server

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
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"

	"controlplane/store"
)

// Principal is the authenticated caller.
type Principal struct {
	Sub    string
	Email  string
	Scopes []string
	// APIKey is set when the caller authenticated with an API key; the key
	// binds the caller to one workspace.
	APIKey *store.APIKey
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

// AuthConfig selects the JWT issuer the server trusts.
type AuthConfig struct {
	// JWKSURL, JWKSFile and PublicKeyFile name the external issuer's keys;
	// set at most one. With none set the built-in development issuer is used.
	JWKSURL       string
	JWKSFile      string
	PublicKeyFile string
	Issuer        string // required iss; empty: not checked (dev issuer: always checked)
	Audience      string // required aud; empty: not checked
	// DevIssuer is the development issuer, trusted only when no external one is configured.
	DevIssuer *DevIssuer
}

// External tells whether an external issuer is configured.
func (c AuthConfig) External() bool {
	return c.JWKSURL != "" || c.JWKSFile != "" || c.PublicKeyFile != ""
}

// allowedAlgs are the asymmetric algorithms accepted; listing them refuses
// "none" and HMAC (which would let a public key be used as a shared secret).
var allowedAlgs = []string{"EdDSA", "ES256", "RS256"}

// tokenClaims are the claims read from an access token.
type tokenClaims struct {
	jwt.RegisteredClaims
	Email string    `json:"email,omitempty"`
	Scope string    `json:"scope,omitempty"`
	Scp   scopeList `json:"scp,omitempty"`
}

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
	*s = strings.Fields(str)
	return nil
}

// JWTVerifier checks access tokens. Verified tokens are cached (signature
// checks cost ~50 µs of CPU each), bounded in number, and never past the
// token's own exp or cacheTTL, whichever comes first.
type JWTVerifier struct {
	keyfunc jwt.Keyfunc
	parser  *jwt.Parser
	closeFn func()
	now     func() time.Time

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
func NewJWTVerifier(ctx context.Context, cfg AuthConfig) (*JWTVerifier, error) {
	opts := []jwt.ParserOption{
		jwt.WithValidMethods(allowedAlgs),
		jwt.WithExpirationRequired(),
		jwt.WithLeeway(30 * time.Second),
	}
	v := &JWTVerifier{closeFn: func() {}, now: time.Now, cache: make(map[string]cachedToken)}
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
	var claims tokenClaims
	if _, err := v.parser.ParseWithClaims(token, &claims, v.keyfunc); err != nil {
		return nil, time.Time{}, fmt.Errorf("invalid token: %s", tokenErrorReason(err))
	}
	if claims.Subject == "" {
		return nil, time.Time{}, errors.New("invalid token: no sub claim")
	}
	scopes := strings.Fields(claims.Scope)
	scopes = append(scopes, claims.Scp...)
	return &Principal{Sub: claims.Subject, Email: store.NormalizeEmail(claims.Email), Scopes: scopes},
		claims.ExpiresAt.Time, nil
}

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
	case errors.Is(err, jwt.ErrTokenMalformed):
		return "malformed token"
	}
	return "token rejected"
}

func staticKey(key crypto.PublicKey) jwt.Keyfunc {
	return func(*jwt.Token) (any, error) { return key, nil }
}

func readPublicKey(path string) (crypto.PublicKey, error) {
	raw, err := os.ReadFile(path)
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

// credentialHeaders are read in order: Blaxel's SDKs and CLI send
// "X-Blaxel-Authorization: Bearer <key or token>"; everything else sends
// the standard "Authorization: Bearer".
var credentialHeaders = []string{"X-Blaxel-Authorization", "Authorization"}

// bearerCredential extracts the bearer credential, or "" when none is sent.
func bearerCredential(r *http.Request) (string, error) {
	for _, h := range credentialHeaders {
		v := r.Header.Get(h)
		if v == "" {
			continue
		}
		scheme, cred, ok := strings.Cut(v, " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(cred) == "" {
			return "", fmt.Errorf("the %s header must be \"Bearer <token or API key>\"", h)
		}
		return strings.TrimSpace(cred), nil
	}
	return "", nil
}
