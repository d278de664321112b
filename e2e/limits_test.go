package e2e_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/redis/go-redis/v9"

	"github.com/membership-api/controlplane/gen"
	"github.com/membership-api/controlplane/server"
)

// testRedisURL is the Redis the shared-limit tests use (.ci/run starts one);
// TEST_REDIS_URL= (empty) skips them, saying so.
func testRedisURL(t *testing.T) string {
	t.Helper()
	url, set := os.LookupEnv("TEST_REDIS_URL")
	if !set {
		url = "redis://127.0.0.1:6379/0"
	}
	if url == "" {
		t.Skip("TEST_REDIS_URL is empty: skipping the Redis tests")
	}
	opts, err := redis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(opts)
	defer c.Close()
	if err := c.Ping(context.Background()).Err(); err != nil {
		t.Fatalf("Redis at %s: %v (start one, e.g. redis-server --daemonize yes, or set TEST_REDIS_URL= to skip)", url, err)
	}
	return url
}

// uniquePrefix keeps each test's Redis keys apart from every other run's.
func uniquePrefix(_ *testing.T) string {
	b := make([]byte, 6)
	rand.Read(b)
	return "cptest-" + hex.EncodeToString(b) + ":"
}

// limited is one request's rate-limit answer.
type limited struct {
	status            int
	retryAfter        string
	policy, remaining string
	kind              string
	message           string
}

func (f *fixture) send(t *testing.T, srv *runningServer, method, path string, header http.Header, body string) limited {
	t.Helper()
	saved := f.srv
	f.srv = srv
	resp, b := f.do(t, method, path, header, body)
	f.srv = saved
	l := limited{status: resp.StatusCode, retryAfter: resp.Header.Get("Retry-After"),
		policy: resp.Header.Get("RateLimit-Policy"), remaining: resp.Header.Get("RateLimit")}
	if resp.StatusCode >= 400 {
		var e gen.Error
		if err := json.Unmarshal(b, &e); err != nil {
			t.Fatalf("%d with a body that is not an Error: %s", resp.StatusCode, b)
		}
		l.kind, l.message = e.Error, deref(e.Message)
	}
	return l
}

// check429 asserts a complete 429: status, Retry-After of at least a second,
// the IETF fields naming the quota, and the Error body.
func check429(t *testing.T, got limited, policy string) {
	t.Helper()
	if got.status != http.StatusTooManyRequests {
		t.Fatalf("got %d %s, want 429", got.status, got.message)
	}
	if s, err := strconv.Atoi(got.retryAfter); err != nil || s < 1 {
		t.Errorf("Retry-After %q, want whole seconds >= 1", got.retryAfter)
	}
	if got.policy != policy {
		t.Errorf("RateLimit-Policy %q, want %q", got.policy, policy)
	}
	name := policy[:strings.IndexByte(policy, ';')]
	if !strings.HasPrefix(got.remaining, name+";r=0;t=") {
		t.Errorf("RateLimit %q, want %s;r=0;t=…", got.remaining, name)
	}
	if got.kind != server.KindTooManyRequests || !strings.Contains(got.message, "retry in") {
		t.Errorf("error %q %q, want too_many_requests saying when to retry", got.kind, got.message)
	}
}

func TestRateLimits_InvitesPerWorkspace(t *testing.T) {
	t.Parallel()
	parallelDialects(t, func(t *testing.T, dialect string) {
		f := newFixture(t, dialect, "--rate-limit-workspace-invites", "3/h")
		admin := f.bearer(f.token(f.adminSub, f.adminEmail, "workspaces:invite"))
		// A caller who is not a member of acme gets 404s that must not
		// spend acme's budget.
		stranger := f.bearer(f.token(f.otherSub, f.otherEmail, "workspaces:invite"))
		for i := range 5 {
			if got := f.send(t, f.srv, "POST", "/v0/users", stranger, fmt.Sprintf(`{"email":"s%d@x.test"}`, i)); got.status != 404 {
				t.Fatalf("stranger: got %d, want 404", got.status)
			}
		}
		for i := range 3 {
			if got := f.send(t, f.srv, "POST", "/v0/users", admin, fmt.Sprintf(`{"email":"p%d@x.test"}`, i)); got.status != 200 {
				t.Fatalf("invite %d: got %d %s, want 200", i, got.status, got.message)
			}
		}
		before := f.countRows(t)
		check429(t, f.send(t, f.srv, "POST", "/v0/users", admin, `{"email":"p4@x.test"}`), `"workspace-invites";q=3;w=3600`)
		// The same admin through an API key: the quota is the workspace's.
		check429(t, f.send(t, f.srv, "POST", "/v0/users", f.bearer(f.adminKey), `{"email":"p5@x.test"}`), `"workspace-invites";q=3;w=3600`)
		after := f.countRows(t)
		if !maps.Equal(before, after) {
			t.Errorf("a refused invite changed rows: before %v, after %v", before, after)
		}
		// An outsider's change to acme while it is over its quota is
		// still a 404: only members learn of the quota.
		if got := f.send(t, f.srv, "POST", "/v0/users", stranger, `{"email":"s9@x.test"}`); got.status != 404 {
			t.Errorf("stranger while acme is over its quota: got %d %s, want 404", got.status, got.message)
		}
		// Other changes in the workspace and invites elsewhere go on.
		if got := f.send(t, f.srv, "POST", "/v0/users", with(stranger, server.WorkspaceHeader, f.otherWS), `{"email":"o@x.test"}`); got.status != 200 {
			t.Errorf("invite into another workspace: got %d %s, want 200", got.status, got.message)
		}
		role := with(f.bearer(f.token(f.adminSub, "", "workspaces:update")), "Content-Type", "application/json")
		if got := f.send(t, f.srv, "PUT", "/v0/users/p0@x.test", role, `{"role":"admin"}`); got.status != 200 {
			t.Errorf("role change: got %d %s, want 200", got.status, got.message)
		}
	})
}

// Operations acting on the workspace in their path (join, decline, leave)
// never spend the quota of the workspace a header names: anyone could
// otherwise exhaust another workspace's budget with no-op joins of their own.
func TestRateLimits_WorkspaceQuotaNotSpentThroughHeader(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "sqlite", "--rate-limit-workspace-writes", "2/h")
	other := with(f.bearer(f.token(f.otherSub, f.otherEmail, personScopes)), server.WorkspaceHeader, f.ws)
	for range 4 {
		if got := f.send(t, f.srv, "POST", "/v0/workspaces/"+f.otherWS+"/join", other, ""); got.status != 200 {
			t.Fatalf("no-op join of the caller's own workspace: got %d %s, want 200", got.status, got.message)
		}
	}
	role := with(f.bearer(f.token(f.adminSub, "", "workspaces:update")), "Content-Type", "application/json")
	for range 2 {
		if got := f.send(t, f.srv, "PUT", "/v0/users/"+f.memberSub, role, `{"role":"member"}`); got.status != 200 {
			t.Fatalf("acme's admin: got %d %s, want 200", got.status, got.message)
		}
	}
	check429(t, f.send(t, f.srv, "PUT", "/v0/users/"+f.memberSub, role, `{"role":"member"}`), `"workspace-writes";q=2;w=3600`)
}

func TestRateLimits_Caller(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "sqlite", "--rate-limit-caller", "3/m")
	list := f.bearer(f.token(f.adminSub, "", "workspaces:list"))
	for i := range 3 {
		got := f.send(t, f.srv, "GET", "/v0/users", list, "")
		if got.status != 200 {
			t.Fatalf("request %d: got %d, want 200", i, got.status)
		}
		if want := fmt.Sprintf(`"caller";r=%d;t=`, 2-i); got.policy != `"caller";q=3;w=60` || !strings.HasPrefix(got.remaining, want) {
			t.Errorf("request %d: RateLimit-Policy %q RateLimit %q, want \"caller\";q=3;w=60 and %s…", i, got.policy, got.remaining, want)
		}
	}
	check429(t, f.send(t, f.srv, "GET", "/v0/users", list, ""), `"caller";q=3;w=60`)
	// Another principal of the same workspace has its own budget, and so
	// has an API key of the same member.
	if got := f.send(t, f.srv, "GET", "/v0/users", f.bearer(f.token(f.memberSub, "", "workspaces:list")), ""); got.status != 200 {
		t.Errorf("other caller: got %d, want 200", got.status)
	}
	if got := f.send(t, f.srv, "GET", "/v0/users", f.bearer(f.adminKey), ""); got.status != 200 {
		t.Errorf("API key: got %d, want 200", got.status)
	}
}

func TestRateLimits_FailedAuthentication(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "sqlite", "--rate-limit-failed-auth", "3/m", "--trusted-proxies", "127.0.0.0/8")
	good := f.bearer(f.token(f.adminSub, "", "workspaces:list"))
	from := func(h http.Header, ip string) http.Header { return with(h, "X-Forwarded-For", ip) }
	// Requests without any credential are not guesses and do not count.
	for range 5 {
		if got := f.send(t, f.srv, "GET", "/v0/users", from(with(good, "Authorization", ""), "203.0.113.7"), ""); got.status != 401 {
			t.Fatalf("no credential: got %d, want 401", got.status)
		}
	}
	// A guess hidden behind an empty first Authorization line counts too.
	hidden := from(f.bearer(""), "203.0.113.7")
	hidden["Authorization"] = []string{"", "Bearer bl_guessed"}
	for i := range 3 {
		h := from(f.bearer("bl_guessed"), "203.0.113.7")
		if i == 0 {
			h = hidden
		}
		if got := f.send(t, f.srv, "GET", "/v0/users", h, ""); got.status != 401 {
			t.Fatalf("guess: got %d, want 401", got.status)
		}
	}
	// Past the quota the address is refused even with good credentials...
	check429(t, f.send(t, f.srv, "GET", "/v0/users", from(good, "203.0.113.7"), ""), `"failed-auth";q=3;w=60`)
	// ...while another client behind the same proxy is not, and successes
	// never count.
	for range 5 {
		if got := f.send(t, f.srv, "GET", "/v0/users", from(good, "203.0.113.8"), ""); got.status != 200 {
			t.Fatalf("other client: got %d, want 200", got.status)
		}
	}
	// Without trusted proxies X-Forwarded-For is the client's own word and
	// is ignored: every address it names shares the peer's budget.
	g := newFixture(t, "sqlite", "--rate-limit-failed-auth", "2/m")
	for i := range 2 {
		g.send(t, g.srv, "GET", "/v0/users", from(g.bearer("bl_guessed"), fmt.Sprintf("198.51.100.%d", i)), "")
	}
	check429(t, g.send(t, g.srv, "GET", "/v0/users", from(g.bearer(g.adminKey), "198.51.100.9"), ""), `"failed-auth";q=2;w=60`)
}

func TestRateLimits_Off(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "sqlite", "--rate-limits=false", "--rate-limit-caller", "1/h", "--rate-limit-failed-auth", "1/h")
	for range 3 {
		f.send(t, f.srv, "GET", "/v0/users", f.bearer("bl_guessed"), "")
	}
	for range 3 {
		got := f.send(t, f.srv, "GET", "/v0/users", f.bearer(f.adminKey), "")
		if got.status != 200 || got.policy != "" {
			t.Fatalf("got %d with RateLimit-Policy %q, want 200 without limits", got.status, got.policy)
		}
	}
}

// Two replicas on one database and one Redis enforce one budget between them.
func TestRateLimits_SharedThroughRedis(t *testing.T) {
	t.Parallel()
	url := testRedisURL(t)
	prefix := uniquePrefix(t)
	f := newFixture(t, "postgres", "--redis", url, "--redis-prefix", prefix, "--rate-limit-caller", "4/m")
	second := f.env.start("--redis", url, "--redis-prefix", prefix, "--rate-limit-caller", "4/m")
	list := f.bearer(f.adminKey)
	replicas := []*runningServer{f.srv, second}
	for i := range 4 {
		if got := f.send(t, replicas[i%2], "GET", "/v0/users", list, ""); got.status != 200 {
			t.Fatalf("request %d: got %d, want 200", i, got.status)
		}
	}
	for _, r := range replicas {
		check429(t, f.send(t, r, "GET", "/v0/users", list, ""), `"caller";q=4;w=60`)
	}
}

// With Redis unreachable the replica still answers, never 5xx, and still
// limits (counting on its own), saying so in its log.
func TestRateLimits_RedisDown(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "sqlite", "--redis", "redis://127.0.0.1:1/0", "--rate-limit-caller", "3/m")
	list := f.bearer(f.adminKey)
	for i := range 3 {
		if got := f.send(t, f.srv, "GET", "/v0/users", list, ""); got.status != 200 {
			t.Fatalf("request %d: got %d %s, want 200", i, got.status, got.message)
		}
	}
	check429(t, f.send(t, f.srv, "GET", "/v0/users", list, ""), `"caller";q=3;w=60`)
	if logs := f.srv.logs.String(); !strings.Contains(logs, "Redis unreachable, counting in this replica") {
		t.Errorf("no warning about Redis in the log:\n%s", logs)
	}
}

// TestRateLimits_EveryOperation: every operation of the YAML answers a
// complete 429 once the client's address is over the failed-auth quota
// (each declares it), and the refusal changes nothing.
func TestRateLimits_EveryOperation(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "sqlite", "--rate-limit-failed-auth", "1/h")
	if got := f.send(t, f.srv, "GET", "/v0/users", f.bearer("bl_guessed"), ""); got.status != 401 {
		t.Fatalf("guess: got %d, want 401", got.status)
	}
	var cases []badInput
	forEachOperation(t, f.ws, func(method, url string, op *openapi3.Operation) {
		body := ""
		if op.RequestBody != nil {
			body = `{"email":"a@b.co","role":"admin"}`
		}
		cases = append(cases, badInput{op.OperationID, method, url, f.bearer(f.token(f.adminSub, f.adminEmail, "admin")), body, 429})
	})
	f.checkBadInputs(t, cases)
	for _, c := range cases {
		check429(t, f.send(t, f.srv, c.method, c.path, c.header, c.body), `"failed-auth";q=1;w=3600`)
	}
}

// forEachOperation calls fn with every operation of the YAML and a URL for
// it (path parameters set to ws).
func forEachOperation(t *testing.T, ws string, fn func(method, url string, op *openapi3.Operation)) {
	t.Helper()
	param := regexp.MustCompile(`\{[^}]+\}`)
	count := 0
	for path, item := range loadSpec(t).Paths.Map() {
		for method, op := range item.Operations() {
			count++
			fn(method, server.APIBasePath+param.ReplaceAllString(path, ws), op)
		}
	}
	if count == 0 {
		t.Fatal("the spec has no operations")
	}
}
