// Package store holds the service's data and its rules: workspaces and
// their members, invitations and their emails (the outbox), API keys,
// service accounts and their keys, email-domain policies, the audit log and
// its webhook messages, idempotency keys and signing keys. It runs on SQLite
// (the embedded default, pure Go) or PostgreSQL, through GORM and, on the
// invite path, raw SQL. How writes reach the database (group commit,
// batching, fsync) is the write engine's, in store/internal/commit, which
// knows no type of this package.
//
// Public methods name a workspace by its name, first after ctx, then the
// acting principal (by), then what is acted on (a sub or email, a client
// ID, an endpoint ID), then what is created or set, as one struct when it
// is more than one value (NewWorkspace). Only AuditFilter takes a workspace
// ID: the log outlives its workspace, whose name a new one may take.
//
// # The route of an invite
//
// One invite reads front to back through these files; each refers only to
// those after it on the route (besides the package's shared vocabulary:
// models, errors, the audit and outbox helpers):
//
//  1. server/invitations.go (one invite) or server/bulk.go (many) calls
//     Store.Invite or Store.InviteMany.
//  2. invitations.go: Invite and InviteMany detach the write from the
//     caller, normalise the request (InviteParams.prepare), hand it to the
//     batcher, and send what the batcher leaves to the slow path
//     (inviteSlow), each in a write transaction (Store.inTx).
//  3. invite_batch.go: the batcher of each database gathers the invites
//     waiting side by side into one batch and runs the invite statement
//     for all of them: on SQLite as a group of the group committer, on
//     PostgreSQL on a worker of a commit.Batcher, in one round trip. What
//     the statement does not settle is answered "not found", for the slow
//     path.
//  4. invite_rules.go: what an invite must satisfy and what it writes,
//     each rule once: the invite statement (in SQL, for the batch and the
//     slow path's final write) and the slow path's checks (in Go), side by
//     side where both must hold a rule (TestInviteRules runs them against
//     each other), and the audit event (inviteEvent).
//  5. internal/commit: the transactions. On SQLite, Committer runs the
//     batch's function (and the slow path's) inside its group-committed
//     transaction and answers once the fsync covers it; on PostgreSQL,
//     Batcher hands batches to its workers, and the slow path is an
//     ordinary transaction.
//
// The engine calls back only the function it was handed (a commit.Group's
// RunGroup, a transaction's function); it never reaches into the rules.
package store
