package e2e_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/membership-api/controlplane/gen"
	"github.com/membership-api/controlplane/internal/cli"
)

// testCert writes a self-signed certificate for 127.0.0.1 with the given
// serial to certFile and keyFile, the key first (as a renewal would, the
// certificate being what a server checks), and returns the certificate.
func testCert(t *testing.T, serial int64, certFile, keyFile string) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "controlplane test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	// Replaced by rename, as certbot and Kubernetes do: a reader never
	// sees half a file.
	for _, f := range []struct {
		path string
		pem  *pem.Block
	}{{keyFile, &pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}}, {certFile, &pem.Block{Type: "CERTIFICATE", Bytes: der}}} {
		tmp := f.path + ".tmp"
		if err := os.WriteFile(tmp, pem.EncodeToMemory(f.pem), 0o600); err != nil {
			t.Fatal(err)
		}
		// A later modification time than the file replaced, whatever the
		// file system's time granularity.
		later := time.Now().Add(time.Duration(serial) * time.Minute)
		if err := os.Chtimes(tmp, later, later); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, f.path); err != nil {
			t.Fatal(err)
		}
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

var httpsListening = regexp.MustCompile(`msg=listening addr=(https://\S+)`)

// startHTTPS runs serve with args until the test ends and returns its base URL.
func startHTTPS(t *testing.T, args []string) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	done := make(chan int, 1)
	go func() {
		code := cli.Run(ctx, args, io.Discard, pw)
		pw.Close()
		done <- code
	}()
	t.Cleanup(func() { cancel(); <-done })
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			if m := httpsListening.FindStringSubmatch(sc.Text()); m != nil {
				addr <- m[1]
			}
		}
	}()
	select {
	case u := <-addr:
		return u
	case code := <-done:
		t.Fatalf("serve exited %d before listening", code)
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not start")
	}
	return ""
}

// tlsClient trusts the given certificates and opens a connection per
// request (so each request sees the certificate served at that moment);
// every answer is checked against the YAML.
func tlsClient(t *testing.T, certs ...*x509.Certificate) *http.Client {
	pool := x509.NewCertPool()
	for _, c := range certs {
		pool.AddCert(c)
	}
	return &http.Client{Timeout: 30 * time.Second, Transport: &checkedTransport{t: t, rt: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, DisableKeepAlives: true}}}
}

type checkedTransport struct {
	t  *testing.T
	rt http.RoundTripper
}

func (c *checkedTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := c.rt.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	if strings.HasPrefix(req.URL.Path, "/v0/") {
		checkResponse(c.t, req, resp, body)
	}
	return resp, nil
}

// TestTLS_ServesAndReloads: with --tls-cert-file/--tls-key-file serve
// answers HTTPS (TLS 1.2 or later), the API and the token endpoint
// included, and serves a replaced certificate without a restart.
func TestTLS_ServesAndReloads(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "sqlite")
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	first := testCert(t, 1, certFile, keyFile)
	base := startHTTPS(t, e.args("serve", "--addr", "127.0.0.1:0", "--tls-cert-file", certFile, "--tls-key-file", keyFile, "--tls-check-interval", "50ms"))
	if !strings.HasPrefix(base, "https://127.0.0.1:") {
		t.Fatalf("listening on %s, want https://", base)
	}
	f := &fixture{env: e, srv: &runningServer{URL: base}}
	f.addPrincipals(t)

	// Only the first certificate is trusted: the API and the token endpoint on it.
	c := tlsClient(t, first)
	post := func(c *http.Client, path, auth, body string) (*http.Response, []byte) {
		t.Helper()
		req, _ := http.NewRequestWithContext(context.Background(), http.MethodPost, base+path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", auth)
		if strings.HasPrefix(auth, "Bearer ") {
			req.Header.Set("X-Blaxel-Workspace", f.ws)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		return resp, b
	}
	resp, b := post(c, "/v0/service_accounts", "Bearer "+f.token(f.adminSub, f.adminEmail, "admin"), `{"name":"deployer","role":"admin"}`)
	var sa gen.ServiceAccountWithSecret
	if resp.StatusCode != 200 || json.Unmarshal(b, &sa) != nil || resp.TLS == nil || resp.TLS.Version < tls.VersionTLS12 {
		t.Fatalf("create service account over HTTPS: %d %s (TLS %+v)", resp.StatusCode, b, resp.TLS)
	}
	basic := serviceAccount{clientID: deref(sa.ClientId), secret: deref(sa.ClientSecret)}.basic()
	if resp, b := post(c, "/v0/oauth/token", basic, `{"grant_type":"client_credentials"}`); resp.StatusCode != 200 {
		t.Fatalf("token over HTTPS: %d %s", resp.StatusCode, b)
	}

	// TLS 1.1 and older are refused.
	old := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
		MaxVersion: tls.VersionTLS11, InsecureSkipVerify: true}}} //nolint:gosec // G402: the handshake must fail on the version alone
	healthz, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, base+"/healthz", nil)
	if resp, err := old.Do(healthz); err == nil {
		resp.Body.Close()
		t.Error("a TLS 1.1 client was served")
	}

	// A replaced certificate is served from the next check, no restart.
	second := testCert(t, 2, certFile, keyFile)
	both := tlsClient(t, first, second)
	waitFor(t, "the replaced certificate", func() bool {
		resp, err := both.Do(healthz.Clone(t.Context()))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.TLS.PeerCertificates[0].SerialNumber.Int64() == 2
	})
	if resp, b := post(tlsClient(t, second), "/v0/oauth/token", basic, `{"grant_type":"client_credentials"}`); resp.StatusCode != 200 {
		t.Fatalf("token over HTTPS after the reload: %d %s", resp.StatusCode, b)
	}
}

// TestTLS_TokenEndpointRefusesPlainHTTP: behind a trusted proxy, a token
// request the proxy received in plain HTTP from a remote client is refused
// with 400 invalid_request (RFC 6749 §3.2); one it received over HTTPS is
// served, and so is a loopback client's own plain request.
func TestTLS_TokenEndpointRefusesPlainHTTP(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "sqlite", "--trusted-proxies", "127.0.0.1/32")
	sa := f.oauthClient(t, "deployer", "admin")
	body := `{"grant_type":"client_credentials"}`
	for _, tc := range []struct {
		name       string
		proto, xff string
		want       int
	}{
		{"ProxyPlainHTTP", "http", "203.0.113.9", 400},
		{"ProxyWithoutProto", "", "203.0.113.9", 400},
		{"ProxyHTTPS", "https", "203.0.113.9", 200},
		{"LoopbackClient", "", "", 200},
	} {
		h := http.Header{"Content-Type": {"application/json"}, "Authorization": {sa.basic()}}
		if tc.proto != "" {
			h.Set("X-Forwarded-Proto", tc.proto)
		}
		if tc.xff != "" {
			h.Set("X-Forwarded-For", tc.xff)
		}
		resp, b := f.do(t, "POST", "/v0/oauth/token", h, body)
		if resp.StatusCode != tc.want {
			t.Errorf("%s: %d %s, want %d", tc.name, resp.StatusCode, b, tc.want)
			continue
		}
		if tc.want == 400 {
			var e gen.OAuthError
			if json.Unmarshal(b, &e) != nil || e.Error != "invalid_request" || !strings.Contains(deref(e.ErrorDescription), "TLS") {
				t.Errorf("%s: %s, want invalid_request saying TLS is required", tc.name, b)
			}
		}
	}
}
