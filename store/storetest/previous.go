package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/membership-api/controlplane/store"
)

// PreviousRelease is the last commit before the versioned migrations: its
// databases (made by GORM's AutoMigrate, with no goose_db_version) must be
// recognised as schema version 1, and its servers must keep serving while
// the new release migrates the database they share.
const PreviousRelease = "8c6232f"

var (
	previousOnce sync.Once
	previousBin  string
	previousErr  error
)

// PreviousBinary returns the path of controlplane built at PreviousRelease
// from this repository's history (git archive, then go build). The binary
// is kept under the system's temporary directory, named by the commit, so
// later test runs reuse it; it is built once per test process otherwise.
func PreviousBinary(tb testing.TB) string {
	tb.Helper()
	previousOnce.Do(func() { previousBin, previousErr = buildAt(PreviousRelease) })
	if previousErr != nil {
		tb.Fatalf("build controlplane at %s (needs git history and the Go toolchain): %v", PreviousRelease, previousErr)
	}
	return previousBin
}

func buildAt(commit string) (string, error) {
	dir := filepath.Join(os.TempDir(), "controlplane-release-"+commit)
	bin := filepath.Join(dir, "controlplane")
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	top, err := run("", nil, "git", "rev-parse", "--show-toplevel")
	if err != nil {
		return "", err
	}
	src, err := os.MkdirTemp("", "controlplane-src-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(src) //nolint:errcheck // a temporary copy of the sources
	archive, err := run(strings.TrimSpace(top), nil, "git", "archive", "--format=tar", commit)
	if err != nil {
		return "", err
	}
	if _, err := run(src, strings.NewReader(archive), "tar", "-x"); err != nil {
		return "", err
	}
	//nolint:gosec // G301: a build directory under the temporary directory
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	// Built under another name, then renamed: a build cut short never
	// leaves a binary that a later run would take for a whole one.
	tmp := bin + fmt.Sprintf(".%d", os.Getpid())
	if _, err := run(src, nil, "go", "build", "-o", tmp, "."); err != nil {
		return "", err
	}
	return bin, os.Rename(tmp, bin)
}

func run(dir string, stdin *strings.Reader, name string, args ...string) (string, error) {
	//nolint:gosec // G204: git, tar and go, with this package's arguments
	cmd := exec.CommandContext(context.Background(), name, args...)
	cmd.Dir = dir
	if stdin != nil {
		cmd.Stdin = stdin
	}
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		return "", errors.Join(fmt.Errorf("%s %s: %w", name, strings.Join(args, " "), err), errors.New(stderr.String()))
	}
	return out.String(), nil
}

// RecordSchemaVersion records version v as applied in st's database, as the
// migrate of a newer release would: for tests of what a binary does with a
// schema newer than it knows.
func RecordSchemaVersion(ctx context.Context, st *store.Store, v int64) error {
	db, err := sideDB(st)
	if err != nil {
		return err
	}
	return db.WithContext(ctx).Exec("INSERT INTO goose_db_version (version_id, is_applied) VALUES (?, ?)", v, true).Error
}
