package auth_test

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
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/membership-api/controlplane/auth"
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
	if err := os.WriteFile(jwksFile, jwks(keys), 0o600); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write(jwks(keys)) // a failed write shows as the verifier's error
	}))
	defer srv.Close()

	const iss, aud = "https://idp.example", "controlplane"
	configs := map[string]func(k issuerKey) auth.VerifierConfig{
		"JWKSFile": func(issuerKey) auth.VerifierConfig { return auth.VerifierConfig{JWKSFile: jwksFile} },
		"JWKSURL":  func(issuerKey) auth.VerifierConfig { return auth.VerifierConfig{JWKSURL: srv.URL} },
		"PEM": func(k issuerKey) auth.VerifierConfig {
			path := filepath.Join(dir, k.jwk["kid"]+".pem")
			if err := os.WriteFile(path, k.pem, 0o600); err != nil {
				t.Fatal(err)
			}
			return auth.VerifierConfig{PublicKeyFile: path}
		},
	}
	for name, cfgFor := range configs {
		for _, k := range keys {
			t.Run(name+"/"+k.alg.Alg(), func(t *testing.T) {
				cfg := cfgFor(k)
				cfg.Issuer, cfg.Audience = iss, aud
				v, err := auth.NewJWTVerifier(context.Background(), cfg)
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
	if err := os.WriteFile(path, keys[1].pem, 0o600); err != nil {
		t.Fatal(err)
	}
	v, err := auth.NewJWTVerifier(context.Background(), auth.VerifierConfig{PublicKeyFile: path})
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

// verifierFor is a verifier trusting k's public key as a PEM file.
func verifierFor(t *testing.T, k issuerKey, cfg auth.VerifierConfig) *auth.JWTVerifier {
	t.Helper()
	cfg.PublicKeyFile = filepath.Join(t.TempDir(), "key.pem")
	if err := os.WriteFile(cfg.PublicKeyFile, k.pem, 0o600); err != nil {
		t.Fatal(err)
	}
	v, err := auth.NewJWTVerifier(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(v.Close)
	return v
}

// TestJWTVerifier_ScopesSplitOnSpaceOnly: scope strings are split on U+0020
// only (RFC 6749 §3.3), so a no-break space or a tab joins two names into
// one that matches nothing; repeated spaces are harmless.
func TestJWTVerifier_ScopesSplitOnSpaceOnly(t *testing.T) {
	k := newIssuerKeys(t)[2]
	v := verifierFor(t, k, auth.VerifierConfig{})
	exp := time.Now().Add(time.Hour).Unix()
	for _, tc := range []struct {
		claim, value string
		has, lacks   []string
	}{
		{"scope", "workspaces:list\u00a0admin", nil, []string{"admin", "workspaces:list", "workspaces:invite"}},
		{"scp", "workspaces:list\u00a0admin", nil, []string{"admin", "workspaces:list"}},
		{"scope", "workspaces:list\tadmin", nil, []string{"admin", "workspaces:list"}},
		{"scope", "workspaces:list\u2003admin", nil, []string{"admin", "workspaces:list"}},
		{"scope", "  workspaces:list   workspaces:invite ", []string{"workspaces:list", "workspaces:invite"}, []string{"admin", ""}},
		{"scp", " workspaces:list  workspaces:invite", []string{"workspaces:list", "workspaces:invite"}, []string{"admin"}},
	} {
		p, _, err := v.Verify(k.sign(t, jwt.MapClaims{"sub": "u", "exp": exp, tc.claim: tc.value}))
		if err != nil {
			t.Fatalf("%s %q: %v", tc.claim, tc.value, err)
		}
		if len(tc.has) > 0 && !p.HasScopes(tc.has) {
			t.Errorf("%s %q: scopes %q, want %q", tc.claim, tc.value, p.Scopes, tc.has)
		}
		for _, s := range tc.lacks {
			if p.HasScopes([]string{s}) {
				t.Errorf("%s %q: scopes %q grant %q", tc.claim, tc.value, p.Scopes, s)
			}
		}
	}
}

// TestJWTVerifier_NumericDatesOnly: exp, nbf and iat written as JSON strings
// are refused (RFC 7519 NumericDate is a number); numbers, fractional ones
// included, are accepted.
func TestJWTVerifier_NumericDatesOnly(t *testing.T) {
	k := newIssuerKeys(t)[2]
	v := verifierFor(t, k, auth.VerifierConfig{})
	now := time.Now()
	exp, past := now.Add(time.Hour).Unix(), now.Add(-time.Minute).Unix()
	str := func(n int64) string { return strconv.FormatInt(n, 10) }
	for name, c := range map[string]jwt.MapClaims{
		"exp string": {"sub": "u", "exp": str(exp)},
		"nbf string": {"sub": "u", "exp": exp, "nbf": str(past)},
		"iat string": {"sub": "u", "exp": exp, "iat": str(past)},
		"exp bool":   {"sub": "u", "exp": true},
	} {
		_, _, err := v.Verify(k.sign(t, c))
		if err == nil || !strings.HasPrefix(err.Error(), "invalid token") {
			t.Errorf("%s: got %v, want refused", name, err)
		}
	}
	if _, _, err := v.Verify(k.sign(t, jwt.MapClaims{"sub": "u", "exp": float64(exp) + 0.5, "nbf": past, "iat": past})); err != nil {
		t.Errorf("numeric dates: %v", err)
	}
}

// TestJWTVerifier_StrictBase64: a signature whose last base64url character
// carries non-zero unused bits decodes, leniently, to the same bytes; it is
// refused so that one token has one spelling.
func TestJWTVerifier_StrictBase64(t *testing.T) {
	k := newIssuerKeys(t)[2] // Ed25519: 64 signature bytes, 86 characters, 4 unused bits at the end
	v := verifierFor(t, k, auth.VerifierConfig{})
	tok := k.sign(t, jwt.MapClaims{"sub": "u", "exp": time.Now().Add(time.Hour).Unix()})
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	last := strings.IndexByte(alphabet, tok[len(tok)-1])
	variant := tok[:len(tok)-1] + string(alphabet[last|1])
	if variant == tok {
		variant = tok[:len(tok)-1] + string(alphabet[last|2])
	}
	orig, _ := base64.RawURLEncoding.DecodeString(tok[strings.LastIndexByte(tok, '.')+1:])
	same, err := base64.RawURLEncoding.DecodeString(variant[strings.LastIndexByte(variant, '.')+1:])
	if err != nil || string(orig) != string(same) {
		t.Fatalf("test setup: the variant must decode leniently to the same signature (%v)", err)
	}
	if _, _, err := v.Verify(tok); err != nil {
		t.Fatalf("original token: %v", err)
	}
	if _, _, err := v.Verify(variant); err == nil {
		t.Error("a non-canonical spelling of the signature was accepted")
	}
}

// TestJWTVerifier_EmailVerified: email_verified false always makes the email
// untrusted; a token without the claim is trusted unless the verifier
// requires the claim; the development issuer vouches for the email it puts in.
func TestJWTVerifier_EmailVerified(t *testing.T) {
	k := newIssuerKeys(t)[2]
	lenient := verifierFor(t, k, auth.VerifierConfig{})
	strict := verifierFor(t, k, auth.VerifierConfig{RequireEmailVerified: true})
	exp := time.Now().Add(time.Hour).Unix()
	for _, tc := range []struct {
		name            string
		claim           any // nil: no email_verified claim
		lenient, strict bool
	}{
		{"true", true, true, true},
		{"false", false, false, false},
		{"absent", nil, true, false},
		{"string true", "true", true, true},
		{"string false", "false", false, false},
		{"null", jsonNull{}, false, false},
	} {
		c := jwt.MapClaims{"sub": "u", "exp": exp, "email": "u@example.com"}
		if tc.claim != nil {
			c["email_verified"] = tc.claim
		}
		tok := k.sign(t, c)
		for _, v := range []struct {
			v    *auth.JWTVerifier
			want bool
		}{{lenient, tc.lenient}, {strict, tc.strict}} {
			p, _, err := v.v.Verify(tok)
			if err != nil {
				t.Fatalf("%s: %v", tc.name, err)
			}
			if p.EmailVerified != v.want {
				t.Errorf("%s: EmailVerified %v, want %v", tc.name, p.EmailVerified, v.want)
			}
		}
	}
	for _, bad := range []any{"yes", 1, "", map[string]any{}} {
		tok := k.sign(t, jwt.MapClaims{"sub": "u", "exp": exp, "email": "u@example.com", "email_verified": bad})
		if _, _, err := lenient.Verify(tok); err == nil {
			t.Errorf("email_verified %#v: accepted, want refused", bad)
		}
	}

	dev, err := auth.LoadDevIssuer(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	devVerifier, err := auth.NewJWTVerifier(context.Background(), auth.VerifierConfig{DevIssuer: dev, RequireEmailVerified: true})
	if err != nil {
		t.Fatal(err)
	}
	for email, want := range map[string]bool{"u@example.com": true, "": false} {
		tok, err := dev.Sign(auth.TokenRequest{Sub: "u", Email: email, TTL: time.Hour}, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if p, _, err := devVerifier.Verify(tok); err != nil || p.EmailVerified != want {
			t.Errorf("development token with email %q: got %+v %v, want EmailVerified %v", email, p, err, want)
		}
	}
}

// jsonNull marshals as JSON null (a nil in MapClaims would too, but the test
// table uses nil for "no claim").
type jsonNull struct{}

func (jsonNull) MarshalJSON() ([]byte, error) { return []byte("null"), nil }

// BenchmarkJWTVerify measures one EdDSA token verification.
func BenchmarkJWTVerify(b *testing.B) {
	dev, err := auth.LoadDevIssuer(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	tok, _ := dev.Sign(auth.TokenRequest{Sub: "s", Scopes: []string{"workspaces:invite"}, TTL: time.Hour}, time.Now())
	v, err := auth.NewJWTVerifier(context.Background(), auth.VerifierConfig{DevIssuer: dev})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := v.Verify(tok); err != nil {
			b.Fatal(err)
		}
	}
}
