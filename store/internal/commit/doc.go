// Package commit is the store's write engine: how writes reach the
// database, never what they write. Committer runs every SQLite write
// transaction on one connection and commits concurrent ones together
// (group commit, with the fsync pipelined behind the next transaction);
// Batcher hands concurrent jobs to a few workers in batches (the store's
// PostgreSQL invites). Neither knows a domain type: a job is a function of
// a transaction, a group is whatever runs many jobs at once, and what a
// transaction's group steps learn is kept for them in a Memo whose content
// is theirs.
package commit
