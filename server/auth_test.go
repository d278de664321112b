package server_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"controlplane/server"
)

// issuerKey is a signing key with its algorithm, the JWK of its public half
// and the PEM of its public half.
type issuerKey struct {
	alg    jwt.SigningMethod
	signer crypto.Signer
	jwk    map[string]string
	pem    []byte
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func newIssuerKeys(t *testing.T) []issuerKey {
	t.Helper()
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	rs, _ := rsa.GenerateKey(rand.Reader, 2048)
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	ecBytes, _ := ec.PublicKey.Bytes() // uncompressed point: 0x04 || X || Y
	keys := []issuerKey{
		{alg: jwt.SigningMethodES256, signer: ec, jwk: map[string]string{"kty": "EC", "crv": "P-256", "kid": "ec", "alg": "ES256",
			"x": b64(ecBytes[1:33]), "y": b64(ecBytes[33:])}},
		{alg: jwt.SigningMethodRS256, signer: rs, jwk: map[string]string{"kty": "RSA", "kid": "rsa", "alg": "RS256",
			"n": b64(rs.N.Bytes()), "e": b64(big.NewInt(int64(rs.E)).Bytes())}},
		{alg: jwt.SigningMethodEdDSA, signer: ed, jwk: map[string]string{"kty": "OKP", "crv": "Ed25519", "kid": "ed", "alg": "EdDSA",
			"x": b64(ed.Public().(ed25519.PublicKey))}},
	}
	for i := range keys {
		der, err := x509.MarshalPKIXPublicKey(keys[i].signer.Public())
		if err != nil {
			t.Fatal(err)
		}
		keys[i].pem = pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	}
	return keys
}

func (k issuerKey) sign(t *testing.T, claims jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(k.alg, claims)
	tok.Header["kid"] = k.jwk["kid"]
	s, err := tok.SignedString(k.signer)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func claims(iss, aud string, exp time.Time) jwt.MapClaims {
	return jwt.MapClaims{"iss": iss, "aud": aud, "sub": "user-1", "email": "User@Example.com", "scp": []string{"workspaces:invite"}, "exp": exp.Unix()}
}

func jwks(keys []issuerKey) []byte {
	set := map[string][]map[string]string{"keys": {}}
	for _, k := range keys {
		set["keys"] = append(set["keys"], k.jwk)
	}
	b, _ := json.Marshal(set)
	return b
}

// TestJWTVerifier_ExternalIssuers checks each way of trusting an external
// issuer with each accepted algorithm, and the iss/aud/exp checks.
func TestJWTVerifier_ExternalIssuers(t *testing.T) {
	keys := newIssuerKeys(t)
	dir := t.TempDir()
	jwksFile := filepath.Join(dir, "jwks.json")
	os.WriteFile(jwksFile, jwks(keys), 0o600)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write(jwks(keys)) }))
	defer srv.Close()

	const iss, aud = "https://idp.example", "controlplane"
	configs := map[string]func(k issuerKey) server.AuthConfig{
		"JWKSFile": func(issuerKey) server.AuthConfig { return server.AuthConfig{JWKSFile: jwksFile} },
		"JWKSURL":  func(issuerKey) server.AuthConfig { return server.AuthConfig{JWKSURL: srv.URL} },
		"PEM": func(k issuerKey) server.AuthConfig {
			path := filepath.Join(dir, k.jwk["kid"]+".pem")
			os.WriteFile(path, k.pem, 0o600)
			return server.AuthConfig{PublicKeyFile: path}
		},
	}
	for name, cfgFor := range configs {
		for _, k := range keys {
			t.Run(name+"/"+k.alg.Alg(), func(t *testing.T) {
				cfg := cfgFor(k)
				cfg.Issuer, cfg.Audience = iss, aud
				v, err := server.NewJWTVerifier(context.Background(), cfg)
				if err != nil {
					t.Fatal(err)
				}
				defer v.Close()
				p, _, err := v.Verify(k.sign(t, claims(iss, aud, time.Now().Add(time.Hour))))
				if err != nil {
					t.Fatalf("valid token refused: %v", err)
				}
				if p.Sub != "user-1" || p.Email != "user@example.com" || !p.HasScopes([]string{"workspaces:invite"}) || p.HasScopes([]string{"workspaces:list"}) {
					t.Errorf("principal: got %+v", p)
				}
				for reason, tok := range map[string]string{
					"wrong issuer":   k.sign(t, claims("https://evil.example", aud, time.Now().Add(time.Hour))),
					"wrong audience": k.sign(t, claims(iss, "other", time.Now().Add(time.Hour))),
					"expired":        k.sign(t, claims(iss, aud, time.Now().Add(-time.Hour))),
				} {
					if _, _, err := v.Verify(tok); err == nil {
						t.Errorf("%s: accepted", reason)
					}
				}
			})
		}
	}
}

// TestJWTVerifier_KeyConfusion: a token signed with HMAC using the public
// key as the secret, or with another key of the same type, is refused.
func TestJWTVerifier_KeyConfusion(t *testing.T) {
	keys := newIssuerKeys(t)
	others := newIssuerKeys(t)
	path := filepath.Join(t.TempDir(), "rsa.pem")
	os.WriteFile(path, keys[1].pem, 0o600)
	v, err := server.NewJWTVerifier(context.Background(), server.AuthConfig{PublicKeyFile: path})
	if err != nil {
		t.Fatal(err)
	}
	hmac, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, claims("", "", time.Now().Add(time.Hour))).SignedString(keys[1].pem)
	for name, tok := range map[string]string{
		"HMAC with the public key": hmac,
		"another RSA key":          others[1].sign(t, claims("", "", time.Now().Add(time.Hour))),
		"an EC key":                keys[0].sign(t, claims("", "", time.Now().Add(time.Hour))),
	} {
		if _, _, err := v.Verify(tok); err == nil || !strings.HasPrefix(err.Error(), "invalid token") {
			t.Errorf("%s: got %v, want refused", name, err)
		}
	}
}
