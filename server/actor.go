package server

import (
	"github.com/labstack/echo/v4"

	"github.com/membership-api/controlplane/auth"
	"github.com/membership-api/controlplane/gen"
	"github.com/membership-api/controlplane/store"
)

// withActor is the strict handlers' middleware that tells the store who
// acts (store.WithActor), so every audit event a request's writes append
// records its caller and request ID, with no handler code.
func withActor(f gen.StrictHandlerFunc, _ string) gen.StrictHandlerFunc {
	return func(c echo.Context, request any) (any, error) {
		ctx := c.Request().Context()
		if p := PrincipalFrom(ctx); p != nil {
			c.SetRequest(c.Request().WithContext(store.WithActor(ctx, actorOf(p, RequestIDFrom(ctx)))))
		}
		return f(c, request)
	}
}

// actorOf is the audit actor of an authenticated principal.
func actorOf(p *auth.Principal, requestID string) store.Actor {
	kind := store.ActorUser
	switch {
	case p.ServiceAccount: // by its token or one of its keys
		kind = store.ActorServiceAccount
	case p.APIKey != nil:
		kind = store.ActorAPIKey
	}
	return store.Actor{Kind: kind, Sub: p.Sub, RequestID: requestID}
}
