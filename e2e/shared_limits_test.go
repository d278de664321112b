package e2e_test

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// privateRedis starts a redis-server of the test's own (nothing on disk)
// and returns its URL and a function that kills it: a shared Redis cannot
// be taken away from the other tests.
func privateRedis(t *testing.T) (string, func()) {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		skipUnlessCI(t, "redis-server not installed (apt-get install redis-server): skipping the test of Redis going away")
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	cmd := exec.CommandContext(context.Background(), bin, "--port", fmt.Sprint(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	kill := func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	}
	t.Cleanup(kill)
	url := fmt.Sprintf("redis://127.0.0.1:%d/0", port)
	c := redis.NewClient(&redis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", port)})
	defer c.Close()
	for i := 0; c.Ping(context.Background()).Err() != nil; i++ {
		if i == 100 {
			t.Fatalf("redis-server on port %d does not answer", port)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return url, kill
}

// Two replicas share one count through Redis; when Redis goes away in the
// middle, both keep answering (never a 5xx), each counting on its own, and
// say so in their logs.
func TestRateLimits_SharedRedisGoesAway(t *testing.T) {
	t.Parallel()
	url, kill := privateRedis(t)
	prefix := uniquePrefix(t)
	flags := []string{"--redis", url, "--redis-prefix", prefix, "--rate-limit-caller", "10/m"}
	f := newFixture(t, "postgres", flags...)
	second := f.env.start(flags...)
	replicas := []*runningServer{f.srv, second}
	list := f.bearer(f.adminKey)
	// Shared: the remaining count goes down across both replicas.
	for i := range 4 {
		got := f.send(t, replicas[i%2], "GET", "/v0/users", list, "")
		if want := fmt.Sprintf(`"caller";r=%d;`, 9-i); got.status != 200 || !strings.HasPrefix(got.remaining, want) {
			t.Fatalf("request %d: got %d, RateLimit %q; want 200 and %s…", i, got.status, got.remaining, want)
		}
	}
	kill()
	// Each replica now counts alone, from its own full quota of 10: 10
	// answers each, then 429, and nothing else.
	for i, r := range replicas {
		for j := range 10 {
			if got := f.send(t, r, "GET", "/v0/users", list, ""); got.status != 200 {
				t.Fatalf("replica %d, request %d without Redis: got %d %s, want 200", i, j, got.status, got.message)
			}
		}
		check429(t, f.send(t, r, "GET", "/v0/users", list, ""), `"caller";q=10;w=60`)
		if logs := r.logs.String(); !strings.Contains(logs, "Redis unreachable, counting in this replica") {
			t.Errorf("replica %d: no warning about Redis in the log", i)
		}
	}
}
