package e2e_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/membership-api/controlplane/gen"
	"github.com/membership-api/controlplane/store"
	"github.com/membership-api/controlplane/store/storetest"
)

// previous runs a command of the previous release (storetest.PreviousRelease)
// on the deployment and returns its trimmed stdout.
func (e *env) previous(args ...string) string {
	e.t.Helper()
	//nolint:gosec // G204: the test's own build of the previous release
	cmd := exec.CommandContext(e.t.Context(), storetest.PreviousBinary(e.t), e.args(args...)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		e.t.Fatalf("%s %v: %v\n%s", storetest.PreviousRelease, args, err, stderr.String())
	}
	return strings.TrimSpace(string(out))
}

// startPrevious runs `serve` of the previous release on a free port, as a
// process, and waits until it listens; the test's cleanup stops it
// (SIGINT: a graceful shutdown).
func (e *env) startPrevious() *runningServer {
	e.t.Helper()
	//nolint:gosec // G204: the test's own build of the previous release
	// Not the test's context: the server is stopped by a signal (a graceful
	// shutdown) at cleanup, after the context is done.
	cmd := exec.CommandContext(context.WithoutCancel(e.t.Context()), storetest.PreviousBinary(e.t), e.args("serve", "--addr", "127.0.0.1:0")...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		e.t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	s := &runningServer{done: make(chan int, 1), logs: &syncBuffer{}}
	s.cancel = func() { _ = cmd.Process.Signal(os.Interrupt) }
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			s.logs.WriteString(sc.Text() + "\n")
			if m := listeningLine.FindStringSubmatch(sc.Text()); m != nil {
				addr <- m[1]
			}
		}
		_ = cmd.Wait()
		s.done <- cmd.ProcessState.ExitCode()
	}()
	e.t.Cleanup(s.stop)
	select {
	case s.URL = <-addr:
		return s
	case code := <-s.done:
		e.t.Fatalf("%s serve exited with %d before listening:\n%s", storetest.PreviousRelease, code, s.logs.String())
	case <-time.After(time.Minute):
		e.t.Fatalf("%s serve did not start:\n%s", storetest.PreviousRelease, s.logs.String())
	}
	return nil
}

// TestRollingUpgrade: on one PostgreSQL, a server of the previous release
// keeps serving invites and lists, while the new release migrates the
// database and then serves beside it, as does a replica of the previous
// release started after the migration; each sees what the others wrote.
// Every answer of both is checked against the YAML (httpClient).
func TestRollingUpgrade(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t, "postgres")
	e.previous("migrate")
	ws := "rolling"
	e.previous("workspace", "create", ws, "--admin-sub", "u-admin", "--admin-email", "admin@rolling.test")
	key := e.previous("apikey", "create", "--workspace", ws, "--sub", "u-admin")
	admin := withAuth("Authorization", key, ws)
	old := e.startPrevious()

	var seq atomic.Int64
	invite := func(t *testing.T, srv *runningServer) string {
		t.Helper()
		email := fmt.Sprintf("invitee-%d@rolling.test", seq.Add(1))
		r, err := srv.client(t).InviteWorkspaceUserWithResponse(ctx, nil, gen.InviteWorkspaceUserJSONRequestBody{Email: &email}, admin)
		if err != nil {
			t.Errorf("invite through %s: %v", srv.URL, err)
		} else if r.StatusCode() != http.StatusOK {
			t.Errorf("invite through %s: %d %s", srv.URL, r.StatusCode(), r.Body)
		}
		return email
	}
	lists := func(t *testing.T, srv *runningServer, email string) {
		t.Helper()
		r, err := srv.client(t).ListWorkspaceUsersWithResponse(ctx, nil, admin)
		if err != nil {
			t.Errorf("list through %s: %v", srv.URL, err)
		} else if r.StatusCode() != http.StatusOK || !strings.Contains(string(r.Body), email) {
			t.Errorf("list through %s: %d, want 200 holding %s: %.300s", srv.URL, r.StatusCode(), email, r.Body)
		}
	}

	// The previous release serves all along: invites and lists in a loop
	// until the end of the test.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var served atomic.Int64
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			lists(t, old, invite(t, old))
			served.Add(1)
		}
	})

	mustCLI(t, e.args("migrate")...)
	if status := mustCLI(t, e.args("migrate", "status")...); !strings.Contains(status, "up to date") {
		t.Errorf("migrate status after migrate:\n%s", status)
	}
	next := e.start("--metrics-addr", "127.0.0.1:0")
	servedBefore := served.Load()

	// Each release sees what the other wrote.
	lists(t, next, invite(t, old))
	lists(t, old, invite(t, next))
	lists(t, next, invite(t, next))

	// A replica of the previous release (re)starting on the migrated
	// database (its start runs its own AutoMigrate) serves too.
	restarted := e.startPrevious()
	lists(t, restarted, invite(t, next))
	lists(t, next, invite(t, restarted))

	// The loop on the previous release has gone on beside the new one.
	for served.Load() < servedBefore+3 {
		lists(t, next, invite(t, next))
	}
	close(stop)
	wg.Wait()

	if got := scrapeMetrics(t, metricsURL(t, next))["controlplane_schema_version"]; got != float64(store.LatestSchemaVersion()) {
		t.Errorf("controlplane_schema_version of the new release: %v, want %d", got, store.LatestSchemaVersion())
	}
	// Outside the spec: read without the validating client.
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, next.URL+"/readyz", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var ready struct {
		Status        string `json:"status"`
		SchemaVersion int64  `json:"schema_version"`
	}
	if err := json.Unmarshal(body, &ready); err != nil || resp.StatusCode != http.StatusOK || ready.SchemaVersion != store.LatestSchemaVersion() {
		t.Errorf("/readyz of the new release: %d %s, want schema_version %d", resp.StatusCode, body, store.LatestSchemaVersion())
	}
}

// TestServe_SchemaChecks: serve --migrate=false refuses a database with
// pending migrations, naming the command to run, and starts once it has
// run; serve refuses a database a newer release migrated, with or without
// --migrate, and changes nothing.
func TestServe_SchemaChecks(t *testing.T) {
	t.Parallel()
	parallelDialects(t, func(t *testing.T, dialect string) {
		e := newEnv(t, dialect)
		// serve reports whether serve started (then stops it) and, if
		// not, why.
		serve := func(extra ...string) (bool, string) {
			s, err := startServer(append(e.args("serve", "--addr", "127.0.0.1:0"), extra...))
			if err != nil {
				return false, err.Error()
			}
			s.stop()
			return true, ""
		}
		started, why := serve("--migrate=false")
		if started || !strings.Contains(why, "pending migrations") || !strings.Contains(why, "controlplane migrate") {
			t.Errorf("--migrate=false on a new database: started %v:\n%s", started, why)
		}
		mustCLI(t, e.args("migrate")...)
		if started, why := serve("--migrate=false"); !started {
			t.Errorf("--migrate=false on a migrated database:\n%s", why)
		}
		newer := store.LatestSchemaVersion() + 1
		if err := storetest.RecordSchemaVersion(context.Background(), e.store(), newer); err != nil {
			t.Fatal(err)
		}
		for _, flags := range [][]string{nil, {"--migrate=false"}} {
			started, why := serve(flags...)
			if started || !strings.Contains(why, "newer than this binary") || !strings.Contains(why, fmt.Sprint(newer)) {
				t.Errorf("serve %v on a newer schema: started %v:\n%s", flags, started, why)
			}
		}
		status := mustCLI(t, e.args("migrate", "status")...)
		if !strings.Contains(status, "unknown: applied by a newer release") {
			t.Errorf("migrate status on a newer schema:\n%s", status)
		}
	})
}
