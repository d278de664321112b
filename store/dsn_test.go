package store_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/membership-api/controlplane/store"
	"github.com/membership-api/controlplane/store/storetest"
)

// TestOpen_DSNForms: a DSN meant for another database is refused with the
// accepted forms, and creates nothing; SQLite paths in every accepted form
// open, colons included ("mysql://foo" became a SQLite file
// "mysql:/foo").
func TestOpen_DSNForms(t *testing.T) {
	t.Chdir(t.TempDir()) // a relative file the old code made would land here
	ctx := context.Background()
	for _, dsn := range []string{
		"mysql://foo",
		"mysql://user:secret@db:3306/cp",
		"MySQL://foo",
		"sqlserver://sa@localhost",
		"redis://127.0.0.1:6379/0",
		"https://example.com/db",
		"sqlite3://data/x.db",
		"host=db dbname=cp user=cp",
		"dbname=cp",
	} {
		t.Run(dsn, func(t *testing.T) {
			st, err := store.Open(ctx, dsn, store.Options{})
			if err == nil {
				st.Close()
				t.Fatalf("opened %q, want an error naming the accepted forms", dsn)
			}
			msg := err.Error()
			for _, want := range []string{"postgres://", "postgresql://", "file path", "sqlite:"} {
				if !strings.Contains(msg, want) {
					t.Errorf("error %q does not name %q", msg, want)
				}
			}
			if strings.Contains(msg, "secret") || strings.Contains(msg, "\n") {
				t.Errorf("error %q: want one line without the password", msg)
			}
			if entries, _ := os.ReadDir("."); len(entries) > 0 {
				t.Errorf("a refused DSN created %s", entries[0].Name())
			}
		})
	}
	dir := t.TempDir()
	for _, tc := range []struct{ dsn, file string }{
		{filepath.Join(dir, "plain.db"), filepath.Join(dir, "plain.db")},
		{filepath.Join(dir, "a:b.db"), filepath.Join(dir, "a:b.db")}, // a colon is legal in a file name: only scheme:// is a URL
		{"C:/data.db", "C:/data.db"},                                 // a drive letter is a path (here a directory "C:")
		{"sqlite:" + filepath.Join(dir, "prefixed.db"), filepath.Join(dir, "prefixed.db")},
		{"sqlite://" + filepath.Join(dir, "url.db"), filepath.Join(dir, "url.db")},
		{"file:" + filepath.Join(dir, "file.db") + "?mode=rwc", filepath.Join(dir, "file.db")},
	} {
		t.Run(tc.dsn, func(t *testing.T) {
			st, err := store.Open(ctx, tc.dsn, store.Options{})
			if err != nil {
				t.Fatalf("open %q: %v", tc.dsn, err)
			}
			st.Close()
			if _, err := os.Stat(tc.file); err != nil {
				t.Errorf("%q: want the SQLite file %s: %v", tc.dsn, tc.file, err)
			}
		})
	}
	t.Run("postgresql://", func(t *testing.T) {
		dsn := "postgresql://" + strings.TrimPrefix(storetest.DSN(t, "postgres"), "postgres://")
		st, err := store.Open(ctx, dsn, store.Options{})
		if err != nil {
			t.Fatalf("open %s: %v", store.RedactDSN(dsn), err)
		}
		defer st.Close()
		if st.Dialect() != "postgres" {
			t.Errorf("postgresql:// opened %s, want postgres", st.Dialect())
		}
	})
}

// A malformed PostgreSQL URL is refused without any part of its password
// (net/url quotes the part it could not parse: here ":s3cr").
func TestOpen_MalformedPostgresURLKeepsPassword(t *testing.T) {
	for _, dsn := range []string{"postgres://u:s3cr/et@host/db", "postgresql://u:s3cret@ho st/db", "postgres://u:s3cret@host:99x/db"} {
		_, err := store.Open(context.Background(), dsn, store.Options{})
		if err == nil || strings.Contains(err.Error(), "s3cr") || !strings.Contains(err.Error(), "percent-encode") {
			t.Errorf("%s: got %v, want an error saying what to do, without the password", dsn, err)
		}
	}
}
