package store_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/membership-api/controlplane/store"
	"github.com/membership-api/controlplane/store/storetest"
)

// seedEveryTable writes rows into every table copy copies, through the
// store's own methods: NULL and non-NULL times, bytes, pending and
// retried messages, a composite key (domain rules), a text key (secrets).
func seedEveryTable(t *testing.T, st *store.Store, prefix string) {
	t.Helper()
	ctx := store.WithActor(context.Background(), store.Actor{Kind: store.ActorCLI})
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	ws := prefix + "-acme"
	_, err := st.CreateWorkspace(ctx, store.NewWorkspace{Name: ws, DisplayName: "Acmé ✓", AdminSub: "admin", AdminEmail: "admin@acme.test"})
	must(err)
	_, err = st.CreateWebhook(ctx, ws, "admin", store.WebhookInput{URL: ptr("https://hooks.example.com/in"), Description: ptr("d")})
	must(err)
	for _, email := range []string{"b@acme.test", "c@acme.test", "d@acme.test"} {
		_, err = st.Invite(ctx, store.InviteParams{Workspace: ws, Caller: "admin", Email: email, TTL: time.Hour})
		must(err)
	}
	_, key, err := st.CreateAPIKey(ctx, ws, "admin")
	must(err)
	_ = key
	_, _, err = st.CreateServiceAccount(ctx, ws, "admin", store.NewServiceAccount{Name: "ci", Description: "robot"})
	must(err)
	_, err = st.SetDomainPolicy(ctx, ws, "admin", store.EmailDomainPolicy{Allow: []string{"acme.test", "example.org"}, Deny: []string{"evil.test"}})
	must(err)
	claim, err := st.BeginIdempotent(ctx, store.IdempotencyScope{Workspace: ws, Caller: "admin", Key: "k1"}, []byte{0, 1, 2, 255}, time.Hour)
	must(err)
	must(st.FinishIdempotent(ctx, claim, 201, []byte(`{"ok":true}`)))
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	must(err)
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	must(err)
	err = st.EnsureFirstSigningKey(ctx, store.SigningKey{KID: prefix + "-k1", Algorithm: "EdDSA", PrivateKey: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})})
	must(err)
	// A webhook attempt that failed and will be retried: an attempt row,
	// a pending message with a due time in the future.
	items, err := st.ClaimWebhooks(ctx, "tok", 1, time.Minute)
	must(err)
	if len(items) == 0 {
		t.Fatal("no webhook message queued")
	}
	_, err = st.RecordWebhookAttempt(ctx, items[0], "tok", store.WebhookResult{Outcome: store.AttemptRetry, Started: time.Now(), StatusCode: 503,
		Latency: 3 * time.Millisecond, Error: "503 Service Unavailable", Next: time.Now().Add(time.Hour)}, 24*time.Hour)
	must(err)
}

func ptr[T any](v T) *T { return &v }

func checksums(t *testing.T, st *store.Store) []store.TableCheck {
	t.Helper()
	sums, err := st.Checksums(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return sums
}

// Every table's rows go from SQLite to PostgreSQL and back unchanged:
// their checksums are equal on all three databases, and PostgreSQL's
// sequences hand out fresh ids afterwards.
func TestCopy_SQLiteToPostgresAndBack(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	src := storetest.Open(t, "sqlite", store.Options{})
	seedEveryTable(t, src, "cp")
	want := checksums(t, src)
	for _, c := range want {
		if c.SourceRows == 0 {
			t.Errorf("the seed left %s empty: every table must be exercised", c.Table)
		}
	}
	pg := storetest.Open(t, "postgres", store.Options{})
	report, err := store.Copy(ctx, src, pg, store.CopyOptions{BatchSize: 2})
	if err != nil {
		t.Fatal(err)
	}
	if got := checksums(t, pg); !slices.Equal(got, want) {
		t.Errorf("PostgreSQL after the copy:\n%v\nwant\n%v", got, want)
	}
	var rows int64
	for _, c := range report.Tables {
		if !c.Match() {
			t.Errorf("%s: %+v", c.Table, c)
		}
		rows += c.SourceRows
	}
	if rows != report.Rows || rows == 0 {
		t.Errorf("report.Rows %d, tables sum to %d", report.Rows, rows)
	}
	back := storetest.Open(t, "sqlite", store.Options{})
	if _, err := store.Copy(ctx, pg, back, store.CopyOptions{}); err != nil {
		t.Fatal(err)
	}
	if got := checksums(t, back); !slices.Equal(got, want) {
		t.Errorf("SQLite after the round trip:\n%v\nwant\n%v", got, want)
	}
	// New rows get fresh ids on both targets.
	for _, st := range []*store.Store{pg, back} {
		if _, err := st.CreateWorkspace(ctx, store.NewWorkspace{Name: "after-copy", AdminSub: "u9", AdminEmail: "z@after.test"}); err != nil {
			t.Errorf("%s: a new workspace after the copy: %v", st.Dialect(), err)
		}
	}
}

// Refusals change nothing in either database.
func TestCopy_Refusals(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	storetest.EachDialect(t, func(t *testing.T, dialect string) {
		src := storetest.Open(t, "sqlite", store.Options{})
		seedEveryTable(t, src, "src")

		t.Run("target not empty", func(t *testing.T) {
			dst := storetest.Open(t, dialect, store.Options{})
			if _, err := dst.CreateWorkspace(ctx, store.NewWorkspace{Name: "mine", AdminSub: "u1", AdminEmail: "a@mine.test"}); err != nil {
				t.Fatal(err)
			}
			before := checksums(t, dst)
			_, err := store.Copy(ctx, src, dst, store.CopyOptions{})
			if err == nil || !strings.Contains(err.Error(), "not empty") || !strings.Contains(err.Error(), "workspaces") {
				t.Fatalf("got %v, want an error naming the non-empty tables", err)
			}
			if after := checksums(t, dst); !slices.Equal(before, after) {
				t.Errorf("the target changed")
			}
		})
		t.Run("source delivering", func(t *testing.T) {
			dst := storetest.Open(t, dialect, store.Options{})
			items, err := src.ClaimOutbox(ctx, "worker", 1, time.Minute)
			if err != nil || len(items) == 0 {
				t.Fatalf("claim: %v, %d items", err, len(items))
			}
			before := checksums(t, dst)
			_, err = store.Copy(ctx, src, dst, store.CopyOptions{})
			if err == nil || !strings.Contains(err.Error(), "delivering") {
				t.Fatalf("got %v, want an error saying the source is delivering", err)
			}
			if after := checksums(t, dst); !slices.Equal(before, after) {
				t.Errorf("the target changed")
			}
			if err := src.ReleaseOutbox(ctx, "worker"); err != nil {
				t.Fatal(err)
			}
		})
	})
}

// A source whose schema is newer (or older) than the target's, or a
// target no migration has run on, is refused with what to run.
func TestCheckSchemaVersions(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		source, target int64
		want           string // "" for no error
	}{
		{3, 3, ""},
		{4, 3, "newer than the target's"},
		{2, 3, "older than the target's"},
		{3, 0, "not migrated"},
	} {
		err := store.CheckSchemaVersions(tc.source, tc.target)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%d → %d: %v", tc.source, tc.target, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "migrate")):
			t.Errorf("%d → %d: got %v, want an error with %q naming migrate", tc.source, tc.target, err, tc.want)
		}
	}
}

// A table copy does not know (made by a later release, or by hand) is
// refused rather than left behind.
func TestCopy_RefusesAnUnknownTable(t *testing.T) {
	t.Parallel()
	storetest.EachDialect(t, func(t *testing.T, dialect string) {
		src := storetest.Open(t, dialect, store.Options{})
		if err := src.ExecForTest(context.Background(), "CREATE TABLE later_feature (id integer PRIMARY KEY)"); err != nil {
			t.Fatal(err)
		}
		dst := storetest.Open(t, "sqlite", store.Options{})
		_, err := store.Copy(context.Background(), src, dst, store.CopyOptions{})
		if err == nil || !strings.Contains(err.Error(), "later_feature") {
			t.Fatalf("got %v, want an error naming the table", err)
		}
	})
}
