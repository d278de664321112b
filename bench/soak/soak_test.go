// Package soak_test is a sustained load of the invite path with every
// feature that delivers on: each invite queues an email (written to files)
// and a webhook (to an instant loopback receiver), while both dispatchers
// run. It reports the oldest pending message's age over the run and fails
// if it reaches 5 s. Not part of make test (it runs for SOAK_DURATION):
//
//	SOAK=1 go test ./bench/soak -run Soak -v                      # SQLite
//	SOAK=1 SOAK_DIALECT=postgres TEST_POSTGRES_DSN=… go test ./bench/soak -run Soak -v
//
// Knobs: SOAK_DURATION (30s), SOAK_CLIENTS (4), SOAK_WORKSPACES (20).
package soak_test

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/membership-api/controlplane/mail"
	"github.com/membership-api/controlplane/store"
	"github.com/membership-api/controlplane/store/storetest"
	"github.com/membership-api/controlplane/webhook"
)

func env(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// oldestPendingWebhookSQL: the age of the oldest pending webhook message
// (a soak's database holds little else; monitoring reads the capped stats).
const oldestPendingWebhookSQL = `SELECT MIN(created_at) FROM webhook_messages WHERE status = 'pending'`

func TestSoak_InvitesWithEmailsAndWebhooks(t *testing.T) {
	if os.Getenv("SOAK") == "" {
		t.Skip("SOAK=1 runs the soak (see the package comment)")
	}
	duration, err := time.ParseDuration(env("SOAK_DURATION", "30s"))
	if err != nil {
		t.Fatal(err)
	}
	clients, _ := strconv.Atoi(env("SOAK_CLIENTS", "4"))
	workspaces, _ := strconv.Atoi(env("SOAK_WORKSPACES", "20"))
	ctx := context.Background()
	// A server's pool, not the tests' smaller one (storetest.PoolSize).
	st := storetest.Open(t, env("SOAK_DIALECT", "sqlite"), store.Options{MaxOpenConns: store.DefaultMaxOpenConns})
	log := slog.New(slog.DiscardHandler)

	var hooks atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		hooks.Add(1)
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()
	for i := range workspaces {
		name := fmt.Sprintf("soak-%d", i)
		if _, err := st.CreateWorkspace(ctx, store.NewWorkspace{Name: name, AdminSub: "admin-" + name, AdminEmail: "admin@" + name + ".test"}); err != nil {
			t.Fatal(err)
		}
		u := srv.URL + "/" + name
		if _, err := st.CreateWebhook(ctx, name, "admin-"+name, store.WebhookInput{URL: &u, EventTypes: &[]string{store.ActionInvitationCreated}}); err != nil {
			t.Fatal(err)
		}
	}

	runCtx, stop := context.WithCancel(ctx)
	var running sync.WaitGroup
	hookCfg := webhook.DefaultConfig()
	hookCfg.AllowLoopback = true
	hd := webhook.NewDispatcher(st, hookCfg, log)
	md := mail.NewDispatcher(st, mail.NewFileSender(t.TempDir(), log), mail.DispatcherConfig{MessageIDDomain: "soak.test"}, log)
	running.Go(func() { hd.Run(runCtx) })
	running.Go(func() { md.Run(runCtx) })

	var invites, refused atomic.Int64
	var clientsDone sync.WaitGroup
	deadline := time.Now().Add(duration)
	for c := range clients {
		clientsDone.Go(func() {
			for i := 0; time.Now().Before(deadline); i++ {
				ws := fmt.Sprintf("soak-%d", (c+i)%workspaces)
				_, err := st.Invite(ctx, store.InviteParams{Workspace: ws, Caller: "admin-" + ws, Email: fmt.Sprintf("c%d-%d@%s.test", c, i, ws), TTL: time.Hour})
				if err != nil {
					refused.Add(1)
					continue
				}
				invites.Add(1)
				md.Wake() // as the server does after an invite
			}
		})
	}

	db := readDB(st)
	var worstHook, worstMail time.Duration
	var peakHeap uint64
	tick := time.NewTicker(500 * time.Millisecond)
	for time.Now().Before(deadline) {
		<-tick.C
		now := time.Now()
		if age := oldestAge(t, db, now); age > worstHook {
			worstHook = age
		}
		stats, err := st.OutboxStats(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !stats.OldestPending.IsZero() && now.Sub(stats.OldestPending) > worstMail {
			worstMail = now.Sub(stats.OldestPending)
		}
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		peakHeap = max(peakHeap, m.HeapInuse)
	}
	tick.Stop()
	clientsDone.Wait()
	drainStart := time.Now()
	for oldestAge(t, db, time.Now()) > 0 && time.Since(drainStart) < time.Minute {
		time.Sleep(50 * time.Millisecond)
	}
	drain := time.Since(drainStart)
	stop()
	running.Wait()
	counts, _ := st.OutboxCounts(ctx)
	secs := duration.Seconds()
	t.Logf("%s, %d clients, %d workspaces, %v: %.0f invites/s (%d refused), %.0f webhooks/s, %.0f emails/s; oldest pending: webhook %v, email %v; webhooks drained %v after the load; peak heap %.1f MiB",
		env("SOAK_DIALECT", "sqlite"), clients, workspaces, duration, float64(invites.Load())/secs, refused.Load(), float64(hooks.Load())/secs,
		float64(counts[store.OutboxSent])/secs, worstHook.Round(time.Millisecond), worstMail.Round(time.Millisecond), drain.Round(time.Millisecond),
		float64(peakHeap)/(1<<20))
	if worstHook >= 5*time.Second || worstMail >= 5*time.Second {
		t.Errorf("the oldest pending message reached %v (webhook) / %v (email), want under 5 s", worstHook, worstMail)
	}
}

// readDB is a pool that reads the store's database.
func readDB(st *store.Store) *sql.DB {
	dbs := st.DBs()
	if db, ok := dbs["sqlite_read"]; ok {
		return db
	}
	for _, db := range dbs {
		return db
	}
	return nil
}

// oldestAge is how long the oldest pending webhook message has waited (0:
// none).
func oldestAge(t *testing.T, db *sql.DB, now time.Time) time.Duration {
	t.Helper()
	var oldest sql.NullTime
	if err := db.QueryRowContext(context.Background(), oldestPendingWebhookSQL).Scan(&oldest); err != nil {
		var s sql.NullString // SQLite hands back text for an aggregate of times
		if err2 := db.QueryRowContext(context.Background(), oldestPendingWebhookSQL).Scan(&s); err2 != nil {
			t.Fatal(err)
		}
		if !s.Valid {
			return 0
		}
		for _, layout := range []string{"2006-01-02 15:04:05.999999999-07:00", time.RFC3339Nano} {
			if at, err := time.Parse(layout, s.String); err == nil {
				return now.Sub(at)
			}
		}
		t.Fatalf("oldest pending webhook: cannot read %q", s.String)
	}
	if !oldest.Valid {
		return 0
	}
	return now.Sub(oldest.Time)
}
