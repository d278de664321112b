package e2e_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/x509"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"
	"github.com/golang-jwt/jwt/v5"
	"github.com/libtnb/sqlite"
	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/membership-api/controlplane/auth"
	"github.com/membership-api/controlplane/gen"
	"github.com/membership-api/controlplane/internal/cli"
	"github.com/membership-api/controlplane/server"
	"github.com/membership-api/controlplane/store"
	"github.com/membership-api/controlplane/store/storetest"
)

// The end-to-end tests run the real CLI (cli.Run) in-process: `serve` on
// port 0 with a temporary data directory, and the other commands as a user
// would.
//
// Most tests share one server per database (newTenant): each gets a
// workspace pair of its own, with principals whose names no other test
// uses, and runs in parallel with the others. Tests that need serve flags
// of their own, a restart, the server's whole log, metrics or anything
// counted over the whole database start their own (newFixture).

func TestMain(m *testing.M) {
	flag.Parse()
	setDefaultParallelism()
	code := m.Run()
	if sdkInstall.dir != "" {
		_ = os.RemoveAll(sdkInstall.dir)
	}
	// Every test has finished (parallel ones too): stop the shared servers
	// before the contract check, which needs no server.
	if err := stopSharedDeployments(); err != nil {
		fmt.Fprintln(os.Stderr, "shared deployments:", err)
		if code == 0 {
			code = 1
		}
	}
	if coverage := checkCoverage(); code == 0 {
		code = coverage
	}
	os.Exit(code)
}

// setDefaultParallelism runs up to 4 parallel tests per CPU unless
// -test.parallel says otherwise: the tests mostly wait (on databases,
// sockets, a browser, npm), so go test's default of one per CPU left a
// 2-core machine half idle through the parallel phase.
func setDefaultParallelism() {
	explicit := false
	flag.Visit(func(f *flag.Flag) { explicit = explicit || f.Name == "test.parallel" })
	if !explicit {
		if err := flag.Set("test.parallel", strconv.Itoa(4*runtime.GOMAXPROCS(0))); err != nil {
			fmt.Fprintln(os.Stderr, "test.parallel:", err)
		}
	}
}

// cliResult is what one CLI invocation printed.
type cliResult struct {
	stdout, stderr string
	code           int
}

// runCLI runs one command to completion.
func runCLI(t testing.TB, args ...string) cliResult {
	t.Helper()
	var out, errOut bytes.Buffer
	code := cli.Run(context.Background(), args, &out, &errOut)
	return cliResult{stdout: out.String(), stderr: errOut.String(), code: code}
}

// mustCLI runs a command that must succeed and returns its trimmed stdout.
func mustCLI(t testing.TB, args ...string) string {
	t.Helper()
	r := runCLI(t, args...)
	if r.code != 0 {
		t.Fatalf("%v: exit %d: %s", args, r.code, r.stderr)
	}
	return strings.TrimSpace(r.stdout)
}

// env is one deployment under test: a data directory and a database.
type env struct {
	t       *testing.T
	dialect string
	dataDir string
	dsn     string

	storeOnce sync.Once
	st        *store.Store
}

func newEnv(t *testing.T, dialect string) *env {
	return &env{t: t, dialect: dialect, dataDir: t.TempDir(), dsn: storetest.DSN(t, dialect)}
}

// args appends the deployment's --data-dir and --db to a command line.
func (e *env) args(args ...string) []string {
	return append(args, "--data-dir", e.dataDir, "--db", e.dsn)
}

// store returns a second handle on the deployment's database, for
// assertions: one per env, opened on first use (opening one migrates: a
// read of goose_db_version under the migration lock on PostgreSQL).
func (e *env) store() *store.Store {
	e.storeOnce.Do(func() {
		e.st = storetest.OpenDSN(e.t, e.dsn, store.Options{Secrets: deploymentKeys(e.t, e.dialect, e.dataDir)})
	})
	return e.st
}

// token signs a development-issuer token for sub with the given scopes.
func (e *env) token(sub, email string, scopes ...string) string {
	e.t.Helper()
	dev, err := auth.LoadDevIssuer(e.dataDir)
	if err != nil {
		e.t.Fatal(err)
	}
	tok, err := dev.Sign(auth.TokenRequest{Sub: sub, Email: email, Scopes: scopes, TTL: time.Hour}, time.Now())
	if err != nil {
		e.t.Fatal(err)
	}
	return tok
}

// runningServer is a `serve` process started by start.
type runningServer struct {
	URL    string // base URL, e.g. http://127.0.0.1:41234
	cancel context.CancelFunc
	done   chan int
	logs   *syncBuffer
}

var listeningLine = regexp.MustCompile(`msg=listening addr=(http://\S+)`)

// start runs `serve` on a free port and waits until it listens; the test's
// cleanup stops it.
func (e *env) start(extra ...string) *runningServer {
	e.t.Helper()
	s, err := startServer(append(e.args("serve", "--addr", "127.0.0.1:0"), extra...))
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(s.stop)
	return s
}

// testPoolSize bounds the database pool of every server the tests start
// (unless a test sets --db-max-conns itself). The e2e and store packages run
// side by side, each with tests in parallel; at the default 32 connections
// per server their PostgreSQL pools together went past a stock server's 100
// connections ("FATAL: sorry, too many clients already", answered as 503).
// Eight still let concurrent requests race in the database.
const testPoolSize = "8"

// boundPool adds --db-max-conns testPoolSize to a serve or worker command
// line that does not set it.
func boundPool(args []string) []string {
	if len(args) == 0 || !slices.Contains([]string{"serve", "mail-worker", "webhook-worker"}, args[0]) {
		return args
	}
	for _, a := range args {
		if a == "--db-max-conns" || strings.HasPrefix(a, "--db-max-conns=") {
			return args
		}
	}
	return append(slices.Clone(args), "--db-max-conns", testPoolSize)
}

// startServer runs the serve command line args until stop, and waits until
// it listens.
func startServer(args []string) (*runningServer, error) {
	args = boundPool(args)
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	s := &runningServer{cancel: cancel, done: make(chan int, 1), logs: &syncBuffer{}}
	go func() {
		code := cli.Run(ctx, args, io.Discard, pw)
		pw.Close()
		s.done <- code
	}()
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			line := sc.Text()
			s.logs.WriteString(line + "\n")
			if m := listeningLine.FindStringSubmatch(line); m != nil {
				addr <- m[1]
			}
		}
	}()
	select {
	case s.URL = <-addr:
		return s, nil
	case code := <-s.done:
		cancel()
		return nil, fmt.Errorf("serve exited with %d before listening:\n%s", code, s.logs.String())
	case <-time.After(30 * time.Second):
		s.stop()
		return nil, fmt.Errorf("serve did not start:\n%s", s.logs.String())
	}
}

// stop shuts the server down gracefully and waits for it.
func (s *runningServer) stop() {
	if s.cancel == nil {
		return
	}
	s.cancel()
	<-s.done
	s.cancel = nil
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) WriteString(s string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf.WriteString(s)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// parallelDialects is storetest.EachDialect with every dialect's subtest
// run in parallel with the other parallel tests (each subtest has a
// database or a tenant of its own).
func parallelDialects(t *testing.T, fn func(t *testing.T, dialect string)) {
	t.Helper()
	for _, dialect := range storetest.Dialects {
		t.Run(dialect, func(t *testing.T) {
			t.Parallel()
			fn(t, dialect)
		})
	}
}

// sharedDeployment is one database and data directory per dialect, shared
// by every tenant of the package, with one server started on first use and
// stopped by TestMain.
type sharedDeployment struct {
	once    sync.Once
	err     error
	dialect string
	dataDir string
	dsn     string
	srv     *runningServer
	st      *store.Store // the fixtures' handle: setup and assertions
	db      *gorm.DB     // tenant-scoped row counts (countRows)
	tb      *lifetimeTB  // st's cleanups
	cleanup func() error // drops the database and the data directory
}

var sharedDeployments = map[string]*sharedDeployment{}

func init() {
	for _, dialect := range storetest.Dialects {
		sharedDeployments[dialect] = &sharedDeployment{dialect: dialect}
	}
}

// sharedFlags are the shared server's serve flags. Failed authentications
// are limited per client address, and every test's client is 127.0.0.1:
// counted together, one test's refusals would turn another's 401 into 429.
// The tests of that limit start servers of their own; the limits per
// caller and per workspace stay on, as each tenant has its own.
var sharedFlags = []string{"--rate-limit-failed-auth", "off"}

// shared returns the dialect's shared deployment, setting it up on first
// use. PostgreSQL's is skipped, saying why, when TEST_POSTGRES_DSN is unset.
func shared(t *testing.T, dialect string) *sharedDeployment {
	t.Helper()
	d := sharedDeployments[dialect]
	if d == nil {
		t.Fatalf("unknown dialect %q", dialect)
	}
	if dialect == "postgres" && os.Getenv(storetest.PostgresEnv) == "" {
		t.Skipf("PostgreSQL tests skipped: %s is not set (make test sets it to postgres://postgres@127.0.0.1:5432/test)", storetest.PostgresEnv)
	}
	d.once.Do(func() { d.err = d.setUpOnce() })
	if d.err != nil {
		t.Fatalf("shared %s deployment: %v", dialect, d.err)
	}
	return d
}

// setUpOnce is setUp, with a failure of storetest.OpenDSN (lifetimeTB's
// Fatalf) returned as an error.
func (d *sharedDeployment) setUpOnce() (err error) {
	defer func() {
		if r := recover(); r != nil {
			fatal, ok := r.(lifetimeFatal)
			if !ok {
				panic(r)
			}
			err = errors.New(string(fatal))
		}
	}()
	return d.setUp()
}

func (d *sharedDeployment) setUp() error {
	dir, err := os.MkdirTemp("", "controlplane-e2e-")
	if err != nil {
		return err
	}
	d.dataDir = dir
	d.cleanup = func() error { return os.RemoveAll(dir) }
	var dialector gorm.Dialector
	switch d.dialect {
	case "sqlite":
		d.dsn = filepath.Join(dir, "controlplane.db")
		// As storetest's second connection: busy_timeout waits for the
		// server's writer.
		dialector = sqlite.Open(d.dsn + "?_txlock=immediate&_pragma=busy_timeout(10000)&_pragma=foreign_keys(1)")
	case "postgres":
		if d.dsn, err = createPostgresDatabase(); err != nil {
			return err
		}
		dsn, removeDir := d.dsn, d.cleanup
		d.cleanup = func() error { return errors.Join(dropPostgresDatabase(dsn), removeDir()) }
		dialector = postgres.Open(d.dsn)
	}
	d.srv, err = startServer(append([]string{"serve", "--addr", "127.0.0.1:0", "--data-dir", d.dataDir, "--db", d.dsn}, sharedFlags...))
	if err != nil {
		return err
	}
	// After serve migrated the database: opening st migrates nothing.
	d.tb = &lifetimeTB{}
	d.st = storetest.OpenDSN(d.tb, d.dsn, store.Options{Secrets: deploymentKeys(d.tb, d.dialect, d.dataDir)})
	d.db, err = gorm.Open(dialector, &gorm.Config{Logger: logger.Discard, SkipDefaultTransaction: true})
	return err
}

// lifetimeTB is the testing.TB of the shared deployments' store handles,
// which outlive every test (storetest.OpenDSN and its helpers need one):
// stopSharedDeployments runs its cleanups. It has the methods OpenDSN
// calls; Fatalf panics with a lifetimeFatal, which setUpOnce recovers.
type lifetimeTB struct {
	testing.TB // nil: any other method panics, and setUpOnce re-panics
	mu         sync.Mutex
	cleanups   []func()
}

type lifetimeFatal string

func (l *lifetimeTB) Helper() {}

func (l *lifetimeTB) Cleanup(fn func()) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.cleanups = append(l.cleanups, fn)
}

func (l *lifetimeTB) Logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "shared deployment: "+format+"\n", args...)
}

func (l *lifetimeTB) Fatalf(format string, args ...any) {
	panic(lifetimeFatal(fmt.Sprintf(format, args...)))
}

// runCleanups runs the cleanups last registered first, as testing does.
func (l *lifetimeTB) runCleanups() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := len(l.cleanups) - 1; i >= 0; i-- {
		l.cleanups[i]()
	}
	l.cleanups = nil
}

// stopSharedDeployments stops the shared servers and removes their
// databases; TestMain calls it once every test has finished.
func stopSharedDeployments() error {
	var errs []error
	for _, d := range sharedDeployments {
		if d.srv != nil {
			d.srv.stop()
		}
		if d.tb != nil {
			d.tb.runCleanups()
		}
		if d.db != nil {
			if db, err := d.db.DB(); err == nil {
				errs = append(errs, db.Close())
			}
		}
		if d.cleanup != nil {
			errs = append(errs, d.cleanup())
		}
	}
	return errors.Join(errs...)
}

// createPostgresDatabase creates an empty database on TEST_POSTGRES_DSN's
// server and returns its DSN (storetest.DSN's databases live as long as one
// test; this one as long as the package's tests).
func createPostgresDatabase() (string, error) {
	base := os.Getenv(storetest.PostgresEnv)
	admin, err := sql.Open("pgx", base)
	if err != nil {
		return "", err
	}
	defer admin.Close()
	suffix := make([]byte, 6)
	rand.Read(suffix)
	name := "cp_e2e_" + hex.EncodeToString(suffix)
	if _, err := admin.ExecContext(context.Background(), "CREATE DATABASE "+name); err != nil {
		return "", fmt.Errorf("create the shared database: %w", err)
	}
	u, err := url.Parse(base)
	if err != nil {
		return "", err
	}
	u.Path = "/" + name
	return u.String(), nil
}

func dropPostgresDatabase(dsn string) error {
	u, err := url.Parse(dsn)
	if err != nil {
		return err
	}
	name := strings.TrimPrefix(u.Path, "/")
	admin, err := sql.Open("pgx", os.Getenv(storetest.PostgresEnv))
	if err != nil {
		return err
	}
	defer admin.Close()
	if _, err := admin.ExecContext(context.Background(), "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
		return fmt.Errorf("drop the shared database %s (left behind): %w", name, err)
	}
	return nil
}

// fixture is a running deployment with two workspaces and their principals:
// ws (admin adminSub, member memberSub) and otherWS (admin otherSub). Every
// name ends in the fixture's suffix, which no other fixture uses, so that
// tenants on one server never meet.
type fixture struct {
	*env
	srv                                       *runningServer
	adminKey, memberKey, otherKey, revokedKey string

	suffix                              string // "-<n>", unique in the package
	ws, otherWS                         string // workspace names, e.g. acme-7, other-7
	adminSub, memberSub, otherSub       string // e.g. u-admin-7
	adminEmail, memberEmail, otherEmail string // normalised, e.g. admin@acme-7.test

	shared *sharedDeployment // nil for a deployment of its own
}

var tenantSeq atomic.Int64

// newTenant returns a fixture on the dialect's shared server, in parallel
// with every other test: a workspace pair, principals and keys of its own.
// Rows counted for it (countRows) are its own.
func newTenant(t *testing.T, dialect string) *fixture {
	t.Helper()
	d := shared(t, dialect)
	e := &env{t: t, dialect: dialect, dataDir: d.dataDir, dsn: d.dsn, st: d.st}
	e.storeOnce.Do(func() {}) // store() is the deployment's
	f := &fixture{env: e, srv: d.srv, shared: d}
	f.addPrincipals(t)
	return f
}

// newFixture returns a fixture on a database and server of its own, started
// with serveArgs: for tests that need serve flags, restarts, the whole log,
// metrics or counts over the whole database.
func newFixture(t *testing.T, dialect string, serveArgs ...string) *fixture {
	t.Helper()
	f := &fixture{env: newEnv(t, dialect)}
	f.addPrincipals(t)
	f.srv = f.start(serveArgs...)
	return f
}

// addPrincipals creates the fixture's workspaces, member and API keys
// through the store, as the CLI's workspace and apikey commands do (their
// audit events name the CLI), without a command's migration each time.
func (f *fixture) addPrincipals(t *testing.T) {
	t.Helper()
	n := tenantSeq.Add(1)
	f.suffix = "-" + strconv.FormatInt(n, 10)
	f.ws, f.otherWS = "acme"+f.suffix, "other"+f.suffix
	f.adminSub, f.memberSub, f.otherSub = "u-admin"+f.suffix, "u-member"+f.suffix, "u-other"+f.suffix
	f.adminEmail, f.memberEmail, f.otherEmail = "admin@"+f.ws+".test", "member@"+f.ws+".test", "other@"+f.otherWS+".test"
	st := f.store()
	ctx := store.WithActor(context.Background(), store.Actor{Kind: store.ActorCLI})
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	key := func(ws, sub string) string {
		t.Helper()
		k, _, err := st.CreateAPIKey(ctx, ws, sub)
		must(err)
		return k
	}
	// The admin's email in mixed case: stored normalised.
	_, err := st.CreateWorkspace(ctx, store.NewWorkspace{Name: f.ws, DisplayName: "Acme", AdminSub: f.adminSub, AdminEmail: "Admin@" + strings.ToUpper(f.ws[:1]) + f.ws[1:] + ".test"})
	must(err)
	_, err = st.CreateWorkspace(ctx, store.NewWorkspace{Name: f.otherWS, AdminSub: f.otherSub, AdminEmail: f.otherEmail})
	must(err)
	_, err = storetest.AddMember(context.Background(), st, f.ws, "test", storetest.NewMember{Sub: f.memberSub, Email: f.memberEmail, Role: store.RoleMember})
	must(err)
	f.adminKey = key(f.ws, f.adminSub)
	f.memberKey = key(f.ws, f.memberSub)
	f.otherKey = key(f.otherWS, f.otherSub)
	f.revokedKey = key(f.ws, f.adminSub)
	must(st.RevokeAPIKey(ctx, "cli", f.revokedKey))
}

// uniq returns name with the fixture's suffix: a workspace name or a sub
// the test makes up, unique in the package.
func (f *fixture) uniq(name string) string { return name + f.suffix }

// mail returns local@<the fixture's workspace>.test: an invitee's email no
// other fixture uses (a person's invitations are listed across workspaces).
func (f *fixture) mail(local string) string { return local + "@" + f.ws + ".test" }

// countRows returns the number of rows of every table, so that tests can
// check that a rejected request wrote nothing. On a deployment of its own it
// counts everything (storetest.CountRows). On the shared one it counts the
// fixture's rows: those of the workspaces whose names end in its suffix (its
// pair and any a test creates through uniq), of their invitations and webhook
// endpoints, the audit events and idempotency records naming them or its
// principals, and every row of the tables no tenant owns (signing keys, and
// any table this list does not know).
func (f *fixture) countRows(t *testing.T) map[string]int64 {
	t.Helper()
	if f.shared == nil {
		counts, err := storetest.CountRows(context.Background(), f.store())
		if err != nil {
			t.Fatal(err)
		}
		return counts
	}
	db := f.shared.db.WithContext(context.Background())
	tables, err := db.Migrator().GetTables()
	if err != nil {
		t.Fatal(err)
	}
	pattern := "%" + f.suffix
	workspaces := "SELECT id FROM workspaces WHERE name LIKE @p"
	scoped := map[string]string{
		"workspaces":         "name LIKE @p",
		"members":            "workspace_id IN (" + workspaces + ")",
		"invitations":        "workspace_id IN (" + workspaces + ")",
		"api_keys":           "workspace_id IN (" + workspaces + ")",
		"service_accounts":   "workspace_id IN (" + workspaces + ")",
		"email_domain_rules": "workspace_id IN (" + workspaces + ")",
		"webhook_endpoints":  "workspace_id IN (" + workspaces + ")",
		"outbox_messages":    "invitation_id IN (SELECT id FROM invitations WHERE workspace_id IN (" + workspaces + "))",
		"webhook_messages":   "endpoint_id IN (SELECT id FROM webhook_endpoints WHERE workspace_id IN (" + workspaces + "))",
		"webhook_attempts":   "endpoint_id IN (SELECT id FROM webhook_endpoints WHERE workspace_id IN (" + workspaces + "))",
		"audit_events":       "workspace LIKE @p OR actor_sub LIKE @p",
		"idempotency_keys":   "workspace LIKE @p OR caller LIKE @p",
	}
	counts := make(map[string]int64, len(tables))
	for _, table := range tables {
		q := db.Table(table)
		if where, ok := scoped[table]; ok {
			q = q.Where(where, sql.Named("p", pattern))
		}
		var n int64
		if err := q.Count(&n).Error; err != nil {
			t.Fatalf("count %s: %v", table, err)
		}
		counts[table] = n
	}
	return counts
}

// do sends a raw request (validated against the spec like every other).
func (f *fixture) do(t *testing.T, method, path string, header http.Header, body string) (*http.Response, []byte) {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(context.Background(), method, f.srv.URL+path, r)
	if err != nil {
		// A malformed escape: send the path exactly as written.
		if req, err = http.NewRequestWithContext(context.Background(), method, f.srv.URL, r); err != nil {
			t.Fatal(err)
		}
		req.URL.Opaque = path
	}
	maps.Copy(req.Header, header)
	resp, err := httpClient(t).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

// devKeySign signs arbitrary claims with the deployment's development issuer
// key and the given method, to build tokens the CLI would never issue.
func (f *fixture) devKeySign(t *testing.T, claims jwt.MapClaims) string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(f.dataDir, "dev-issuer-ed25519.pem"))
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(raw)
	key, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jwt.NewWithClaims(jwt.SigningMethodEdDSA, claims).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func claimsFor(sub string, scopes string, exp time.Time) jwt.MapClaims {
	return jwt.MapClaims{"iss": auth.DevIssuerName, "sub": sub, "scope": scopes, "exp": exp.Unix(), "iat": time.Now().Unix()}
}

// bearer is the headers of a JSON request with cred in the fixture's
// workspace.
func (f *fixture) bearer(cred string) http.Header {
	return http.Header{"Authorization": {"Bearer " + cred}, "Content-Type": {"application/json"}, server.WorkspaceHeader: {f.ws}}
}

func with(h http.Header, key, value string) http.Header {
	h = h.Clone()
	if value == "" {
		h.Del(key)
	} else {
		h.Set(key, value)
	}
	return h
}

func deref(s *string) string {
	if s == nil {
		return "<nil>"
	}
	return *s
}

func ptr[T any](v T) *T { return &v }

// badInput is one request that must be refused.
type badInput struct {
	name, method, path string
	header             http.Header
	body               string
	status             int
}

// checkBadInputs sends each request and checks it gets its status (the
// validating client checks the Error body) and that no row changed.
func (f *fixture) checkBadInputs(t *testing.T, cases []badInput) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := f.countRows(t)
			resp, body := f.do(t, tc.method, tc.path, tc.header, tc.body)
			if resp.StatusCode != tc.status {
				t.Errorf("got %d %s, want %d", resp.StatusCode, body, tc.status)
			}
			if after := f.countRows(t); !maps.Equal(before, after) {
				t.Errorf("rows changed: before %v, after %v", before, after)
			}
		})
	}
}

// specRouter finds operations for response validation; built once.
var specRouter = sync.OnceValues(func() (routers.Router, error) {
	doc, err := server.LoadSpec(context.Background())
	if err != nil {
		return nil, err
	}
	return gorillamux.NewRouter(doc)
})

func loadSpec(t testing.TB) *openapi3.T {
	t.Helper()
	doc, err := server.LoadSpec(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return doc
}

// validatingTransport checks every response against openapi/controlplane.yml:
// the status must be declared (IncludeResponseStatus) and the body must match.
// Answers to requests outside the spec (unknown routes) must still be the
// spec's Error JSON.
type validatingTransport struct {
	t testing.TB
}

func (v validatingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	checkResponse(v.t, req, resp, body)
	return resp, nil
}

func checkResponse(t testing.TB, req *http.Request, resp *http.Response, body []byte) {
	t.Helper()
	if req.URL.Opaque != "" {
		// A request line Go's HTTP server itself rejects (malformed escape):
		// it answers a plain "400 Bad Request" before any handler runs.
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("%s %s: got %d, want 400", req.Method, req.URL.Opaque, resp.StatusCode)
		}
		return
	}
	router, err := specRouter()
	if err != nil {
		t.Errorf("spec: %v", err)
		return
	}
	route, params, err := router.FindRoute(req)
	if err != nil {
		// Not an operation of the spec: only the error shape can be checked.
		if resp.StatusCode < 400 {
			t.Errorf("%s %s: non-spec route answered %d %q, want a 4xx Error JSON", req.Method, req.URL.Path, resp.StatusCode, body)
		}
		checkErrorBody(t, req, resp, body)
		return
	}
	input := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route},
		Status:                 resp.StatusCode,
		Header:                 resp.Header,
		Body:                   io.NopCloser(bytes.NewReader(body)),
		Options:                &openapi3filter.Options{IncludeResponseStatus: true},
	}
	if err := openapi3filter.ValidateResponse(context.Background(), input); err != nil {
		t.Errorf("%s %s: response %d does not match the spec: %v\nbody: %s", req.Method, req.URL.Path, resp.StatusCode, err, body)
	} else {
		recordPair(route.Operation.OperationID, resp.StatusCode)
	}
	if resp.StatusCode >= 400 {
		checkErrorBody(t, req, resp, body)
	}
	if resp.StatusCode == http.StatusUnauthorized && resp.Header.Get("WWW-Authenticate") == "" {
		t.Errorf("%s %s: 401 without WWW-Authenticate", req.Method, req.URL.Path)
	}
}

// checkErrorBody: an error answer is upstream's Error, filled: code is the
// status, error a kind docs/api/errors.md lists, message says what
// was wrong, request_id is the X-Request-Id header's.
func checkErrorBody(t testing.TB, req *http.Request, resp *http.Response, body []byte) {
	t.Helper()
	if req.Method == http.MethodHead {
		return // no body
	}
	var e gen.Error
	if err := json.Unmarshal(body, &e); err != nil || e.Code == nil || *e.Code != resp.StatusCode || deref(e.Message) == "" {
		t.Errorf("%s %s: %d without an Error body giving the status and saying what was wrong: %q", req.Method, req.URL.Path, resp.StatusCode, body)
		return
	}
	if kinds := readmeErrorKinds(t); !kinds[e.Error] {
		t.Errorf("%s %s: error kind %q is not in docs/api/errors.md's error table", req.Method, req.URL.Path, e.Error)
	}
	if e.RequestId == nil || *e.RequestId != resp.Header.Get("X-Request-Id") {
		t.Errorf("%s %s: request_id %v, want the X-Request-Id header's %q", req.Method, req.URL.Path, e.RequestId, resp.Header.Get("X-Request-Id"))
	}
}

// readmeErrorKinds are the kinds docs/api/errors.md's error table lists (rows
// starting with | `kind` |, under the heading "### Error kinds").
var readmeErrorKinds = func() func(testing.TB) map[string]bool {
	var once sync.Once
	kinds := map[string]bool{}
	return func(t testing.TB) map[string]bool {
		once.Do(func() {
			raw, err := os.ReadFile("../docs/api/errors.md")
			if err != nil {
				t.Fatal(err)
			}
			_, table, _ := strings.Cut(string(raw), "### Error kinds")
			for line := range strings.Lines(table) {
				if strings.HasPrefix(line, "#") {
					break
				}
				if m := errorKindRow.FindStringSubmatch(line); m != nil {
					kinds[m[1]] = true
				}
			}
		})
		return kinds
	}
}()

var errorKindRow = regexp.MustCompile("^\\| `([a-z_]+)` \\|")

// httpClient returns a client whose responses are all validated against the spec.
func httpClient(t testing.TB) *http.Client {
	return &http.Client{Transport: validatingTransport{t: t}, Timeout: 30 * time.Second}
}

// client returns the generated client for s, validating every response.
func (s *runningServer) client(t testing.TB) *gen.ClientWithResponses {
	t.Helper()
	c, err := gen.NewClientWithResponses(s.URL+server.APIBasePath, gen.WithHTTPClient(httpClient(t)))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// withAuth returns a request editor sending the credential and workspace the
// way Blaxel's SDKs do (header name given) or as plain Authorization.
func withAuth(header, credential, workspace string) gen.RequestEditorFn {
	return func(_ context.Context, req *http.Request) error {
		if credential != "" {
			req.Header.Set(header, "Bearer "+credential)
		}
		if workspace != "" {
			req.Header.Set(server.WorkspaceHeader, workspace)
		}
		return nil
	}
}

// skipUnlessCI skips a test whose program is missing here, and fails it
// under CI=true, where .ci/run installs every program the tests use.
func skipUnlessCI(t *testing.T, format string, args ...any) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("CI=true: "+format, args...)
	}
	t.Skipf(format+" (under CI=true this fails)", args...)
}
