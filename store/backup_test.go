package store_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/membership-api/controlplane/store"
	"github.com/membership-api/controlplane/store/storetest"
)

// workspaceNames lists every workspace of st by name.
func workspaceNames(t *testing.T, st *store.Store) []string {
	t.Helper()
	ws, err := st.WorkspaceNames(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return ws
}

// A backup taken while writers keep writing is a consistent database that
// restores to the same rows: every table's count as the backup reported,
// every workspace one the source had, each with its admin.
func TestBackup_UnderWriteLoadRestoresTheSameRows(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dsn := storetest.DSN(t, "sqlite")
	st := storetest.OpenDSN(t, dsn, store.Options{})
	var (
		wg      sync.WaitGroup
		stop    atomic.Bool
		written atomic.Int64
		werr    error
	)
	create := func(i int64) error {
		_, err := st.CreateWorkspace(ctx, store.NewWorkspace{Name: fmt.Sprintf("load-%d", i), AdminSub: "u1", AdminEmail: "a@load.test"})
		return err
	}
	for i := range int64(20) { // some rows before the backup starts
		if err := create(i); err != nil {
			t.Fatal(err)
		}
	}
	written.Store(20)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for !stop.Load() {
			if err := create(written.Load()); err != nil {
				werr = err
				return
			}
			written.Add(1)
		}
	}()
	to := filepath.Join(t.TempDir(), "backup.db")
	report, err := store.Backup(ctx, dsn, to)
	stop.Store(true)
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if werr != nil {
		t.Fatalf("writer: %v", werr)
	}
	counts := map[string]int64{}
	for _, tr := range report.Tables {
		counts[tr.Table] = tr.Rows
	}
	if counts["workspaces"] < 20 || counts["members"] != counts["workspaces"] || counts["audit_events"] != counts["workspaces"] {
		t.Errorf("backup counts %v: want at least 20 workspaces, each with its admin and its audit event", counts)
	}
	for _, suffix := range []string{"-wal", "-shm"} {
		if _, err := os.Stat(to + suffix); err == nil {
			t.Errorf("%s%s left beside the backup: it must be one file", to, suffix)
		}
	}
	restored := filepath.Join(t.TempDir(), "data", "controlplane.db")
	rr, err := store.Restore(ctx, to, restored)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(rr.Tables, report.Tables) {
		t.Errorf("restore counted %v, backup %v", rr.Tables, report.Tables)
	}
	back := storetest.OpenDSN(t, restored, store.Options{})
	got, err := storetest.CountRows(ctx, back)
	if err != nil {
		t.Fatal(err)
	}
	for table, n := range counts {
		if got[table] != n {
			t.Errorf("restored %s: %d rows, backup had %d", table, got[table], n)
		}
	}
	source := workspaceNames(t, st)
	for _, name := range workspaceNames(t, back) {
		if !slices.Contains(source, name) {
			t.Errorf("restored workspace %q the source never had", name)
		}
	}
}

func TestBackup_RefusesAnExistingFile(t *testing.T) {
	t.Parallel()
	dsn := storetest.DSN(t, "sqlite")
	storetest.OpenDSN(t, dsn, store.Options{})
	to := filepath.Join(t.TempDir(), "backup.db")
	if err := os.WriteFile(to, []byte("keep me"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := store.Backup(context.Background(), dsn, to)
	if err == nil || !strings.Contains(err.Error(), "exists") {
		t.Fatalf("got %v, want an error saying %s exists", err, to)
	}
	if b, _ := os.ReadFile(to); string(b) != "keep me" {
		t.Errorf("the existing file was changed: %q", b)
	}
	if entries, _ := os.ReadDir(filepath.Dir(to)); len(entries) != 1 {
		t.Errorf("backup left files beside: %v", entries)
	}
}

func TestBackup_PostgresPointsToPgDump(t *testing.T) {
	t.Parallel()
	to := filepath.Join(t.TempDir(), "backup.db")
	_, err := store.Backup(context.Background(), "postgres://cp@127.0.0.1:1/cp", to)
	if !errors.Is(err, store.ErrPostgresBackup) || !strings.Contains(err.Error(), "pg_dump") {
		t.Fatalf("got %v, want ErrPostgresBackup naming pg_dump", err)
	}
	if _, err := os.Stat(to); err == nil {
		t.Error("a file was written")
	}
}

// A database that a store has open (a server) is never replaced, and
// nothing changes in it.
func TestRestore_RefusesADatabaseInUse(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dsn := storetest.DSN(t, "sqlite")
	live := storetest.OpenDSN(t, dsn, store.Options{})
	if _, err := live.CreateWorkspace(ctx, store.NewWorkspace{Name: "live", AdminSub: "u1", AdminEmail: "a@live.test"}); err != nil {
		t.Fatal(err)
	}
	// A backup of another database, with other rows.
	otherDSN := storetest.DSN(t, "sqlite")
	other := storetest.OpenDSN(t, otherDSN, store.Options{})
	if _, err := other.CreateWorkspace(ctx, store.NewWorkspace{Name: "other", AdminSub: "u2", AdminEmail: "b@other.test"}); err != nil {
		t.Fatal(err)
	}
	backup := filepath.Join(t.TempDir(), "other.db")
	if _, err := store.Backup(ctx, otherDSN, backup); err != nil {
		t.Fatal(err)
	}
	before, err := live.Checksums(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_, err = store.Restore(ctx, backup, dsn)
	if err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("got %v, want an error saying the database is in use", err)
	}
	after, err := live.Checksums(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(before, after) {
		t.Errorf("the live database changed:\nbefore %v\nafter  %v", before, after)
	}
	if entries, _ := os.ReadDir(filepath.Dir(dsn)); len(entries) > 4 { // the database, -wal, -shm, .lock
		t.Errorf("restore left files beside the database: %v", entries)
	}
	// Once the store is closed, the same restore goes through.
	if err := live.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := store.Restore(ctx, backup, dsn); err != nil {
		t.Fatalf("restore after the store closed: %v", err)
	}
	back := storetest.OpenDSN(t, dsn, store.Options{})
	if names := workspaceNames(t, back); !slices.Equal(names, []string{"other"}) {
		t.Errorf("restored workspaces %v, want [other]", names)
	}
}

func TestRestore_RefusesWhatIsNotAControlplaneBackup(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := t.TempDir()
	text := filepath.Join(dir, "notes.txt")
	if err := os.WriteFile(text, []byte("not a database"), 0o600); err != nil {
		t.Fatal(err)
	}
	target := filepath.Join(dir, "data", "controlplane.db")
	for name, from := range map[string]string{"not SQLite": text, "missing": filepath.Join(dir, "nope.db")} {
		t.Run(name, func(t *testing.T) {
			if _, err := store.Restore(ctx, from, target); err == nil {
				t.Fatal("restored")
			}
			if _, err := os.Stat(filepath.Dir(target)); err == nil {
				t.Error("the data directory was created")
			}
		})
	}
}

// A server that opened the database through a symbolic link holds it as
// much as one that named the file: restore by either name is refused.
func TestRestore_RefusesADatabaseInUseThroughALink(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := t.TempDir()
	file := filepath.Join(dir, "real.db")
	link := filepath.Join(dir, "link.db")
	storetest.OpenDSN(t, file, store.Options{}).Close() //nolint:errcheck // made and closed: the file exists for the link
	if err := os.Symlink(file, link); err != nil {
		t.Skipf("symbolic links: %v", err)
	}
	backup := filepath.Join(t.TempDir(), "backup.db")
	if _, err := store.Backup(ctx, file, backup); err != nil {
		t.Fatal(err)
	}
	live := storetest.OpenDSN(t, link, store.Options{})
	for _, target := range []string{file, link} {
		if _, err := store.Restore(ctx, backup, target); err == nil || !strings.Contains(err.Error(), "in use") {
			t.Errorf("restore into %s: got %v, want an error saying the database is in use", filepath.Base(target), err)
		}
	}
	if err := live.Close(); err != nil {
		t.Fatal(err)
	}
	// Restored through the link: the file it names is replaced, the link
	// stays a link.
	if _, err := store.Restore(ctx, backup, link); err != nil {
		t.Fatal(err)
	}
	if info, err := os.Lstat(link); err != nil || info.Mode()&os.ModeSymlink == 0 {
		t.Errorf("the link was replaced by a file: %v %v", info, err)
	}
}
