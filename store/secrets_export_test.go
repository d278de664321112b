package store

import "context"

// RawSecretsForTest returns every stored private key and webhook secret as
// the database holds them, by signing key kid and endpoint id.
func (s *Store) RawSecretsForTest(ctx context.Context) (keys map[string]string, hooks map[int64]string, err error) {
	var ks []SigningKey
	if err := s.read.WithContext(ctx).Find(&ks).Error; err != nil {
		return nil, nil, err
	}
	keys = map[string]string{}
	for _, k := range ks {
		keys[k.KID] = string(k.PrivateKey)
	}
	var es []WebhookEndpoint
	if err := s.read.WithContext(ctx).Find(&es).Error; err != nil {
		return nil, nil, err
	}
	hooks = map[int64]string{}
	for _, e := range es {
		hooks[e.ID] = e.Secret
	}
	return keys, hooks, nil
}
