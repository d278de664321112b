package cli

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// writePair writes a self-signed certificate of serial and its key; a
// broken pair gets another key than the certificate's.
func writePair(t *testing.T, dir string, serial int64, mtime time.Time, broken bool) (certFile, keyFile string) {
	t.Helper()
	newKey := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	key := newKey()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	if broken {
		key = newKey()
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	for path, block := range map[string]*pem.Block{certFile: {Type: "CERTIFICATE", Bytes: der}, keyFile: {Type: "PRIVATE KEY", Bytes: keyDER}} {
		if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(path, mtime, mtime); err != nil {
			t.Fatal(err)
		}
	}
	return certFile, keyFile
}

// TestCertReloader: the certificate is re-read when the files change, at
// most once per check interval; a pair that does not load keeps the one
// loaded; a missing or broken pair at start is refused naming the flags.
func TestCertReloader(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	base := time.Now()
	certFile, keyFile := writePair(t, dir, 1, base, false)
	var logs strings.Builder
	r, err := newCertReloader(certFile, keyFile, time.Minute, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	now := base
	r.now = func() time.Time { return now }
	serial := func() int64 {
		t.Helper()
		c, err := r.getCertificate(&tls.ClientHelloInfo{})
		if err != nil {
			t.Fatal(err)
		}
		return c.Leaf.SerialNumber.Int64()
	}
	if got := serial(); got != 1 {
		t.Fatalf("serving %d, want 1", got)
	}
	writePair(t, dir, 2, base.Add(time.Minute), false)
	if got := serial(); got != 1 {
		t.Errorf("serving %d before the check interval passed, want still 1", got)
	}
	now = now.Add(time.Minute)
	if got := serial(); got != 2 {
		t.Errorf("serving %d after the files changed and the interval passed, want 2", got)
	}
	writePair(t, dir, 3, base.Add(2*time.Minute), true)
	now = now.Add(time.Minute)
	if got := serial(); got != 2 || !strings.Contains(logs.String(), "do not load") {
		t.Errorf("a broken pair: serving %d, log %q; want 2 kept and a warning", got, logs.String())
	}
	writePair(t, dir, 4, base.Add(3*time.Minute), false)
	now = now.Add(time.Minute)
	if got := serial(); got != 4 {
		t.Errorf("serving %d once the pair is whole again, want 4", got)
	}

	brokenCert, brokenKey := writePair(t, t.TempDir(), 5, base, true)
	for name, files := range map[string][2]string{
		"missing": {filepath.Join(dir, "nope.pem"), keyFile},
		"broken":  {brokenCert, brokenKey},
	} {
		if _, err := newCertReloader(files[0], files[1], time.Second, slog.New(slog.DiscardHandler)); err == nil || !strings.Contains(err.Error(), "--tls-cert-file") {
			t.Errorf("%s pair at start: %v, want an error naming --tls-cert-file", name, err)
		}
	}
	c := tlsConfig{certFile: certFile}
	if _, err := c.wrap(nil, slog.New(slog.DiscardHandler)); err == nil || !strings.Contains(err.Error(), "--tls-key-file") {
		t.Errorf("a certificate without a key: %v, want both flags asked for", err)
	}
}
