package store_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/membership-api/controlplane/store"
	"github.com/membership-api/controlplane/store/storetest"
)

// TestAbort_CancelledCallsDoNotHurtOthers races callers whose contexts are
// cancelled at random moments (clients that went away: their statements
// are cut off mid-flight) against a steady caller whose context never is,
// on a pool of two connections so every connection passes through many
// hands. The steady caller must never fail: a connection whose statement
// was cancelled is discarded or reset, never handed on dirty (on
// PostgreSQL it got "driver: bad connection").
func TestAbort_CancelledCallsDoNotHurtOthers(t *testing.T) {
	storetest.EachDialect(t, func(t *testing.T, dialect string) {
		st := storetest.Open(t, dialect, store.Options{MaxOpenConns: 2})
		ctx := context.Background()
		big, small := mustWorkspace(t, st, "big"), mustWorkspace(t, st, "small")
		invite := func(ctx context.Context, ws store.Workspace, email string) (store.Invitation, error) {
			return st.Invite(ctx, store.InviteParams{Workspace: ws.Name, Caller: "admin-" + ws.Name, Email: email, TTL: time.Hour})
		}
		// A list long enough that cancelling it often lands mid-read.
		seed := make([]store.InviteParams, 3000)
		for i := range seed {
			seed[i] = store.InviteParams{Workspace: "big", Caller: "admin-big", Email: fmt.Sprintf("seed-%d@example.com", i), TTL: time.Hour}
		}
		if err := st.InviteBatchForTest(ctx, seed); err != nil {
			t.Fatal(err)
		}

		stop := make(chan struct{})
		var heavy sync.WaitGroup
		var cancelled, heavyCalls atomic.Int64
		for w := range 3 {
			heavy.Add(1)
			go func() {
				defer heavy.Done()
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					cctx, cancel := context.WithCancel(ctx)
					timer := time.AfterFunc(time.Duration(i%16)*500*time.Microsecond, cancel)
					var err error
					switch i % 4 {
					case 0, 1:
						_, err = listUsers(cctx, st, big.Name)
					case 2:
						_, err = st.Membership(cctx, "big", "admin-big")
					case 3: // writes: whole or not at all, and never another's undoing
						if i%8 == 3 {
							_, err = invite(cctx, big, fmt.Sprintf("heavy-%d-%d@example.com", w, i))
						} else {
							_, err = st.UpdateRole(cctx, "big", "admin-big", fmt.Sprintf("seed-%d@example.com", i%3000), store.RoleAdmin)
						}
					}
					timer.Stop()
					heavyCalls.Add(1)
					wasCancelled := cctx.Err() != nil
					cancel()
					switch {
					case err == nil:
					case wasCancelled: // cut off: the driver may say so in its own words
						cancelled.Add(1)
					default:
						t.Errorf("a call failed before its cancellation: %v", err)
					}
				}
			}()
		}

		var calls, failed int
		for end := time.Now().Add(3 * time.Second); time.Now().Before(end); calls++ {
			var err error
			switch calls % 3 {
			case 0:
				_, err = listUsers(ctx, st, small.Name)
			case 1:
				_, err = st.Membership(ctx, "small", "admin-small")
			case 2:
				_, err = invite(ctx, small, fmt.Sprintf("steady-%d@example.com", calls))
			}
			if err != nil {
				failed++
				if failed <= 5 {
					t.Errorf("steady call %d failed: %v", calls, err)
				}
			}
		}
		close(stop)
		heavy.Wait()
		if failed > 0 {
			t.Errorf("%d of %d steady calls failed", failed, calls)
		}
		if cancelled.Load() == 0 {
			t.Errorf("no call was cut off by its cancellation: the test raced nothing")
		}
		t.Logf("%s: %d steady calls (%d failed) beside %d calls, %d of them cut off by their cancellation",
			dialect, calls, failed, heavyCalls.Load(), cancelled.Load())
	})
}

// TestPostgres_CutOffConnectionsLeaveThePool: a connection whose statement
// was cancelled mid-flight (pgx then closes it) is dropped on its way back
// to the pool, as a plain statement, in a transaction or in a pipeline. It
// used to go back in, and database/sql found out only when it handed the
// connection to the next caller: three such in a row failed that caller with
// "driver: bad connection".
func TestPostgres_CutOffConnectionsLeaveThePool(t *testing.T) {
	st := storetest.Open(t, "postgres", store.Options{MaxOpenConns: 1})
	mustWorkspace(t, st, "acme")
	for _, how := range []string{"statement", "transaction", "pipeline"} {
		open, err := st.CutOffForTest(how)
		if err != nil {
			t.Fatal(err)
		}
		if open != 0 {
			t.Errorf("cut off mid-%s: the pool of one still holds %d connection(s), want the broken one dropped", how, open)
		}
		if _, err := st.Membership(context.Background(), "acme", "admin-acme"); err != nil {
			t.Errorf("after a %s was cut off, the next call failed: %v", how, err)
		}
	}
}

// TestPostgres_DetachedWriteHonoursItsTimeout: a write waiting on a lock
// that is never released fails at its write timeout (and rolls back), even
// though the reads inside it are protected from its caller's cancellation:
// SELECT … FOR UPDATE once waited for as long as the lock was held.
func TestPostgres_DetachedWriteHonoursItsTimeout(t *testing.T) {
	dsn := storetest.DSN(t, "postgres")
	st := storetest.OpenDSN(t, dsn, store.Options{})
	mustWorkspace(t, st, "acme")
	defer st.SetWriteTimeoutForTest(300 * time.Millisecond)()

	locker, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer locker.Close()
	lock, err := locker.BeginTx(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lock.ExecContext(context.Background(), "SELECT id FROM workspaces WHERE name = 'acme' FOR UPDATE"); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- st.RemoveUser(context.Background(), "acme", "admin-acme", "nobody@acme.test") }()
	select {
	case err := <-done:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("got %v, want the write timeout (context deadline exceeded)", err)
		}
	case <-time.After(20 * time.Second):
		t.Error("the write was still waiting on the lock long after its timeout")
		lock.Rollback()
		<-done //nolint:errcheck // the test has failed already; this only waits for the write to end
	}
	lock.Rollback()
}
