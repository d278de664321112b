package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"gorm.io/gorm"
)

// The two lists (a workspace's users, a person's invitations) are read in
// keyset order and handed to the caller row by row, so that a list of any
// length costs one row of memory here and can be written to the client as
// it is read, and a page costs the same at the start of a long list as at
// its end (no OFFSET).

// Kinds of entries in a workspace's user list, in list order.
const (
	KindMember     = 0
	KindInvitation = 1
)

// ListPosition is where a list stopped: the last entry handed over. The
// user list is ordered by (Kind, CreatedAt, ID); the invitation list by
// (CreatedAt, ID) with Kind always 0.
type ListPosition struct {
	Kind      int
	CreatedAt time.Time
	ID        int64
}

// workspaceIDByName is the id of the workspace named by the statement's
// parameter, found through the unique index on the name inside the
// statement that needs it (NULL, so no row, for an unknown name): reads
// that name their workspace cost no lookup of their own.
const workspaceIDByName = "(SELECT id FROM workspaces WHERE name = ?)"

// MaxListLimit bounds a page (the YAML says the same).
const MaxListLimit = 1000

// EachUser calls fn with the workspace's members (oldest first), then its
// pending invitations (oldest first, expired ones flagged), each with its
// position, starting after after (nil: from the start). With limit > 0 it
// stops after limit entries and returns the position of the last one if
// more entries follow (nil when the list is done). Both tables are read in
// one snapshot (a read-only transaction), so a user accepting meanwhile is
// listed once, as the invitation or as the member, never neither.
// An error returned by fn stops the walk and is returned as it is. An
// unknown workspace lists nothing. Each statement finds the workspace by
// its name itself (workspaceIDByName), so the name costs no round trip of
// its own: the handler has the membership already.
func (s *Store) EachUser(ctx context.Context, workspaceName string, after *ListPosition, limit int, fn func(UserEntry, ListPosition) error) (*ListPosition, error) {
	if !storable(workspaceName) {
		return nil, nil
	}
	var next *ListPosition
	err := s.readSnapshot(ctx, func(tx *gorm.DB) error {
		w := walk{ctx: ctx, limit: limit}
		if after == nil || after.Kind <= KindMember {
			if err := w.members(tx, workspaceName, after, fn); err != nil || w.next != nil {
				next = w.next
				return err
			}
			after = nil
		}
		err := w.invitations(tx, workspaceName, after, s.now(), fn)
		next = w.next
		return err
	})
	return next, err
}

// walk counts the entries handed over across the two tables of EachUser.
type walk struct {
	ctx   context.Context // the caller's: the walk stops when it is done
	limit int             // 0: no limit
	n     int
	last  ListPosition
	next  *ListPosition // set once an entry beyond limit was seen
}

// room is how many more rows to ask for: one beyond the page, to tell
// whether another page follows. -1 means no limit (GORM omits LIMIT).
func (w *walk) room() int {
	if w.limit <= 0 {
		return -1
	}
	return w.limit - w.n + 1
}

// take records an entry; false means it lies beyond the page. It fails
// once the caller's context is done (a client that went away): the rest of
// the list would be read for nobody.
func (w *walk) take(pos ListPosition) (bool, error) {
	if err := w.ctx.Err(); err != nil {
		return false, err
	}
	if w.limit > 0 && w.n == w.limit {
		last := w.last
		w.next = &last
		return false, nil
	}
	w.n++
	w.last = pos
	return true, nil
}

func (w *walk) members(tx *gorm.DB, workspaceName string, after *ListPosition, fn func(UserEntry, ListPosition) error) error {
	// Service accounts are members too (service_accounts.go) but are never
	// shown as people: /service_accounts lists them. A literal, not a bound
	// parameter: PostgreSQL's generic plan for "source <> $2", with source
	// nearly always '' (one distinct value), estimates no row at all and
	// sorts instead of walking idx_members_list (TestLists_Plans).
	q := tx.Table("members").Select("id, created_at, sub, email, role, source").
		Where("workspace_id = "+workspaceIDByName+" AND source <> '"+SourceServiceAccount+"'", workspaceName)
	if after != nil {
		q = q.Where("(created_at, id) > (?, ?)", after.CreatedAt, after.ID)
	}
	rows, err := q.Order("created_at, id").Limit(w.room()).Rows()
	if err != nil {
		return fmt.Errorf("list members: %w", err)
	}
	defer rows.Close() //nolint:errcheck // a read: rows.Err after the loop reports what went wrong
	for rows.Next() {
		var pos = ListPosition{Kind: KindMember}
		var u = UserEntry{Accepted: true}
		if err := rows.Scan(&pos.ID, &pos.CreatedAt, &u.Sub, &u.Email, &u.Role, &u.Source); err != nil {
			return fmt.Errorf("list members: %w", err)
		}
		if ok, err := w.take(pos); !ok {
			return err
		}
		if err := fn(u, pos); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("list members: %w", err)
	}
	return nil
}

func (w *walk) invitations(tx *gorm.DB, workspaceName string, after *ListPosition, now time.Time, fn func(UserEntry, ListPosition) error) error {
	// status is a literal, not a parameter: PostgreSQL's generic plan can
	// use the partial index only for a condition it can prove.
	q := tx.Table("invitations").Select("id, created_at, email, role, expires_at").
		Where("workspace_id = "+workspaceIDByName+" AND status = '"+InvitationPending+"'", workspaceName)
	if after != nil {
		q = q.Where("(created_at, id) > (?, ?)", after.CreatedAt, after.ID)
	}
	rows, err := q.Order("created_at, id").Limit(w.room()).Rows()
	if err != nil {
		return fmt.Errorf("list invitations: %w", err)
	}
	defer rows.Close() //nolint:errcheck // a read: rows.Err after the loop reports what went wrong
	for rows.Next() {
		var pos = ListPosition{Kind: KindInvitation}
		var u = UserEntry{Source: SourceInvitation}
		var expiresAt time.Time
		if err := rows.Scan(&pos.ID, &pos.CreatedAt, &u.Email, &u.Role, &expiresAt); err != nil {
			return fmt.Errorf("list invitations: %w", err)
		}
		u.Expired = !expiresAt.After(now)
		if ok, err := w.take(pos); !ok {
			return err
		}
		if err := fn(u, pos); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("list invitations: %w", err)
	}
	return nil
}

// pendingForSQL lists a person's pending, unexpired invitations with their
// workspace, inviter and member count. The page is chosen first; the
// member count is the workspace's stored MemberCount (counting members per
// workspace, even grouped, read every member of 1,000 workspaces per call). %s is the keyset condition and
// the LIMIT, both optional.
const pendingForSQL = `
WITH page AS (
  SELECT id, workspace_id, email, role, invited_by, expires_at, created_at
  FROM invitations
  WHERE email = ? AND status = '` + InvitationPending + `' AND expires_at > ?%s
  ORDER BY created_at, id%s
)
SELECT page.id, page.email, page.role, page.invited_by, page.expires_at, page.created_at,
       w.name, w.display_name, COALESCE(m.email, ''), w.member_count
FROM page
JOIN workspaces w ON w.id = page.workspace_id
LEFT JOIN members m ON m.workspace_id = page.workspace_id AND m.sub = page.invited_by
ORDER BY page.created_at, page.id`

// EachPendingInvitationFor calls fn with the unexpired pending invitations
// addressed to email across all workspaces, oldest first, starting after
// after (nil: from the start); limit and the returned position as for
// EachUser. One statement, so one snapshot.
func (s *Store) EachPendingInvitationFor(ctx context.Context, email string, after *ListPosition, limit int, fn func(InvitationView, ListPosition) error) (*ListPosition, error) {
	if !storable(email) {
		return nil, nil
	}
	args := []any{NormalizeEmail(email), s.now()}
	keyset, limitSQL := "", ""
	if after != nil {
		keyset = " AND (created_at, id) > (?, ?)"
		args = append(args, after.CreatedAt, after.ID)
	}
	w := walk{ctx: ctx, limit: limit}
	if limit > 0 {
		limitSQL = " LIMIT ?"
		args = append(args, w.room())
	}
	rows, err := s.read.WithContext(ctx).Raw(fmt.Sprintf(pendingForSQL, keyset, limitSQL), args...).Rows()
	if err != nil {
		return nil, fmt.Errorf("list invitations: %w", err)
	}
	defer rows.Close() //nolint:errcheck // a read: rows.Err after the loop reports what went wrong
	for rows.Next() {
		var v InvitationView
		if err := rows.Scan(&v.ID, &v.Email, &v.Role, &v.InvitedBy, &v.ExpiresAt, &v.CreatedAt,
			&v.WorkspaceName, &v.WorkspaceDisplayName, &v.InviterEmail, &v.MemberCount); err != nil {
			return nil, fmt.Errorf("list invitations: %w", err)
		}
		v.Status = InvitationPending
		pos := ListPosition{CreatedAt: v.CreatedAt, ID: v.ID}
		ok, err := w.take(pos)
		if err != nil {
			return nil, err
		}
		if !ok {
			break
		}
		if err := fn(v, pos); err != nil {
			return nil, err
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list invitations: %w", err)
	}
	return w.next, nil
}

// readSnapshot runs fn in a read-only transaction that sees one snapshot of
// the database: REPEATABLE READ on PostgreSQL (READ COMMITTED would give
// each statement its own); on SQLite any read transaction does (WAL).
func (s *Store) readSnapshot(ctx context.Context, fn func(tx *gorm.DB) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if _, ok := ctx.Deadline(); !ok {
		// As every read once started (finishStartedReads): a client going
		// away must not roll the transaction back under a running
		// statement (database/sql would); the walk checks the caller's
		// context between rows instead (walk.take) and stops cleanly.
		ctx = context.WithoutCancel(ctx)
	}
	opts := &sql.TxOptions{ReadOnly: true}
	if s.dialect == Postgres {
		opts.Isolation = sql.LevelRepeatableRead
	}
	return s.read.WithContext(ctx).Transaction(fn, opts)
}

// secret is a value the server keeps in the database so that every replica
// has the same one without configuration (the list cursors' HMAC key).
type secret struct {
	Name  string `gorm:"primaryKey"`
	Value []byte `gorm:"not null"`
}

func (secret) TableName() string { return "secrets" }

const cursorKeyName = "list-cursor-hmac"

// The lists' keyset indexes (idx_members_list, idx_invitations_pending_list,
// idx_invitations_pending_email_list) serve their order directly: a page is
// read from the index, never sorted, whatever the size of the list. The
// partial ones match the queries' literal status = 'pending'. They are made
// by the migrations (migrations/*/00001_baseline.sql); the cursor key by
// Migrate (ensureCursorKey).

// CursorKey returns the key that signs list cursors, the same on every
// replica sharing the database (made once by Migrate).
func (s *Store) CursorKey(ctx context.Context) ([]byte, error) {
	var row secret
	err := s.read.WithContext(ctx).Where("name = ?", cursorKeyName).Take(&row).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return nil, errors.New("the list cursor key is missing: run `controlplane migrate`")
	}
	return row.Value, err
}
