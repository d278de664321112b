package auth

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// DevIssuerName is the iss of tokens from the development issuer.
const DevIssuerName = "controlplane-dev-issuer"

// devKeyFile is where the development issuer keeps its private key.
const devKeyFile = "dev-issuer-ed25519.pem"

// DevIssuer signs tokens for local use (`token` command) with an Ed25519 key
// kept in the data directory. `serve` trusts it only when no external issuer
// is configured.
type DevIssuer struct {
	key ed25519.PrivateKey
	kid string
}

// LoadDevIssuer reads the issuer key from dataDir, creating it on first use.
func LoadDevIssuer(dataDir string) (*DevIssuer, error) {
	path := filepath.Join(dataDir, devKeyFile)
	raw, err := os.ReadFile(path) //nolint:gosec // G304: a fixed name in the operator's --data-dir
	if errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(dataDir, 0o700); err != nil {
			return nil, fmt.Errorf("create data directory %s: %w", dataDir, err)
		}
		_, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return nil, err
		}
		der, err := x509.MarshalPKCS8PrivateKey(priv)
		if err != nil {
			return nil, err
		}
		raw = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
		// O_EXCL: two processes starting at once must not overwrite each other's key.
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600) //nolint:gosec // G304: a fixed name in the operator's --data-dir
		if err == nil {
			_, err = f.Write(raw)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
		}
		if errors.Is(err, fs.ErrExist) {
			return LoadDevIssuer(dataDir)
		}
		if err != nil {
			return nil, fmt.Errorf("write development issuer key %s: %w", path, err)
		}
	} else if err != nil {
		return nil, fmt.Errorf("read development issuer key: %w", err)
	}
	block, _ := pem.Decode(raw)
	if block == nil {
		return nil, fmt.Errorf("%s is not a PEM private key: delete it to make a new one", path)
	}
	parsed, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse %s: %w (delete it to make a new one)", path, err)
	}
	priv, ok := parsed.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("%s does not hold an Ed25519 key: delete it to make a new one", path)
	}
	sum := sha256.Sum256(priv.Public().(ed25519.PublicKey))
	return &DevIssuer{key: priv, kid: base64.RawURLEncoding.EncodeToString(sum[:8])}, nil
}

// PublicKey is the key tokens are verified with.
func (d *DevIssuer) PublicKey() ed25519.PublicKey { return d.key.Public().(ed25519.PublicKey) }

// TokenRequest describes a development token.
type TokenRequest struct {
	Sub    string
	Email  string
	Scopes []string
	TTL    time.Duration
}

// Sign returns a signed EdDSA JWT for req.
func (d *DevIssuer) Sign(req TokenRequest, now time.Time) (string, error) {
	if req.Sub == "" {
		return "", errors.New("a token needs a sub")
	}
	if req.TTL <= 0 {
		return "", errors.New("the token TTL must be positive")
	}
	claims := tokenClaims{
		Issuer:    DevIssuerName,
		Subject:   req.Sub,
		IssuedAt:  &numericDate{*jwt.NewNumericDate(now)},
		NotBefore: &numericDate{*jwt.NewNumericDate(now)},
		ExpiresAt: &numericDate{*jwt.NewNumericDate(now.Add(req.TTL))},
		Email:     req.Email,
		Scope:     strings.Join(req.Scopes, " "),
	}
	if req.Email != "" {
		// The developer vouches for the address they typed, as an IdP does
		// for one it has verified (a verifier may require the claim).
		claims.EmailVerified = optionalBool{present: true, value: true}
	}
	tok := jwt.NewWithClaims(jwt.SigningMethodEdDSA, claims)
	tok.Header["kid"] = d.kid
	return tok.SignedString(d.key)
}
