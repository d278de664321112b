package cli

// TLS for serve: a certificate and key from files, re-read when they change
// so a renewed certificate (certbot, cert-manager, a secret mounted by
// Kubernetes) is served without a restart (docs/operations/tls.md).

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// defaultTLSCheck is how often the files are checked for a change.
const defaultTLSCheck = 5 * time.Second

// tlsConfig is serve's TLS flags.
type tlsConfig struct {
	certFile, keyFile string
	check             time.Duration
}

func (c *tlsConfig) bind(fs *flag.FlagSet, allowPlainHTTP *bool) {
	fs.StringVar(&c.certFile, "tls-cert-file", "", "serve HTTPS with this PEM certificate chain (with --tls-key-file); re-read when it changes (default: plain HTTP)")
	fs.StringVar(&c.keyFile, "tls-key-file", "", "the PEM private key of --tls-cert-file")
	fs.DurationVar(&c.check, "tls-check-interval", defaultTLSCheck, "how often the certificate and key files are checked for a change; a replaced certificate is served from the next check")
	fs.BoolVar(allowPlainHTTP, "oauth-allow-plain-http", false, "let the token endpoint answer plain HTTP from non-loopback clients (RFC 6749 §3.2 requires TLS): only when TLS ends at a proxy that cannot send X-Forwarded-Proto (prefer --trusted-proxies)")
}

func (c *tlsConfig) enabled() bool { return c.certFile != "" || c.keyFile != "" }

// scheme is the URL scheme serve answers on.
func (c *tlsConfig) scheme() string {
	if c.enabled() {
		return "https"
	}
	return "http"
}

// wrap returns ln serving TLS when a certificate is configured, else ln.
func (c *tlsConfig) wrap(ln net.Listener, log *slog.Logger) (net.Listener, error) {
	if !c.enabled() {
		return ln, nil
	}
	if c.certFile == "" || c.keyFile == "" {
		return nil, errors.New("set both --tls-cert-file and --tls-key-file")
	}
	r, err := newCertReloader(c.certFile, c.keyFile, c.check, log)
	if err != nil {
		return nil, err
	}
	return tls.NewListener(ln, r.config()), nil
}

// certReloader serves the certificate of two files, re-read when either
// changes. It checks their modification time and size at most every check,
// on the handshake that finds the last check too old: no goroutine, no
// file watcher. fsnotify was the alternative, but renewals replace files
// through symlinks (certbot's live/, Kubernetes' ..data), which a watcher
// must follow by hand, while os.Stat follows them; a few seconds' delay
// does not matter for a certificate renewed weeks before it expires.
type certReloader struct {
	certFile, keyFile string
	check             time.Duration
	log               *slog.Logger
	now               func() time.Time

	cert atomic.Pointer[tls.Certificate]
	// mu is held by the one handshake checking the files; the others
	// serve the current certificate meanwhile.
	mu      sync.Mutex
	checked time.Time
	stamp   [2]fileStamp
}

type fileStamp struct {
	mod  time.Time
	size int64
}

func newCertReloader(certFile, keyFile string, check time.Duration, log *slog.Logger) (*certReloader, error) {
	r := &certReloader{certFile: certFile, keyFile: keyFile, check: check, log: log, now: time.Now}
	stamp, err := r.stamps()
	if err == nil {
		err = r.load(stamp)
	}
	if err != nil {
		return nil, fmt.Errorf("--tls-cert-file/--tls-key-file: %w", err)
	}
	return r, nil
}

// config is the server's TLS configuration: the standard library's
// defaults (its cipher suites and curves) from TLS 1.2 up, HTTP/2 offered.
func (r *certReloader) config() *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: r.getCertificate,
		NextProtos:     []string{"h2", "http/1.1"},
	}
}

func (r *certReloader) getCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	if r.mu.TryLock() {
		if now := r.now(); now.Sub(r.checked) >= r.check {
			r.checked = now
			r.reloadIfChanged()
		}
		r.mu.Unlock()
	}
	return r.cert.Load(), nil
}

func (r *certReloader) stamps() ([2]fileStamp, error) {
	var s [2]fileStamp
	for n, path := range []string{r.certFile, r.keyFile} {
		fi, err := os.Stat(path)
		if err != nil {
			return s, err
		}
		s[n] = fileStamp{mod: fi.ModTime(), size: fi.Size()}
	}
	return s, nil
}

// reloadIfChanged re-reads the files if either changed since the last
// load. A pair that does not load (the certificate replaced, its key not
// yet) keeps the current certificate, logged once per change of the files.
func (r *certReloader) reloadIfChanged() {
	stamp, err := r.stamps()
	if err != nil {
		if r.stamp != ([2]fileStamp{}) {
			r.log.Warn("TLS: cannot read the certificate files; serving the loaded certificate", "err", err)
			r.stamp = [2]fileStamp{}
		}
		return
	}
	if stamp == r.stamp {
		return
	}
	if err := r.load(stamp); err != nil {
		r.stamp = stamp
		r.log.Warn("TLS: the changed certificate files do not load; serving the loaded certificate until they do", "err", err)
	}
}

func (r *certReloader) load(stamp [2]fileStamp) error {
	cert, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err != nil {
		return err
	}
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		return err
	}
	cert.Leaf = leaf
	r.cert.Store(&cert)
	r.stamp = stamp
	r.log.Info("TLS: certificate loaded", "subject", leaf.Subject.String(), "dns_names", leaf.DNSNames,
		"not_after", leaf.NotAfter.UTC().Format(time.RFC3339), "file", r.certFile)
	if r.now().After(leaf.NotAfter) {
		r.log.Warn("TLS: the certificate has expired", "not_after", leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	return nil
}
