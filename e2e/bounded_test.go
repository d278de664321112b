package e2e_test

import (
	"bufio"
	"context"
	"net"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestLimits_HeaderFlood: hundreds of connections each sending an unfinished
// header block of 1 MiB (what once took the server from 29 MB to 1.3 GB) hold
// a bounded amount of memory, and /healthz answers meanwhile.
// HEADER_FLOOD_CONNS=1000 reproduces the attack's size (figures in the log).
func TestLimits_HeaderFlood(t *testing.T) {
	// Not parallel: it measures this process's heap and RSS, which other
	// tests' servers and clients share.
	conns := 200
	if n, err := strconv.Atoi(os.Getenv("HEADER_FLOOD_CONNS")); err == nil {
		conns = n
	}
	f := newTenant(t, "sqlite")
	u, err := url.Parse(f.srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	heapBefore, rssBefore := heapInUse(), rss()

	pad := []byte("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: " + strings.Repeat("a", 1<<20))
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		open []net.Conn
		got  = map[string]int{}
	)
	for range conns {
		wg.Go(func() {
			c, err := (&net.Dialer{Timeout: 5 * time.Second}).DialContext(context.Background(), "tcp", u.Host)
			if err != nil {
				mu.Lock()
				got["dial error"]++
				mu.Unlock()
				return
			}
			mu.Lock()
			open = append(open, c)
			mu.Unlock()
			c.SetDeadline(time.Now().Add(20 * time.Second))
			_, werr := c.Write(pad) // never finished: no blank line
			outcome := "held open"
			if werr != nil {
				outcome = "cut off while sending"
			}
			if resp, err := http.ReadResponse(bufio.NewReader(c), nil); err == nil {
				outcome = resp.Status
				resp.Body.Close()
			}
			mu.Lock()
			got[outcome]++
			mu.Unlock()
		})
	}
	// Sample while the attack is on: every connection is open or has been
	// answered by now.
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	peakHeap, peakRSS := heapBefore, rssBefore
	healthy := 0
	for sampling := true; sampling; {
		select {
		case <-done:
			sampling = false
		case <-time.After(100 * time.Millisecond):
		}
		peakHeap, peakRSS = max(peakHeap, heapInUse()), max(peakRSS, rss())
		resp, err := httpGet(f.srv.URL + "/healthz")
		if err != nil {
			t.Fatalf("/healthz during the flood: %v", err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("/healthz during the flood: %d", resp.StatusCode)
		}
		healthy++
	}
	for _, c := range open {
		c.Close()
	}
	t.Logf("%d connections × 1 MiB unfinished headers: outcomes %v; heap in use %d → peak %d MB; process RSS %d → peak %d MB; /healthz answered %d times",
		conns, got, heapBefore>>20, peakHeap>>20, rssBefore>>20, peakRSS>>20, healthy)
	if got["431 Request Header Fields Too Large"] == 0 {
		t.Errorf("no connection was answered 431: %v", got)
	}
	// 1 MiB per connection would be 200 MB; the header cap keeps each to
	// about 20 KB of buffers.
	if growth := peakHeap - heapBefore; growth > 64<<20 {
		t.Errorf("heap grew by %d MB under the flood, want < 64 MB", growth>>20)
	}
}

// heapInUse is the live heap of this process (the server runs in it) after
// a collection.
func heapInUse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

// rss is this process's resident set size in bytes (0 where /proc is missing).
func rss() uint64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}
