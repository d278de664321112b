//go:build unix

package store

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// dbLock is a lock on a SQLite database's lock file (<database>.lock),
// which the database file itself cannot carry: SQLite's own locks come
// and go with its transactions. Every store opened on the file holds it
// shared for as long as it is open (serve, the workers, each command);
// restore takes it exclusive, so it never replaces a database a process
// has open, and no process opens one while restore replaces it. flock(2)
// locks belong to an open file, not a process: two stores of one process
// share, and restore in the same process as a store is refused as well.
type dbLock struct{ f *os.File }

// errLocked is returned by lockDatabase when the lock is held in the other
// mode.
var errLocked = errors.New("lock held")

// lockDatabase takes path's lock file's lock, shared or exclusive, without
// waiting: errLocked when another holder has it in the other mode.
func lockDatabase(path string, exclusive bool) (*dbLock, error) {
	// One lock per database file however it is named: SQLite follows a
	// symbolic link to the file (its -wal is beside the file), and so does
	// the lock.
	if resolved, err := filepath.EvalSymlinks(path); err == nil {
		path = resolved
	}
	//nolint:gosec // G302/G304: the lock file holds nothing; its path is the database's, from the operator
	f, err := os.OpenFile(path+".lock", os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open lock file: %w", err)
	}
	how := syscall.LOCK_SH
	if exclusive {
		how = syscall.LOCK_EX
	}
	for {
		err = syscall.Flock(int(f.Fd()), how|syscall.LOCK_NB) //nolint:gosec // G115: a file descriptor fits an int
		if !errors.Is(err, syscall.EINTR) {
			break
		}
	}
	if err != nil {
		_ = f.Close() // the lock was not taken; closing a file we only opened
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, errLocked
		}
		return nil, fmt.Errorf("lock %s: %w", f.Name(), err)
	}
	return &dbLock{f: f}, nil
}

// release drops the lock (closing the file releases it); again, nothing.
func (l *dbLock) release() error {
	if l == nil || l.f == nil {
		return nil
	}
	f := l.f
	l.f = nil
	return f.Close()
}
