package e2e_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/jackc/pgx/v5"

	"github.com/membership-api/controlplane/gen"
)

// postgresBin finds PostgreSQL's server programs in Debian's layout
// (/usr/lib/postgresql/<major>/bin, the newest major), "" when none is.
func postgresBin() string {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	best, bestMajor := "", -1
	for _, d := range dirs {
		if major, err := strconv.Atoi(filepath.Base(filepath.Dir(d))); err == nil && major > bestMajor {
			best, bestMajor = d, major
		}
	}
	return best
}

// privatePostgres is a PostgreSQL cluster of the test's own, on a free
// port, which the test may restart and crash without touching the shared
// server other tests use.
type privatePostgres struct {
	t         *testing.T
	dir, data string
	bin       string // PostgreSQL's server programs (postgresBin)
	port      int
	opts      string   // postgres's options (pg_ctl -o), for every start
	asUser    []string // "runuser -u postgres --" when running as root (initdb and postgres refuse root)
}

// startPrivatePostgres makes and starts a cluster in a temporary
// directory; the test's cleanup stops it and removes the directory. It
// skips the test when PostgreSQL's programs are not installed.
func startPrivatePostgres(t *testing.T) *privatePostgres {
	t.Helper()
	bin := postgresBin()
	for _, prog := range []string{"initdb", "pg_ctl", "postgres"} {
		if _, err := os.Stat(filepath.Join(bin, prog)); err != nil {
			skipUnlessCI(t, "PostgreSQL's server programs are not installed under /usr/lib/postgresql/*/bin (apt-get install postgresql): %v", err)
		}
	}
	// t.TempDir is private to root: the postgres user must be able to
	// reach its cluster, so the directory is made (and handed over) here.
	dir, err := os.MkdirTemp("", "outage-pg-")
	if err != nil {
		t.Fatal(err)
	}
	p := &privatePostgres{t: t, dir: dir, data: filepath.Join(dir, "data"), bin: bin}
	t.Cleanup(func() {
		_ = p.pgCtl("stop", "-m", "immediate")
		_ = os.RemoveAll(dir)
	})
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			skipUnlessCI(t, "running as root and no postgres user to run PostgreSQL as: %v", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			t.Fatal(err)
		}
		p.asUser = []string{"runuser", "-u", "postgres", "--"}
	}
	l, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.port = l.Addr().(*net.TCPAddr).Port
	l.Close()
	if out, err := p.command("initdb", "-D", p.data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync").CombinedOutput(); err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}
	// fsync off: the test's crash kills the server's processes, not the
	// machine, so what PostgreSQL wrote is still in the OS's cache, and the
	// start after it does not wait for the disk (a few seconds here).
	p.opts = fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c max_connections=60 -c fsync=off", p.port, dir)
	if err := p.start(); err != nil {
		t.Fatal(err)
	}
	return p
}

// start starts the cluster and waits until it accepts connections.
func (p *privatePostgres) start() error { return p.pgCtl("start", "-o", p.opts) }

func (p *privatePostgres) command(prog string, args ...string) *exec.Cmd {
	argv := append(append(append([]string{}, p.asUser...), filepath.Join(p.bin, prog)), args...)
	return exec.CommandContext(context.Background(), argv[0], argv[1:]...) //nolint:gosec // G204: the test's own programs and arguments
}

// pgCtl runs pg_ctl on the cluster, waiting for the action to finish.
func (p *privatePostgres) pgCtl(action string, args ...string) error {
	args = append([]string{action, "-D", p.data, "-w", "-t", "30", "-l", filepath.Join(p.dir, "postgres.log")}, args...)
	if out, err := p.command("pg_ctl", args...).CombinedOutput(); err != nil {
		return fmt.Errorf("pg_ctl %s: %w\n%s", action, err, out)
	}
	return nil
}

// dsn is the cluster's URL. The password is never checked (trust): it is
// there so the test can see it reaches neither a log line nor an answer.
func (p *privatePostgres) dsn() string {
	return fmt.Sprintf("postgres://postgres:%s@127.0.0.1:%d/postgres?sslmode=disable", outagePassword, p.port)
}

const outagePassword = "outage-pw-7f3a9c" //nolint:gosec // G101: a made-up password the test looks for, never checked (trust)

// loadResult is what the invite load saw.
type loadResult struct {
	mu       sync.Mutex
	byStatus map[int]int
	acked    []string // emails answered 2xx
	// unavailable counts 503s, which the server's metric must match.
	unavailable atomic.Int64
	ok          atomic.Int64
}

// TestDatabaseOutage restarts (fast) and then crashes (immediate) a real
// PostgreSQL under an invite load, and checks what clients, balancers and
// operators see: 503 with Retry-After and the error `unavailable` while it
// is down (never a 500), /readyz 503 during and 200 after, every operation
// of the YAML answering that 503, a few log lines about it rather than one
// per request, the metric counting every 503, answers back to normal by
// themselves, and no acknowledged invite lost.
func TestDatabaseOutage(t *testing.T) {
	t.Parallel()
	start := time.Now()
	phase := func(name string) { t.Logf("%6.2fs %s", time.Since(start).Seconds(), name) }
	pg := startPrivatePostgres(t)
	phase("private PostgreSQL started")
	e := &env{t: t, dialect: "postgres", dataDir: t.TempDir(), dsn: pg.dsn()}
	f := &fixture{env: e}
	f.addPrincipals(t)
	// No rate limits: the load would reach the caller's quota.
	// The dispatchers run as in production: their claims fail at every
	// poll while the database is away, and that too is said a few times.
	f.srv = f.start("--metrics-addr", "127.0.0.1:0", "--rate-limits=false")
	phase("server started")
	metrics := metricsURL(t, f.srv)
	sa := f.oauthClient(t, f.uniq("outage"), "admin")
	doc := loadSpec(t)
	admin := f.bearer(f.token(f.adminSub, f.adminEmail, allScopes(doc)...))

	res := &loadResult{byStatus: map[int]int{}}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	const workers = 6
	for w := range workers {
		wg.Go(func() { f.inviteLoad(t, w, admin, res, stop) })
	}
	stopLoad := sync.OnceFunc(func() { close(stop); wg.Wait() })
	defer stopLoad()

	waitFor(t, "invites before the restart", func() bool { return res.ok.Load() >= 50 })
	phase("load running")

	// A fast restart: the server ends every connection (57P01), then is
	// down and starting up for a moment.
	if err := pg.pgCtl("restart", "-m", "fast"); err != nil {
		t.Fatal(err)
	}
	phase("restarted")
	okBefore := res.ok.Load()
	waitFor(t, "invites after the restart", func() bool { return res.ok.Load() >= okBefore+50 })

	phase("invites after the restart")
	// A crash: down until started again.
	if err := pg.pgCtl("stop", "-m", "immediate"); err != nil {
		t.Fatal(err)
	}
	unavailableBefore := res.unavailable.Load()
	waitFor(t, "503s from the load while the database is down", func() bool { return res.unavailable.Load() >= unavailableBefore+20 })
	if status := readyz(t, f); status != http.StatusServiceUnavailable {
		t.Errorf("/readyz with the database down: %d, want 503", status)
	}
	f.everyOperationUnavailable(t, doc, admin, sa, res)
	phase("every operation answered 503")
	if err := pg.start(); err != nil {
		t.Fatal(err)
	}
	phase("database started again")
	waitFor(t, "/readyz 200 after the database came back", func() bool { return readyz(t, f) == http.StatusOK })
	okAfter := res.ok.Load()
	waitFor(t, "invites after the crash", func() bool { return res.ok.Load() >= okAfter+50 })
	phase("invites after the crash")
	waitFor(t, "the log line saying the database is reachable again", func() bool {
		return strings.Contains(f.srv.logs.String(), `msg="database reachable again"`)
	})
	stopLoad()
	phase("back to normal")

	res.mu.Lock()
	defer res.mu.Unlock()
	t.Logf("answers: %v; acknowledged invites: %d", res.byStatus, len(res.acked))
	for status, n := range res.byStatus {
		if status != http.StatusOK && status != http.StatusServiceUnavailable {
			t.Errorf("%d answers %d, want only 200 and 503", n, status)
		}
	}

	// Every acknowledged invite is stored.
	stored := pendingEmails(t, pg.dsn(), f.ws)
	lost := 0
	for _, email := range res.acked {
		if !stored[email] {
			lost++
		}
	}
	if lost > 0 {
		t.Errorf("%d of %d acknowledged invites are not stored", lost, len(res.acked))
	}

	// The metric counted every 503 the clients got (readyz is not counted).
	var counted float64
	for series, v := range scrapeMetrics(t, metrics) {
		if strings.HasPrefix(series, "controlplane_unavailable_total{") {
			counted += v
		}
	}
	if got := int64(counted); got != res.unavailable.Load() {
		t.Errorf("controlplane_unavailable_total: %d, want the %d 503s the clients got", got, res.unavailable.Load())
	}

	checkOutageLog(t, f.srv.logs.String(), res.unavailable.Load())
}

// inviteLoad invites fresh emails until stop, recording every answer.
func (f *fixture) inviteLoad(t *testing.T, worker int, header http.Header, res *loadResult, stop <-chan struct{}) {
	client := httpClient(t)
	for i := 0; ; i++ {
		select {
		case <-stop:
			return
		default:
		}
		email := fmt.Sprintf("load-%d-%d@%s.test", worker, i, f.ws)
		req, err := http.NewRequestWithContext(context.Background(), "POST", f.srv.URL+"/v0/users", strings.NewReader(`{"email":"`+email+`"}`))
		if err != nil {
			t.Error(err)
			return
		}
		req.Header = header.Clone()
		resp, err := client.Do(req)
		if err != nil {
			t.Errorf("invite: %v", err)
			return
		}
		var body gen.Error
		_ = json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		res.mu.Lock()
		res.byStatus[resp.StatusCode]++
		if resp.StatusCode == http.StatusOK {
			res.acked = append(res.acked, email)
		}
		res.mu.Unlock()
		switch resp.StatusCode {
		case http.StatusOK:
			res.ok.Add(1)
		case http.StatusServiceUnavailable:
			res.unavailable.Add(1)
			checkUnavailable(t, "invite", resp, body)
		}
	}
}

// checkUnavailable checks a 503 beyond what the YAML says (the validating
// transport checked that): a Retry-After of a few seconds and the error
// kind, and no trace of the connection string.
func checkUnavailable(t *testing.T, what string, resp *http.Response, body gen.Error) {
	t.Helper()
	if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err != nil || s < 1 || s > 5 {
		t.Errorf("%s: 503 with Retry-After %q, want 1–5 seconds", what, resp.Header.Get("Retry-After"))
	}
	if body.Error != "unavailable" {
		t.Errorf("%s: 503 with error %q, want unavailable", what, body.Error)
	}
	if m := deref(body.Message); strings.Contains(m, outagePassword) || strings.Contains(m, "127.0.0.1") || strings.Contains(m, "user=") {
		t.Errorf("%s: 503 message names the database: %q", what, m)
	}
}

// everyOperationUnavailable sends one request to each operation of the
// YAML while the database is down and expects its 503 (validated against
// the YAML, and counted for the contract-coverage gate). Operations without
// a body get the admin's token, which needs no database, so the handler's
// store call meets the outage; operations with one get an API key, whose
// lookup meets it first (before the body is read); the token endpoint gets
// a service account's credentials, which it looks up.
func (f *fixture) everyOperationUnavailable(t *testing.T, doc *openapi3.T, admin http.Header, sa serviceAccount, res *loadResult) {
	t.Helper()
	client := httpClient(t)
	for _, o := range specOperations(doc) {
		path := o.path
		for _, ref := range o.params {
			if ref.Value.In == openapi3.ParameterInPath {
				path = strings.ReplaceAll(path, "{"+ref.Value.Name+"}", url.PathEscape(f.pathValue(ref.Value)))
			}
		}
		header, body := admin, ""
		switch {
		case o.op.OperationID == "OauthToken":
			header = http.Header{"Content-Type": {"application/json"}}
			body = fmt.Sprintf(`{"grant_type":"client_credentials","client_id":%q,"client_secret":%q}`, sa.clientID, sa.secret)
		case o.op.RequestBody != nil:
			header, body = f.bearer(f.adminKey), "{}"
		}
		req, err := http.NewRequestWithContext(context.Background(), o.method, f.srv.URL+"/v0"+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header = header.Clone()
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", o.op.OperationID, err)
		}
		var e gen.Error
		_ = json.NewDecoder(resp.Body).Decode(&e)
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable {
			t.Errorf("%s %s with the database down: %d %+v, want 503", o.method, path, resp.StatusCode, e)
			continue
		}
		res.unavailable.Add(1)
		checkUnavailable(t, o.op.OperationID, resp, e)
	}
}

// checkOutageLog: the outage is said a few times, not once per request;
// no 500 was logged; the password appears nowhere.
func checkOutageLog(t *testing.T, logs string, unavailable int64) {
	t.Helper()
	var outageLines, errorLines, dispatcherLines int
	for line := range strings.Lines(logs) {
		if strings.Contains(line, "dispatcher: ") {
			dispatcherLines++
			t.Log(strings.TrimSpace(line))
		}
		switch {
		case strings.Contains(line, "database unavailable"), strings.Contains(line, "database still unavailable"),
			strings.Contains(line, "database reachable again"):
			outageLines++
			t.Log(strings.TrimSpace(line))
			if strings.Contains(line, "user=") || strings.Contains(line, "postgres://") {
				t.Errorf("an outage line names the connection: %s", line)
			}
		case strings.Contains(line, "level=ERROR"):
			errorLines++
			if errorLines <= 5 {
				t.Errorf("ERROR logged: %s", line)
			}
		}
	}
	// Two outages (the restart and the crash), each with at most a few
	// causes (terminated, cannot_connect_now, connection_lost, refused): each
	// cause's first line and its end, plus one summary every 5 s.
	if outageLines == 0 || outageLines > 40 {
		t.Errorf("%d log lines about the outage for %d 503s, want a few (not one per request)", outageLines, unavailable)
	}
	if errorLines > 0 {
		t.Errorf("%d ERROR lines", errorLines)
	}
	// The mail and webhook dispatchers poll four times a second each: per
	// outage each says it once, then every 5 s, and once when it ends (and
	// the few attempts in flight when it began may fail to record).
	if dispatcherLines > 40 {
		t.Errorf("%d dispatcher log lines during the outages, want a few (not one per poll)", dispatcherLines)
	}
	if strings.Contains(logs, outagePassword) {
		t.Error("the database password reached the log")
	}
	t.Logf("%d log lines about the outage for %d 503s", outageLines, unavailable)
}

// readyz is /readyz's status (outside the spec: not validated).
func readyz(t *testing.T, f *fixture) int {
	t.Helper()
	resp, err := http.Get(f.srv.URL + "/readyz") //nolint:noctx // a probe with the client's timeout
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// pendingEmails are the emails of the workspace's invitations.
func pendingEmails(t *testing.T, dsn, workspace string) map[string]bool {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, "SELECT email FROM invitations WHERE workspace_id = (SELECT id FROM workspaces WHERE name = $1)", workspace)
	if err != nil {
		t.Fatal(err)
	}
	emails, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		t.Fatal(err)
	}
	set := make(map[string]bool, len(emails))
	for _, e := range emails {
		set[e] = true
	}
	return set
}
