package server

import (
	"crypto/tls"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
)

// TestRefusePlainHTTP: which token requests RFC 6749 §3.2's TLS rule lets through.
func TestRefusePlainHTTP(t *testing.T) {
	t.Parallel()
	_, proxies, _ := net.ParseCIDR("10.0.0.0/8")
	_, loopProxy, _ := net.ParseCIDR("127.0.0.0/8")
	for _, tc := range []struct {
		name    string
		remote  string
		tls     bool
		headers map[string]string
		trusted []*net.IPNet
		allow   bool
		want    bool // accepted
	}{
		{name: "LoopbackV4", remote: "127.0.0.1:5000", want: true},
		{name: "LoopbackV6", remote: "[::1]:5000", want: true},
		{name: "RemotePlain", remote: "192.0.2.7:5000"},
		{name: "RemoteTLS", remote: "192.0.2.7:5000", tls: true, want: true},
		{name: "RemotePlainAllowed", remote: "192.0.2.7:5000", allow: true, want: true},
		// A client's own X-Forwarded-Proto means nothing without a trusted proxy.
		{name: "UntrustedForwardedProto", remote: "192.0.2.7:5000", headers: map[string]string{"X-Forwarded-Proto": "https"}},
		{name: "ProxyHTTPS", remote: "10.1.2.3:5000", trusted: []*net.IPNet{proxies}, headers: map[string]string{"X-Forwarded-Proto": "https", "X-Forwarded-For": "198.51.100.4"}, want: true},
		{name: "ProxyHTTP", remote: "10.1.2.3:5000", trusted: []*net.IPNet{proxies}, headers: map[string]string{"X-Forwarded-Proto": "http", "X-Forwarded-For": "198.51.100.4"}},
		{name: "ProxySaysNothing", remote: "10.1.2.3:5000", trusted: []*net.IPNet{proxies}, headers: map[string]string{"X-Forwarded-For": "198.51.100.4"}},
		// A local proxy forwarding a remote client in plain HTTP: refused though loopback.
		{name: "LoopbackProxyHTTP", remote: "127.0.0.1:5000", trusted: []*net.IPNet{loopProxy}, headers: map[string]string{"X-Forwarded-Proto": "http", "X-Forwarded-For": "198.51.100.4"}},
		{name: "LoopbackProxyForwardsWithoutProto", remote: "127.0.0.1:5000", trusted: []*net.IPNet{loopProxy}, headers: map[string]string{"X-Forwarded-For": "198.51.100.4"}},
		{name: "LoopbackProxyHTTPS", remote: "127.0.0.1:5000", trusted: []*net.IPNet{loopProxy}, headers: map[string]string{"X-Forwarded-Proto": "https", "X-Forwarded-For": "198.51.100.4"}, want: true},
		{name: "LoopbackProxyOwnRequest", remote: "127.0.0.1:5000", trusted: []*net.IPNet{loopProxy}, want: true},
		// The proxy nearest the server appends last.
		{name: "ProxyChainLastWins", remote: "10.1.2.3:5000", trusted: []*net.IPNet{proxies}, headers: map[string]string{"X-Forwarded-Proto": "https, http", "X-Forwarded-For": "198.51.100.4"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := httptest.NewRequestWithContext(t.Context(), http.MethodPost, "/v0/oauth/token", nil)
			r.RemoteAddr = tc.remote
			if tc.tls {
				r.TLS = &tls.ConnectionState{}
			} else {
				r.TLS = nil
			}
			for k, v := range tc.headers {
				r.Header.Set(k, v)
			}
			oerr := refusePlainHTTP(r, tc.trusted, tc.allow)
			if got := oerr == nil; got != tc.want {
				t.Fatalf("accepted: got %v, want %v (%+v)", got, tc.want, oerr)
			}
			if oerr != nil && (oerr.status != http.StatusBadRequest || oerr.code != OAuthInvalidRequest) {
				t.Errorf("refusal: got %d %s, want 400 invalid_request", oerr.status, oerr.code)
			}
		})
	}
}
