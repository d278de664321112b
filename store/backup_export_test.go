package store

import "context"

// WorkspaceNames returns every workspace's name, sorted (tests of backup
// and copy).
func (s *Store) WorkspaceNames(ctx context.Context) ([]string, error) {
	var names []string
	err := s.read.WithContext(ctx).Model(&Workspace{}).Order("name").Pluck("name", &names).Error
	return names, err
}
