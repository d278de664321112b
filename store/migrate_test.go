package store_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/membership-api/controlplane/store"
	"github.com/membership-api/controlplane/store/storetest"
)

// openUnmigrated opens the store at dsn without migrating it (closed at
// cleanup).
func openUnmigrated(t *testing.T, dsn string) *store.Store {
	t.Helper()
	st, err := store.Open(context.Background(), dsn, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func mustSchema(t *testing.T, st *store.Store) []string {
	t.Helper()
	lines, err := st.SchemaForTest(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(lines) == 0 {
		t.Fatal("empty schema")
	}
	return lines
}

// schemaDiff says what is in one schema and not in the other ("" when they
// are the same).
func schemaDiff(a, b []string) string {
	var out []string
	for _, l := range a {
		if !slices.Contains(b, l) {
			out = append(out, "- "+l)
		}
	}
	for _, l := range b {
		if !slices.Contains(a, l) {
			out = append(out, "+ "+l)
		}
	}
	return strings.Join(out, "\n")
}

func runPrevious(t *testing.T, dsn string, args ...string) string {
	t.Helper()
	bin := storetest.PreviousBinary(t)
	//nolint:gosec // G204: the test's own build of the previous release
	cmd := exec.CommandContext(t.Context(), bin, append(args, "--db", dsn)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output() // stdout alone: what a command prints (a key)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", storetest.PreviousRelease, strings.Join(args, " "), err, stderr.String())
	}
	return string(out)
}

func mustSchemaVersion(t *testing.T, st *store.Store, want int64) {
	t.Helper()
	got, err := st.SchemaVersion(context.Background())
	if err != nil || got != want {
		t.Fatalf("schema version: got %d, %v; want %d", got, err, want)
	}
}

// TestMigrate_FromPreviousRelease: a database made (and used) by the last
// release before versioned migrations is recognised as version 1 without
// any change to its schema, version 1 on a new database is that schema
// exactly, and the later versions then apply with the data intact.
func TestMigrate_FromPreviousRelease(t *testing.T) {
	storetest.EachDialect(t, func(t *testing.T, dialect string) {
		t.Parallel()
		ctx := context.Background()
		dsn := storetest.DSN(t, dialect)
		runPrevious(t, dsn, "migrate")
		runPrevious(t, dsn, "workspace", "create", "acme", "--admin-sub", "u1", "--admin-email", "alice@acme.test")
		key := strings.TrimSpace(runPrevious(t, dsn, "apikey", "create", "--workspace", "acme", "--sub", "u1"))

		old := openUnmigrated(t, dsn)
		before := mustSchema(t, old)
		mustSchemaVersion(t, old, 0)
		if err := old.MigrateToForTest(ctx, 1); err != nil {
			t.Fatal(err)
		}
		mustSchemaVersion(t, old, 1)
		if d := schemaDiff(before, mustSchema(t, old)); d != "" {
			t.Errorf("version 1 changed the previous release's schema:\n%s", d)
		}

		fresh := openUnmigrated(t, storetest.DSN(t, dialect))
		if err := fresh.MigrateToForTest(ctx, 1); err != nil {
			t.Fatal(err)
		}
		if d := schemaDiff(before, mustSchema(t, fresh)); d != "" {
			t.Errorf("version 1 on a new database differs from the previous release's schema:\n%s", d)
		}

		for range 2 { // idempotent
			if err := old.Migrate(ctx); err != nil {
				t.Fatal(err)
			}
		}
		mustSchemaVersion(t, old, store.LatestSchemaVersion())
		if err := fresh.Migrate(ctx); err != nil {
			t.Fatal(err)
		}
		if d := schemaDiff(mustSchema(t, fresh), mustSchema(t, old)); d != "" {
			t.Errorf("an upgraded database differs from a new one:\n%s", d)
		}
		m, err := old.Membership(ctx, "acme", "u1")
		if err != nil || m.Role != store.RoleAdmin {
			t.Errorf("the previous release's admin: %+v, %v", m, err)
		}
		if k, err := old.LookupAPIKey(ctx, key); err != nil || k.Sub != "u1" {
			t.Errorf("the previous release's API key: %+v, %v", k, err)
		}
		if _, err := old.CursorKey(ctx); err != nil {
			t.Error(err)
		}
	})
}

// TestMigrations_MatchModels: the GORM models, which the queries use, ask
// for nothing the migrations did not make: AutoMigrate (which adds every
// missing column and index of a model) changes nothing on a migrated
// database. A model change without its migration fails here.
func TestMigrations_MatchModels(t *testing.T) {
	eachDialect(t, func(t *testing.T, st *store.Store, _ *clock) {
		before := mustSchema(t, st)
		if err := st.AutoMigrateForTest(context.Background()); err != nil {
			t.Fatal(err)
		}
		if d := schemaDiff(before, mustSchema(t, st)); d != "" {
			t.Errorf("the models want what no migration made (add a migration):\n%s", d)
		}
	})
}

// TestMigrate_RefusesNewerSchema: a database a newer release migrated is
// refused, by Migrate and CheckSchema alike, naming both versions, and
// nothing is changed.
func TestMigrate_RefusesNewerSchema(t *testing.T) {
	eachDialect(t, func(t *testing.T, st *store.Store, _ *clock) {
		ctx := context.Background()
		newer := store.LatestSchemaVersion() + 1
		if err := st.ExecForTest(ctx, "INSERT INTO goose_db_version (version_id, is_applied) VALUES (?, ?)", newer, true); err != nil {
			t.Fatal(err)
		}
		before := mustSchema(t, st)
		for name, check := range map[string]func(context.Context) error{"Migrate": st.Migrate, "CheckSchema": st.CheckSchema} {
			err := check(ctx)
			if !errors.Is(err, store.ErrSchemaNewer) || !strings.Contains(err.Error(), fmt.Sprint(newer)) {
				t.Errorf("%s: got %v, want ErrSchemaNewer naming version %d", name, err, newer)
			}
		}
		if d := schemaDiff(before, mustSchema(t, st)); d != "" {
			t.Errorf("schema changed:\n%s", d)
		}
		states, err := st.MigrationStatus(ctx)
		if err != nil || len(states) == 0 || states[len(states)-1].Version != newer || states[len(states)-1].Known {
			t.Errorf("status: %+v, %v; want the unknown version %d last", states, err, newer)
		}
	})
}

// TestCheckSchema_Pending: CheckSchema (serve --migrate=false) refuses a
// database with pending versions, naming them and the command to run, and
// writes nothing (not even goose's table); status lists them as pending.
func TestCheckSchema_Pending(t *testing.T) {
	storetest.EachDialect(t, func(t *testing.T, dialect string) {
		t.Parallel()
		ctx := context.Background()
		st := openUnmigrated(t, storetest.DSN(t, dialect))
		err := st.CheckSchema(ctx)
		if !errors.Is(err, store.ErrSchemaPending) || !strings.Contains(err.Error(), "controlplane migrate") {
			t.Fatalf("new database: got %v, want ErrSchemaPending naming the command", err)
		}
		if tables, err := st.SchemaForTest(ctx); err == nil && len(tables) > 0 {
			t.Errorf("CheckSchema wrote: %v", tables)
		}
		if err := st.MigrateToForTest(ctx, 1); err != nil {
			t.Fatal(err)
		}
		states, err := st.MigrationStatus(ctx)
		if err != nil || len(states) != len(store.Migrations()) || !states[0].Applied || states[0].AppliedAt == "" {
			t.Fatalf("status after version 1: %+v, %v", states, err)
		}
		for _, s := range states[1:] {
			if s.Applied {
				t.Errorf("version %d applied, want pending", s.Version)
			}
		}
		if store.LatestSchemaVersion() > 1 {
			if err := st.CheckSchema(ctx); !errors.Is(err, store.ErrSchemaPending) {
				t.Errorf("at version 1: got %v, want ErrSchemaPending", err)
			}
		}
		if err := st.Migrate(ctx); err != nil {
			t.Fatal(err)
		}
		if err := st.CheckSchema(ctx); err != nil {
			t.Errorf("migrated: %v", err)
		}
	})
}

// TestMigrate_UpToDateTouchesNoData: a start (Migrate on an up-to-date
// database) takes no lock on, and reads no row of, any table of the data:
// it completes while another transaction holds every one of them in ACCESS
// EXCLUSIVE mode, which conflicts with every read and write. (Releases
// before the versioned migrations recounted every member at every start,
// holding members in SHARE mode: 2.6–4.9 s at 1,000,000 members.)
func TestMigrate_UpToDateTouchesNoData(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dsn := storetest.DSN(t, "postgres")
	st := storetest.OpenDSN(t, dsn, store.Options{})
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback() //nolint:errcheck // the locks' transaction, rolled back on purpose
	_, err = tx.ExecContext(ctx, `DO $$ DECLARE t text; BEGIN
		FOR t IN SELECT tablename FROM pg_tables WHERE schemaname = current_schema() AND tablename NOT IN ('goose_db_version', 'secrets') LOOP
			EXECUTE 'LOCK TABLE ' || quote_ident(t) || ' IN ACCESS EXCLUSIVE MODE';
		END LOOP; END $$`)
	if err != nil {
		t.Fatal(err)
	}
	// Not a timing assertion: a Migrate that needed one of the locks would
	// wait for ever; the deadline only turns that into a failure.
	mctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := st.Migrate(mctx); err != nil {
		t.Fatalf("Migrate on an up-to-date database waited for a data table: %v", err)
	}
}
