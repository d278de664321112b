package auth

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/golang-jwt/jwt/v5"

	"github.com/membership-api/controlplane/store"
)

// Defaults of IssuerConfig's zero fields; the serve flags take theirs from here.
const (
	DefaultTokenTTL   = time.Hour
	DefaultKeyRefresh = 30 * time.Second
	// DefaultPublicURL is the issuer when none is configured (serve
	// defaults to the address it listens on).
	DefaultPublicURL = "http://localhost:8080"
	// MaxTokenTTL bounds --oauth-token-ttl: retired keys are deleted
	// (oauth-keys rotate) once no token they signed can be valid, which
	// RetiredKeyRetention assumes is at most this long.
	MaxTokenTTL = 24 * time.Hour
	// JWKSMaxAge is how long a client may cache /.well-known/jwks.json.
	JWKSMaxAge = 5 * time.Minute
	// RetiredKeyRetention is how long a key stays in the database after a
	// later one started signing: past MaxTokenTTL plus every slack below.
	RetiredKeyRetention = 2 * MaxTokenTTL
)

// tokenLeeway is the clock skew allowed on exp, nbf and iat, for every
// issuer (the parsers') and for how long a retired key stays published.
const tokenLeeway = 30 * time.Second

// MinRotationDelay is the least time between adding a signing key and its
// first signature: every replica must have loaded it (refresh) and every
// JWKS cache must have fetched it (JWKSMaxAge), so that no token it signs is
// refused by a verifier that does not know it yet.
func MinRotationDelay(refresh time.Duration) time.Duration {
	if refresh <= 0 {
		refresh = DefaultKeyRefresh
	}
	return JWKSMaxAge + refresh
}

// IssuerConfig configures the server's own OAuth 2.0 issuer (the token
// endpoint of the client-credentials flow).
type IssuerConfig struct {
	// PublicURL is the issuer identifier (the tokens' iss) and the base of
	// the metadata's URLs: the URL clients reach the server at, the same on
	// every replica.
	PublicURL string
	// TokenTTL is the lifetime of the access tokens issued.
	TokenTTL time.Duration
	// KeyRefresh is how often the signing keys are re-read from the
	// database (a rotation reaches every replica within it).
	KeyRefresh time.Duration
	// Now replaces the clock tokens are issued and keys published by (a
	// dev server's test clock: the store dates the keys by the same one);
	// nil means time.Now.
	Now func() time.Time
	// AllowPlainHTTP lets the token endpoint answer requests that came in
	// plain HTTP from a non-loopback address, which RFC 6749 §3.2 forbids:
	// for a deployment whose TLS ends at a proxy that sends no
	// X-Forwarded-Proto (--oauth-allow-plain-http).
	AllowPlainHTTP bool
}

// issuerKey is a stored signing key, parsed.
type issuerKey struct {
	store.SigningKey
	private ed25519.PrivateKey
	public  ed25519.PublicKey
}

// KeyStore holds the issuer's signing keys (store.Store is one): in the
// database, so every replica signs and verifies alike.
type KeyStore interface {
	// EnsureFirstSigningKey stores key as the first generation, signing at
	// once, unless a key exists already (then it does nothing).
	EnsureFirstSigningKey(ctx context.Context, key store.SigningKey) error
	// SigningKeys returns every signing key, oldest generation first.
	SigningKeys(ctx context.Context) ([]store.SigningKey, error)
}

// Issuer signs service-account access tokens and publishes its keys. Keys
// live in the database (store.SigningKey), so every replica signs and
// verifies alike; each re-reads them every KeyRefresh.
type Issuer struct {
	cfg   IssuerConfig
	store KeyStore
	log   *slog.Logger
	now   func() time.Time

	mu   sync.RWMutex
	keys []issuerKey // by generation
}

// NewIssuer loads the signing keys, making the first one if there is none,
// and re-reads them every cfg.KeyRefresh until ctx ends.
func NewIssuer(ctx context.Context, cfg IssuerConfig, st KeyStore, log *slog.Logger) (*Issuer, error) {
	if cfg.TokenTTL <= 0 {
		cfg.TokenTTL = DefaultTokenTTL
	}
	if cfg.TokenTTL > MaxTokenTTL {
		return nil, fmt.Errorf("the OAuth token TTL %s is over the maximum %s", cfg.TokenTTL, MaxTokenTTL)
	}
	if cfg.KeyRefresh <= 0 {
		cfg.KeyRefresh = DefaultKeyRefresh
	}
	if cfg.PublicURL == "" {
		cfg.PublicURL = DefaultPublicURL
	}
	cfg.PublicURL = strings.TrimRight(cfg.PublicURL, "/")
	if u, err := url.Parse(cfg.PublicURL); err != nil || u.Host == "" || u.Scheme != "https" && u.Scheme != "http" || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("--public-url %q must be an absolute http(s) URL without query or fragment, e.g. https://api.example.com", cfg.PublicURL)
	}
	i := &Issuer{cfg: cfg, store: st, log: log, now: time.Now}
	if cfg.Now != nil {
		i.now = cfg.Now
	}
	first, err := NewSigningKey("serve")
	if err != nil {
		return nil, err
	}
	if err := st.EnsureFirstSigningKey(ctx, first); err != nil {
		return nil, err
	}
	if err := i.load(ctx); err != nil {
		return nil, err
	}
	go i.refresh(ctx)
	return i, nil
}

// NewSigningKey makes a fresh Ed25519 signing key with a random kid, for
// the store (crypto/ed25519 and x509's PKCS #8: nothing hand-made).
func NewSigningKey(by string) (store.SigningKey, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return store.SigningKey{}, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return store.SigningKey{}, err
	}
	kid := make([]byte, 16)
	if _, err := rand.Read(kid); err != nil {
		return store.SigningKey{}, err
	}
	return store.SigningKey{KID: base64.RawURLEncoding.EncodeToString(kid), Algorithm: jwt.SigningMethodEdDSA.Alg(),
		PrivateKey: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), CreatedBy: by}, nil
}

func (i *Issuer) refresh(ctx context.Context) {
	t := time.NewTicker(i.cfg.KeyRefresh)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := i.load(ctx); err != nil && ctx.Err() == nil {
				i.log.WarnContext(ctx, "could not re-read the OAuth signing keys; using the ones loaded before", "err", err)
			}
		}
	}
}

// load reads the keys from the database.
func (i *Issuer) load(ctx context.Context) error {
	stored, err := i.store.SigningKeys(ctx)
	if err != nil {
		return err
	}
	keys := make([]issuerKey, 0, len(stored))
	for _, k := range stored {
		block, _ := pem.Decode(k.PrivateKey)
		if block == nil {
			return fmt.Errorf("signing key %s is not PEM", k.KID)
		}
		parsed, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			return fmt.Errorf("signing key %s: %w", k.KID, err)
		}
		priv, ok := parsed.(ed25519.PrivateKey)
		if !ok || k.Algorithm != jwt.SigningMethodEdDSA.Alg() {
			return fmt.Errorf("signing key %s: not an Ed25519 (EdDSA) key", k.KID)
		}
		keys = append(keys, issuerKey{SigningKey: k, private: priv, public: priv.Public().(ed25519.PublicKey)})
	}
	i.mu.Lock()
	i.keys = keys
	i.mu.Unlock()
	return nil
}

// retiredFor is how long a key stays published after the next key started
// signing: a replica may sign with it until its next refresh, the token
// then lives TokenTTL, and verifiers allow tokenLeeway past exp.
func (i *Issuer) retiredFor() time.Duration {
	return i.cfg.KeyRefresh + i.cfg.TokenTTL + tokenLeeway
}

// keyState tells, for keys ordered by generation, which one signs at now
// (-1: none yet) and whether key n is published at now: every key not yet
// signing, the signing one, and retired ones until their last token expired.
func keyState(keys []issuerKey, now time.Time, retiredFor time.Duration) (signing int, published []bool) {
	signing = -1
	published = make([]bool, len(keys))
	for n, k := range keys {
		if !k.SignFrom.After(now) {
			signing = n
		}
	}
	for n := range keys {
		switch {
		case n >= signing:
			published[n] = true
		default:
			// Key n stopped signing when key n+1 started.
			published[n] = now.Before(keys[n+1].SignFrom.Add(retiredFor))
		}
	}
	return signing, published
}

// signingKey is the key that signs now.
func (i *Issuer) signingKey(now time.Time) (issuerKey, error) {
	i.mu.RLock()
	defer i.mu.RUnlock()
	signing, _ := keyState(i.keys, now, i.retiredFor())
	if signing < 0 {
		return issuerKey{}, errors.New("no OAuth signing key is valid yet")
	}
	return i.keys[signing], nil
}

// publishedKeys are the keys tokens may be verified with now.
func (i *Issuer) publishedKeys(now time.Time) []issuerKey {
	i.mu.RLock()
	defer i.mu.RUnlock()
	_, published := keyState(i.keys, now, i.retiredFor())
	var keys []issuerKey
	for n, ok := range published {
		if ok {
			keys = append(keys, i.keys[n])
		}
	}
	return keys
}

// keyfunc finds the published key a token names by kid.
func (i *Issuer) keyfunc(t *jwt.Token) (any, error) {
	kid, _ := t.Header["kid"].(string)
	for _, k := range i.publishedKeys(i.now()) {
		if k.KID == kid {
			return k.public, nil
		}
	}
	return nil, fmt.Errorf("%w: unknown kid", jwt.ErrTokenUnverifiable)
}

// ownsKID tells whether kid is one of this issuer's published keys: how a
// token is recognised as this server's own, beside its iss.
func (i *Issuer) ownsKID(kid string) bool {
	for _, k := range i.publishedKeys(i.now()) {
		if k.KID == kid {
			return true
		}
	}
	return false
}

// Config is the issuer's configuration, its defaults filled in.
func (i *Issuer) Config() IssuerConfig { return i.cfg }

// ServiceAccountToken is what a token is issued for.
type ServiceAccountToken struct {
	ClientID  string
	Workspace string
	Scopes    []string
}

// Sign issues an access token: EdDSA with the current key, its kid in the
// header. It fails when no key signs yet.
func (i *Issuer) Sign(req ServiceAccountToken) (token string, exp time.Time, err error) {
	now := i.now()
	key, err := i.signingKey(now)
	if err != nil {
		return "", time.Time{}, err
	}
	exp = now.Add(i.cfg.TokenTTL)
	claims := tokenClaims{
		Issuer:    i.cfg.PublicURL,
		Subject:   req.ClientID,
		IssuedAt:  &numericDate{*jwt.NewNumericDate(now)},
		NotBefore: &numericDate{*jwt.NewNumericDate(now)},
		ExpiresAt: &numericDate{*jwt.NewNumericDate(exp)},
		Scope:     JoinScopes(req.Scopes),
		Workspace: req.Workspace,
	}
	tok := jwt.NewWithClaims(jwt.SigningMethodEdDSA, claims)
	tok.Header["kid"] = key.KID
	signed, err := tok.SignedString(key.private)
	return signed, exp, err
}

// JWKS is the JSON Web Key Set of the published keys (public parts only),
// written by jwkset.
func (i *Issuer) JWKS(ctx context.Context) ([]byte, error) {
	set := jwkset.NewMemoryStorage()
	for _, k := range i.publishedKeys(i.now()) {
		jwk, err := jwkset.NewJWKFromKey(k.public, jwkset.JWKOptions{Metadata: jwkset.JWKMetadataOptions{
			ALG: jwkset.AlgEdDSA, KID: k.KID, USE: jwkset.UseSig}})
		if err != nil {
			return nil, fmt.Errorf("JWK of key %s: %w", k.KID, err)
		}
		if err := set.KeyWrite(ctx, jwk); err != nil {
			return nil, err
		}
	}
	raw, err := set.JSONPublic(ctx)
	if err != nil {
		return nil, err
	}
	// An empty set must still be {"keys":[]}, not {"keys":null}.
	var parsed struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(raw, &parsed); err != nil {
		return nil, err
	}
	if parsed.Keys == nil {
		return []byte(`{"keys":[]}`), nil
	}
	return raw, nil
}
