package webhook

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
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

// TestCheckURL_RefusesLoopbackSpellings: every other way of writing a
// loopback or otherwise non-public address is refused at registration,
// flag or not where the spelling itself is the problem: IPv6 forms that
// embed an IPv4 address (which netip's predicates do not look into), case
// and a trailing dot, the short and numeric IPv4 forms the C resolver and
// curl read as addresses, and names that resolve to loopback locally
// (localhost and the hosts file, so no test touches the network).
func TestCheckURL_RefusesLoopbackSpellings(t *testing.T) {
	for _, tc := range []struct {
		url           string
		allowLoopback bool // refused even with --webhooks-allow-loopback
	}{
		{"https://[::127.0.0.1]/x", true},
		{"https://[::7f00:1]/x", true},
		{"https://[::a9fe:a9fe]/x", true},
		{"https://[::169.254.169.254]/x", true},
		{"https://[::ffff:0:7f00:1]/x", true},
		{"https://[::ffff:0:a9fe:a9fe]/x", true},
		{"https://[::ffff:0:a00:1]/x", true},
		{"https://LOCALHOST/x", false},
		{"https://LocalHost:8443/x", false},
		{"https://localhost./x", false},
		{"https://LOCALHOST./x", false},
		{"https://api.localhost./x", false},
		{"https://127.1/x", true},
		{"https://127.0.1/x", true},
		{"https://2130706433/x", true},
		{"https://0x7f000001/x", true},
		{"https://0X7F000001/x", true},
		{"https://0x7f.0x0.0x0.0x1/x", true},
		{"https://0177.0.0.1/x", true},
		{"https://0177.1/x", true},
		{"https://017700000001/x", true},
		{"https://0/x", true},
		{"https://0.0/x", true},
		{"https://10.1/x", true},
		{"https://0xa9fea9fe/x", true},
		{"https://1.2.3.4.5/x", true},
		{"https://4294967296/x", true},
	} {
		for _, allow := range []bool{false, true} {
			if allow && !tc.allowLoopback {
				continue
			}
			if err := CheckURL(tc.url, allow); err == nil {
				t.Errorf("%s (allowLoopback %v): accepted, want refused", tc.url, allow)
			}
		}
	}
	// Names the hosts file (or the resolver itself) maps to 127.0.0.1.
	for _, name := range hostsFileLoopbackNames(t) {
		for _, raw := range []string{"https://" + name + "/x", "https://" + strings.ToUpper(name) + "./x"} {
			if err := CheckURL(raw, false); !errors.Is(err, ErrRefusedAddress) {
				t.Errorf("%s: got %v, want ErrRefusedAddress", raw, err)
			}
			if err := CheckURL(raw, true); err != nil {
				t.Errorf("%s with allowLoopback: %v", raw, err)
			}
		}
	}
}

// hostsFileLoopbackNames are names that resolve, without the network, to
// loopback only: localhost, and the machine's own name where /etc/hosts
// maps it to 127.0.0.1 (as on the CI VM and in containers).
func hostsFileLoopbackNames(t *testing.T) []string {
	t.Helper()
	var names []string
	candidates := []string{"localhost"}
	if h, err := os.Hostname(); err == nil && h != "" {
		candidates = append(candidates, h)
	}
	for _, name := range candidates {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		addrs, err := net.DefaultResolver.LookupIPAddr(ctx, name)
		cancel()
		if err != nil || len(addrs) == 0 {
			continue
		}
		loopback := true
		for _, a := range addrs {
			loopback = loopback && a.IP.IsLoopback()
		}
		if loopback {
			names = append(names, name)
		}
	}
	if len(names) == 0 {
		t.Fatal("localhost does not resolve to loopback on this machine")
	}
	return names
}

// TestCheckURL_AcceptsPublic: public literals and names stay accepted; a
// name that does not resolve is accepted as before (the dialer checks what
// it resolves to at every connection). Nothing here connects anywhere.
func TestCheckURL_AcceptsPublic(t *testing.T) {
	for _, raw := range []string{"https://93.184.216.34/x", "https://[2606:2800:220:1::1]/x", "https://example.com/x",
		"https://EXAMPLE.com./x", "https://hooks.example.com/a?token=s3cr3t", "https://no-such-host.invalid/x",
		"https://1e100.net/x", "https://0x7f.example/x", "https://123.example/x"} {
		for _, allow := range []bool{false, true} {
			if err := CheckURL(raw, allow); err != nil {
				t.Errorf("%s (allowLoopback %v): %v", raw, allow, err)
			}
		}
	}
	for _, raw := range []string{"http://LOCALHOST:9000/h", "http://127.0.0.1:9000/h", "http://[::1]:80/", "https://[::1]/"} {
		if err := CheckURL(raw, true); err != nil {
			t.Errorf("%s with allowLoopback: %v", raw, err)
		}
	}
}

// TestDialControl_RefusesEmbeddedIPv4: the connect-time check refuses the
// IPv6 forms that embed an IPv4 address, with or without the loopback
// flag, before any connect(); loopback proper stays allowed by the flag.
func TestDialControl_RefusesEmbeddedIPv4(t *testing.T) {
	for _, addr := range []string{"[::127.0.0.1]:443", "[::7f00:1]:443", "[::a9fe:a9fe]:443", "[::a00:1]:443",
		"[::ffff:0:7f00:1]:443", "[::ffff:0:a9fe:a9fe]:443", "[::ffff:0:a00:1]:443", "[::]:443"} {
		for _, allow := range []bool{false, true} {
			if err := dialControl(allow)("tcp6", addr, nil); !errors.Is(err, ErrRefusedAddress) {
				t.Errorf("%s (allowLoopback %v): got %v, want ErrRefusedAddress", addr, allow, err)
			}
		}
	}
	// The IPv4-mapped form is how a dual-stack socket reaches an IPv4
	// address: it is judged as that address.
	if err := dialControl(false)("tcp6", "[::ffff:127.0.0.1]:443", nil); !errors.Is(err, ErrRefusedAddress) {
		t.Errorf("[::ffff:127.0.0.1]:443: got %v, want ErrRefusedAddress", err)
	}
	for addr, allow := range map[string]bool{"[::1]:443": true, "[::ffff:127.0.0.1]:443": true, "127.0.0.1:443": true, "93.184.216.34:443": false, "[2606:2800:220:1::1]:443": false} {
		if err := dialControl(allow)("tcp", addr, nil); err != nil {
			t.Errorf("%s (allowLoopback %v): %v", addr, allow, err)
		}
	}
}
