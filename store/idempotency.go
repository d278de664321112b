package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"
)

// IdempotencyRecord is one Idempotency-Key (draft-ietf-httpapi-idempotency-key-header)
// a caller used in a workspace: the fingerprint of the first request that
// carried it and, once that request is over, its answer. The unique index
// on (workspace, caller, key) decides which of several concurrent requests
// with one key runs: the one whose insert lands.
type IdempotencyRecord struct {
	ID          int64  `gorm:"primaryKey"`
	Workspace   string `gorm:"not null;uniqueIndex:idx_idempotency_scope,priority:1"` // name, as the request named it
	Caller      string `gorm:"not null;uniqueIndex:idx_idempotency_scope,priority:2"` // the principal's sub
	Key         string `gorm:"column:idem_key;not null;uniqueIndex:idx_idempotency_scope,priority:3"`
	RequestHash []byte `gorm:"not null"` // SHA-256 of the operation and its body
	// Status is the first answer's HTTP status; 0 while that request runs.
	Status int    `gorm:"not null;default:0"`
	Body   []byte // the first answer's body (JSON)
	// LockedUntil bounds a running request's hold on the key: past it the
	// request is presumed lost (a crashed replica) and the key is free.
	LockedUntil time.Time `gorm:"not null"`
	ExpiresAt   time.Time `gorm:"not null;index:idx_idempotency_expiry"` // swept after
	CreatedAt   time.Time `gorm:"not null"`
}

// TableName is "idempotency_keys".
func (IdempotencyRecord) TableName() string { return "idempotency_keys" }

// IdempotencyScope is where a key is unique: one caller in one workspace.
type IdempotencyScope struct {
	Workspace, Caller, Key string
}

// IdempotencyOutcome is what BeginIdempotent decided.
type IdempotencyOutcome int

// The outcomes of BeginIdempotent.
const (
	// IdempotencyClaimed: this request runs; end it with FinishIdempotent
	// or ReleaseIdempotent.
	IdempotencyClaimed IdempotencyOutcome = iota
	// IdempotencyReplay: the key's first request is over; answer its answer.
	IdempotencyReplay
	// IdempotencyInUse: the key's first request is still running.
	IdempotencyInUse
	// IdempotencyMismatch: the key was used for a different request.
	IdempotencyMismatch
)

// IdempotencyClaim is BeginIdempotent's answer.
type IdempotencyClaim struct {
	Outcome IdempotencyOutcome
	// Status and Body are the answer to replay (IdempotencyReplay).
	Status int
	Body   []byte
	id     int64 // the claimed row (IdempotencyClaimed)
}

// idempotencyLease is how long a running request holds its key before it
// is presumed lost. Writes are bounded well below it (defaultWriteTimeout), and a
// bulk invite of 1,000 rows takes well under a second.
const idempotencyLease = time.Minute

// BeginIdempotent claims scope's key for a request whose fingerprint is
// hash, keeping it for ttl. An expired key, or one whose request's lease
// ran out, is taken over as if new.
func (s *Store) BeginIdempotent(ctx context.Context, scope IdempotencyScope, hash []byte, ttl time.Duration) (IdempotencyClaim, error) {
	if !storable(scope.Workspace) || !storable(scope.Caller) || !storable(scope.Key) {
		return IdempotencyClaim{}, codedf(ErrInvalid, CodeInvalidRequest, "the Idempotency-Key must be valid UTF-8 without NUL")
	}
	var claim IdempotencyClaim
	err := s.inTx(ctx, func(tx *gorm.DB) error {
		now := s.now()
		rec := IdempotencyRecord{Workspace: scope.Workspace, Caller: scope.Caller, Key: scope.Key, RequestHash: hash,
			LockedUntil: now.Add(idempotencyLease), ExpiresAt: now.Add(ttl), CreatedAt: now}
		// ON CONFLICT DO NOTHING: a unique violation would abort the
		// PostgreSQL transaction, and on a conflict with a transaction not
		// yet committed PostgreSQL waits for it, then sees its row.
		res := tx.Clauses(clause.OnConflict{DoNothing: true}).Create(&rec)
		if res.Error != nil {
			return fmt.Errorf("claim idempotency key: %w", res.Error)
		}
		if res.RowsAffected == 1 {
			claim = IdempotencyClaim{Outcome: IdempotencyClaimed, id: rec.ID}
			return nil
		}
		// Locked (PostgreSQL; SQLite's single writer serialises anyway):
		// two requests taking over the same stale key cannot both win.
		var old IdempotencyRecord
		if err := tx.Clauses(clause.Locking{Strength: "UPDATE"}).
			Where("workspace = ? AND caller = ? AND idem_key = ?", scope.Workspace, scope.Caller, scope.Key).Take(&old).Error; err != nil {
			if errors.Is(err, gorm.ErrRecordNotFound) {
				// Released between the insert and this read (its request
				// failed): busy a moment ago, free now; a retry claims it.
				claim = IdempotencyClaim{Outcome: IdempotencyInUse}
				return nil
			}
			return fmt.Errorf("read idempotency key: %w", err)
		}
		if !old.ExpiresAt.After(now) || (old.Status == 0 && !old.LockedUntil.After(now)) {
			err := tx.Model(&IdempotencyRecord{}).Where("id = ?", old.ID).
				Updates(map[string]any{"request_hash": hash, "status": 0, "body": nil, "locked_until": rec.LockedUntil, "expires_at": rec.ExpiresAt, "created_at": now}).Error
			if err != nil {
				return fmt.Errorf("take over idempotency key: %w", err)
			}
			claim = IdempotencyClaim{Outcome: IdempotencyClaimed, id: old.ID}
			return nil
		}
		switch {
		case !bytes.Equal(old.RequestHash, hash):
			claim = IdempotencyClaim{Outcome: IdempotencyMismatch}
		case old.Status == 0:
			claim = IdempotencyClaim{Outcome: IdempotencyInUse}
		default:
			claim = IdempotencyClaim{Outcome: IdempotencyReplay, Status: old.Status, Body: old.Body}
		}
		return nil
	})
	return claim, err
}

// FinishIdempotent records the answer of a claimed request, for replays.
func (s *Store) FinishIdempotent(ctx context.Context, claim IdempotencyClaim, status int, body []byte) error {
	if claim.Outcome != IdempotencyClaimed || status == 0 {
		return errors.New("finish idempotency key: not a claimed request, or no status")
	}
	return s.inTx(ctx, func(tx *gorm.DB) error {
		err := tx.Model(&IdempotencyRecord{}).Where("id = ? AND status = 0", claim.id).
			Updates(map[string]any{"status": status, "body": body}).Error
		if err != nil {
			return fmt.Errorf("record idempotent answer: %w", err)
		}
		return nil
	})
}

// ReleaseIdempotent frees the key of a claimed request whose answer is not
// to be replayed (a server failure, a rate limit): a retry runs again.
func (s *Store) ReleaseIdempotent(ctx context.Context, claim IdempotencyClaim) error {
	if claim.Outcome != IdempotencyClaimed {
		return nil
	}
	return s.inTx(ctx, func(tx *gorm.DB) error {
		if err := tx.Where("id = ? AND status = 0", claim.id).Delete(&IdempotencyRecord{}).Error; err != nil {
			return fmt.Errorf("release idempotency key: %w", err)
		}
		return nil
	})
}

// sweepBatch bounds one sweep statement, so that a large backlog never
// holds the SQLite writer (or PostgreSQL locks) for long.
const sweepBatch = 1000

// SweepIdempotencyKeys deletes expired keys, in batches, and returns how
// many. Replicas may sweep at once: each row goes once.
func (s *Store) SweepIdempotencyKeys(ctx context.Context) (int64, error) {
	var total int64
	for {
		var n int64
		err := s.inTx(ctx, func(tx *gorm.DB) error {
			res := tx.Where("id IN (?)", tx.Model(&IdempotencyRecord{}).Select("id").Where("expires_at <= ?", s.now()).Limit(sweepBatch)).
				Delete(&IdempotencyRecord{})
			n = res.RowsAffected
			return res.Error
		})
		if err != nil {
			return total, fmt.Errorf("sweep idempotency keys: %w", err)
		}
		total += n
		if n < sweepBatch || ctx.Err() != nil {
			return total, nil
		}
	}
}
