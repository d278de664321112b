package server_test

import (
	"github.com/membership-api/controlplane/auth"
	"github.com/membership-api/controlplane/server"
	"github.com/membership-api/controlplane/store"
)

// The real store implements every interface server declares for it (the
// CLI hands New a *store.Store).
var (
	_ server.Store           = (*store.Store)(nil)
	_ server.Workspaces      = (*store.Store)(nil)
	_ server.Members         = (*store.Store)(nil)
	_ server.ServiceAccounts = (*store.Store)(nil)
	_ server.Credentials     = (*store.Store)(nil)
	_ server.Webhooks        = (*store.Store)(nil)
	_ server.Audit           = (*store.Store)(nil)
	_ server.Idempotency     = (*store.Store)(nil)
	_ server.Database        = (*store.Store)(nil)
	_ auth.KeyStore          = (*store.Store)(nil)
)
