package store

import (
	"context"

	"gorm.io/gorm"
)

// InviteBatchForTest runs ps as one batch statement, as the batcher would,
// so tests can race batches with chosen contents.
func (s *Store) InviteBatchForTest(ctx context.Context, ps []InviteParams) error {
	jobs := make([]*inviteJob, len(ps))
	for i, p := range ps {
		p.Email = NormalizeEmail(p.Email)
		if p.Role == "" {
			p.Role = RoleMember
		}
		jobs[i] = &inviteJob{p: p}
	}
	if s.committer == nil {
		return s.runPostgresBatch(ctx, s.now(), jobs)
	}
	return s.committer.do(ctx, func(tx *gorm.DB) error { return runSQLiteBatch(ctx, tx, s.now(), jobs) })
}
