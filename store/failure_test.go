package store_test

// Failure paths of the speed machinery, through its seams (export_test.go):
// the WAL file's Sync, the batch runners, the batch timeout. The databases are
// real all the same.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/membership-api/controlplane/store"
	"github.com/membership-api/controlplane/store/storetest"
)

// syncedBuffer collects log output written from the writer's goroutine.
type syncedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func openLogged(t *testing.T, dialect string, now func() time.Time) (*store.Store, *syncedBuffer) {
	t.Helper()
	logs := &syncedBuffer{}
	st := storetest.Open(t, dialect, store.Options{Now: now, Logger: slog.New(slog.NewTextHandler(logs, nil))})
	return st, logs
}

// A failed fsync is final: the write it covered and every later one are
// answered with the error, even once the disk would take writes again.
func TestCommitter_FsyncFailureIsFinal(t *testing.T) {
	t.Parallel()
	st := storetest.Open(t, "sqlite", store.Options{})
	ctx := context.Background()
	if _, err := st.CreateWorkspace(ctx, store.NewWorkspace{Name: "before", AdminSub: "admin", AdminEmail: "admin@example.com"}); err != nil {
		t.Fatal(err)
	}
	syncs, repair := st.BreakWALForTest()
	_, err := st.CreateWorkspace(ctx, store.NewWorkspace{Name: "during", AdminSub: "admin", AdminEmail: "admin@example.com"})
	if err == nil || !strings.Contains(err.Error(), "fsync") {
		t.Fatalf("write covered by the failed fsync: got %v, want the fsync error", err)
	}
	if n := syncs(); n != 1 {
		t.Fatalf("got %d fsyncs, want 1", n)
	}
	repair() // too late: nothing after the failure may be promised
	for i, write := range []func() error{
		func() error {
			_, err := st.CreateWorkspace(ctx, store.NewWorkspace{Name: "after", AdminSub: "admin", AdminEmail: "admin@example.com"})
			return err
		},
		func() error {
			_, err := st.Invite(ctx, store.InviteParams{Workspace: "before", Caller: "admin", Email: "x@example.com", TTL: time.Hour})
			return err
		},
	} {
		if err := write(); err == nil || !strings.Contains(err.Error(), "fsync") {
			t.Errorf("write %d after the failure: got %v, want the fsync error", i, err)
		}
	}
	if n := syncs(); n != 1 {
		t.Errorf("got %d fsyncs on the failed file, want 1 (no retry)", n)
	}
	// Readiness (/readyz pings the store) drains the replica until it is
	// restarted, saying why.
	if err := st.Ping(ctx); !errors.Is(err, store.ErrWritesStopped) {
		t.Errorf("Ping after the failed fsync: got %v, want ErrWritesStopped", err)
	}
}

// A job that panics fails alone, rolled back to its savepoint, and is
// logged; the jobs beside it and after it commit.
func TestCommitter_PanickingJobFailsAlone(t *testing.T) {
	t.Parallel()
	st, logs := openLogged(t, "sqlite", nil)
	ctx := context.Background()
	release := make(chan struct{})
	started := make(chan struct{})
	var wg sync.WaitGroup
	errs := make([]error, 3)
	wg.Add(1)
	go func() { // holds the writer so that the next jobs queue together
		defer wg.Done()
		errs[0] = st.WriteForTest(ctx, func(tx *gorm.DB) error {
			close(started)
			<-release
			return tx.Exec("INSERT INTO workspaces (name, display_name, created_at, updated_at) VALUES ('first', '', ?, ?)", time.Now(), time.Now()).Error
		})
	}()
	<-started
	wg.Add(2)
	go func() {
		defer wg.Done()
		errs[1] = st.WriteForTest(ctx, func(tx *gorm.DB) error {
			if err := tx.Exec("INSERT INTO workspaces (name, display_name, created_at, updated_at) VALUES ('panicked', '', ?, ?)", time.Now(), time.Now()).Error; err != nil {
				return err
			}
			panic("bug in a job")
		})
	}()
	go func() {
		defer wg.Done()
		errs[2] = st.WriteForTest(ctx, func(tx *gorm.DB) error {
			return tx.Exec("INSERT INTO workspaces (name, display_name, created_at, updated_at) VALUES ('beside', '', ?, ?)", time.Now(), time.Now()).Error
		})
	}()
	time.Sleep(50 * time.Millisecond) // let both queue behind the first
	close(release)
	wg.Wait()
	if errs[0] != nil || errs[2] != nil {
		t.Fatalf("jobs beside the panic: got %v and %v, want nil", errs[0], errs[2])
	}
	if errs[1] == nil || !strings.Contains(errs[1].Error(), "panic in write transaction: bug in a job") {
		t.Fatalf("panicking job: got %v, want its panic as error", errs[1])
	}
	for name, want := range map[string]bool{"first": true, "beside": true, "panicked": false} {
		_, err := st.WorkspaceForTest(ctx, name)
		if got := err == nil; got != want {
			t.Errorf("workspace %s stored: got %v, want %v (err %v)", name, got, want, err)
		}
	}
	if log := logs.String(); !strings.Contains(log, "panic in a write transaction") || !strings.Contains(log, "bug in a job") {
		t.Errorf("log: got %q, want the panic", log)
	}
}

// Close answers every job: the one running and those it took with their
// commit, the ones still queued with commit.ErrClosed; later ones get commit.ErrClosed.
func TestCommitter_CloseAnswersQueuedJobs(t *testing.T) {
	t.Parallel()
	st := storetest.Open(t, "sqlite", store.Options{})
	ctx := context.Background()
	release := make(chan struct{})
	started := make(chan struct{})
	const queued = 8
	answers := make(chan error, queued+1)
	go func() {
		answers <- st.WriteForTest(ctx, func(_ *gorm.DB) error {
			close(started)
			<-release
			return nil
		})
	}()
	<-started
	for i := range queued {
		go func() {
			answers <- st.WriteForTest(ctx, func(tx *gorm.DB) error {
				return tx.Exec("INSERT INTO workspaces (name, display_name, created_at, updated_at) VALUES (?, '', ?, ?)", fmt.Sprint("w", i), time.Now(), time.Now()).Error
			})
		}()
	}
	time.Sleep(50 * time.Millisecond) // let them queue
	closed := make(chan error, 1)
	go func() { closed <- st.Close() }()
	time.Sleep(20 * time.Millisecond)
	close(release)
	timeout := time.After(10 * time.Second)
	for i := range queued + 1 {
		select {
		case err := <-answers:
			if err != nil && !errors.Is(err, store.ErrClosedForTest) {
				t.Errorf("answer %d: got %v, want nil or commit.ErrClosed", i, err)
			}
		case <-timeout:
			t.Fatalf("only %d of %d jobs answered after Close", i, queued+1)
		}
	}
	select {
	case err := <-closed:
		if err != nil {
			t.Errorf("Close: %v", err)
		}
	case <-timeout:
		t.Fatal("Close did not return")
	}
	if err := st.WriteForTest(ctx, func(*gorm.DB) error { return nil }); !errors.Is(err, store.ErrClosedForTest) {
		t.Errorf("job after Close: got %v, want commit.ErrClosed", err)
	}
	if err := st.Ping(ctx); !errors.Is(err, store.ErrClosedForTest) {
		t.Errorf("Ping after Close: got %v, want commit.ErrClosed", err)
	}
}

// inviteCase is one invite of the scenario below and what it must get.
type inviteCase struct {
	name    string
	p       store.InviteParams
	wantErr error
}

// A batch that fails (an error, a panic, or on PostgreSQL a timeout behind
// a lock) sends its invites to the slow path, which gives the answers a
// working batch gives: the same invitations, the same refusals.
func TestInvite_FailedBatchFallsBackWithTheSameAnswers(t *testing.T) {
	t.Parallel()
	cases := []inviteCase{
		{"fresh", store.InviteParams{Workspace: "acme", Caller: "admin", Email: "New@Example.com", TTL: time.Hour}, nil},
		{"refresh", store.InviteParams{Workspace: "acme", Caller: "admin", Email: "pending@example.com", TTL: time.Hour}, nil},
		{"admin role", store.InviteParams{Workspace: "acme", Caller: "admin", Email: "boss@example.com", Role: store.RoleAdmin, TTL: time.Hour}, nil},
		{"member", store.InviteParams{Workspace: "acme", Caller: "admin", Email: "plain@example.com", TTL: time.Hour}, store.ErrConflict},
		{"not admin", store.InviteParams{Workspace: "acme", Caller: "plain", Email: "x@example.com", TTL: time.Hour}, store.ErrForbidden},
		{"not member", store.InviteParams{Workspace: "acme", Caller: "stranger", Email: "y@example.com", TTL: time.Hour}, store.ErrNotFound},
		{"no workspace", store.InviteParams{Workspace: "nope", Caller: "admin", Email: "z@example.com", TTL: time.Hour}, store.ErrNotFound},
	}
	failures := map[string]func() error{
		"error": func() error { return errors.New("batch failed") },
		"panic": func() error { panic("bug in a batch") },
	}
	storetest.EachDialect(t, func(t *testing.T, dialect string) {
		t.Parallel()
		modes := []string{"working", "error", "panic"}
		if dialect == "postgres" {
			modes = append(modes, "timeout")
		}
		answers := map[string][]string{}
		for _, mode := range modes {
			now := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
			st, logs := openLogged(t, dialect, func() time.Time { return now })
			seedInviteScenario(t, st)
			var unlock func() error
			switch mode {
			case "timeout":
				t.Cleanup(st.SetBatchTimeoutForTest(100 * time.Millisecond))
				var err error
				if unlock, err = st.HoldWorkspaceLockForTest("acme", 300*time.Millisecond); err != nil {
					t.Fatal(err)
				}
			case "error", "panic":
				st.FailInviteBatchesForTest(failures[mode])
			}
			for _, c := range cases {
				inv, err := st.Invite(context.Background(), c.p)
				if !errors.Is(err, c.wantErr) && (c.wantErr != nil || err != nil) {
					t.Fatalf("%s, %s: got %v, want %v", mode, c.name, err, c.wantErr)
				}
				answers[mode] = append(answers[mode], fmt.Sprintf("%s: %v %s %s %s %s %s", c.name, err, inv.Email, inv.Role, inv.Status, inv.ExpiresAt, inv.UpdatedBy))
			}
			if unlock != nil {
				if err := unlock(); err != nil {
					t.Error(err)
				}
			}
			if mode == "panic" && !strings.Contains(logs.String(), "bug in a batch") {
				t.Errorf("%s: the batch's panic was not logged: %q", mode, logs.String())
			}
			counts, err := storetest.CountRows(context.Background(), st)
			if err != nil {
				t.Fatal(err)
			}
			answers[mode] = append(answers[mode], fmt.Sprintf("invitations %d, outbox %d", counts["invitations"], counts["outbox_messages"]))
		}
		for _, mode := range modes[1:] {
			if got, want := strings.Join(answers[mode], "\n"), strings.Join(answers["working"], "\n"); got != want {
				t.Errorf("%s batch: got\n%s\nwant (working batch)\n%s", mode, got, want)
			}
		}
	})
}

// seedInviteScenario: workspace acme with admin "admin", member "plain"
// (plain@example.com), and a pending invitation for pending@example.com.
func seedInviteScenario(t *testing.T, st *store.Store) {
	t.Helper()
	ctx := context.Background()
	if _, err := st.CreateWorkspace(ctx, store.NewWorkspace{Name: "acme", AdminSub: "admin", AdminEmail: "admin@example.com"}); err != nil {
		t.Fatal(err)
	}
	if _, err := storetest.AddMember(ctx, st, "acme", "admin", storetest.NewMember{Sub: "plain", Email: "plain@example.com", Role: store.RoleMember}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Invite(ctx, store.InviteParams{Workspace: "acme", Caller: "admin", Email: "pending@example.com", TTL: time.Minute}); err != nil {
		t.Fatal(err)
	}
}
