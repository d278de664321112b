package webhook

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestPublicAddr(t *testing.T) {
	for addr, want := range map[string]bool{
		"93.184.216.34": true, "2606:2800:220:1::1": true,
		"10.0.0.1": false, "172.16.5.4": false, "192.168.1.1": false, "127.0.0.1": false, "::1": false,
		"169.254.169.254": false, "fe80::1": false, "fd00::1": false, "100.64.0.1": false, "0.0.0.0": false,
		"::ffff:10.0.0.1": false, "64:ff9b::a00:1": false, "224.0.0.1": false, "255.255.255.255": false,
	} {
		if got := publicAddr(netip.MustParseAddr(addr), false); got != want {
			t.Errorf("%s: got %v, want %v", addr, got, want)
		}
	}
	if !publicAddr(netip.MustParseAddr("127.0.0.1"), true) || publicAddr(netip.MustParseAddr("10.0.0.1"), true) {
		t.Error("allowLoopback must allow loopback and nothing else")
	}
}

// TestClient_RefusesAtConnectionTime: the check runs on the address the
// client connects to, after resolution: "localhost" (a name, which a
// registration-time check of literals would let through) reaches no
// receiver unless loopback is allowed; redirects are not followed.
func TestClient_RefusesAtConnectionTime(t *testing.T) {
	var hits atomic.Int32
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		if r.URL.Path == "/redirect" {
			http.Redirect(w, r, "https://169.254.169.254/", http.StatusFound)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()
	pool := srv.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs
	url := strings.Replace(srv.URL, "127.0.0.1", "localhost", 1)
	get := func(c *http.Client, u string) (*http.Response, error) {
		req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, u, nil)
		if err != nil {
			t.Fatal(err)
		}
		return c.Do(req)
	}

	_, err := get(newClient(Config{Timeout: 5 * time.Second, RootCAs: pool}), url)
	if !errors.Is(err, ErrRefusedAddress) || hits.Load() != 0 {
		t.Errorf("localhost without the flag: got %v with %d requests received, want ErrRefusedAddress and none", err, hits.Load())
	}
	allowed := newClient(Config{Timeout: 5 * time.Second, RootCAs: pool, AllowLoopback: true})
	// The certificate names 127.0.0.1, not localhost.
	resp, err := get(allowed, srv.URL)
	if err != nil || resp.StatusCode != http.StatusNoContent {
		t.Fatalf("localhost with the flag: %v %v", resp, err)
	}
	resp.Body.Close()
	resp, err = get(allowed, srv.URL+"/redirect")
	if err != nil || resp.StatusCode != http.StatusFound {
		t.Fatalf("redirect: got %v %v, want the 302 itself", resp, err)
	}
	resp.Body.Close()
}

func TestCheckURL(t *testing.T) {
	for raw, loopback := range map[string]bool{"https://example.com/hook": false, "https://example.com:8443/h?x=1": false,
		"http://127.0.0.1:9000/h": true, "https://localhost/h": true, "http://[::1]:80/": true} {
		if err := CheckURL(raw, loopback); err != nil {
			t.Errorf("%s: %v", raw, err)
		}
	}
	for _, raw := range []string{"http://example.com/", "https://10.0.0.1/", "https://user@example.com/", "https://example.com/#x",
		"http://127.0.0.1/", "https://localhost/", "mailto:a@b.c", "/relative", "https://169.254.169.254/"} {
		if err := CheckURL(raw, false); err == nil {
			t.Errorf("%s: accepted", raw)
		}
	}
}
