package devserver

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"

	"github.com/membership-api/controlplane/store"
)

// schemaFiles is an empty SQLite database as Migrate leaves it (its files'
// contents by suffix: "" the database, "-wal" its log if one was left),
// made once per process. Migrating costs a new database most of a dev
// server's start (about 40 ms of CPU and a dozen fsyncs); a copy costs a
// file write.
var schemaFiles = sync.OnceValues(func() (map[string][]byte, error) {
	dir, err := os.MkdirTemp("", "controlplane-schema-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir) //nolint:errcheck // a temporary directory; what it held is in memory by now
	path := filepath.Join(dir, "controlplane.db")
	st, err := store.Open(context.Background(), path, store.Options{MaxOpenConns: 1})
	if err != nil {
		return nil, err
	}
	err = st.Migrate(context.Background())
	if err = errors.Join(err, st.Close()); err != nil {
		return nil, fmt.Errorf("migrate the schema to copy: %w", err)
	}
	files := map[string][]byte{}
	for _, suffix := range []string{"", "-wal"} {
		raw, err := os.ReadFile(path + suffix) //nolint:gosec // G304: our own temporary file
		if errors.Is(err, fs.ErrNotExist) && suffix != "" {
			continue
		}
		if err != nil {
			return nil, err
		}
		files[suffix] = raw
	}
	return files, nil
})

// copySchema writes the migrated empty database to path, unless a file is
// there already (then copied is false and the caller migrates).
func copySchema(path string) (copied bool, err error) {
	if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
		return false, err
	}
	files, err := schemaFiles()
	if err != nil {
		return false, err
	}
	for suffix, raw := range files {
		if err := os.WriteFile(path+suffix, raw, 0o600); err != nil {
			return false, err
		}
	}
	return true, nil
}
