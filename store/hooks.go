package store

import (
	"database/sql"
	"time"
)

// Hooks let the caller watch the store's inner work (the program turns them
// into metrics) without the store knowing how it is reported. Nil functions
// are skipped. They are called on the write path (the SQLite writer, the
// invite batch workers), so they must be quick and never block.
type Hooks struct {
	// InviteBatch gets the number of invites one batch statement settled
	// (SQLite: per group-committed transaction; PostgreSQL: per batch).
	InviteBatch func(size int)
	// SQLiteCommit gets how long a group commit's COMMIT took (the WAL
	// write, without the fsync: synchronous=NORMAL, see commit.Committer).
	SQLiteCommit func(time.Duration)
	// SQLiteFsync gets how long an fsync of the WAL file took; the callers
	// of the transactions it covers were waiting for it.
	SQLiteFsync func(time.Duration)
}

func (h Hooks) inviteBatch(size int) {
	if h.InviteBatch != nil {
		h.InviteBatch(size)
	}
}

// DBs returns the connection pools that serve requests, by name, for pool
// statistics: "postgres", or "sqlite_read" (the readers) and "sqlite_write"
// (the group committer's one connection).
func (s *Store) DBs() map[string]*sql.DB {
	if s.committer != nil {
		r, _ := s.read.DB()
		return map[string]*sql.DB{"sqlite_read": r, "sqlite_write": s.committer.Pool()}
	}
	db, _ := s.write.DB()
	return map[string]*sql.DB{string(s.dialect): db}
}
