package server

import (
	"net/http"
	"strconv"

	"github.com/labstack/echo/v4"

	"github.com/membership-api/controlplane/auth"
)

// Where the issuer's keys and metadata are served, at the host's root like
// DocsPath (RFC 8414 §3: /.well-known/oauth-authorization-server for an
// issuer identifier without a path).
const (
	JWKSPath     = "/.well-known/jwks.json"
	MetadataPath = "/.well-known/oauth-authorization-server"
)

// oauthServer is what the token endpoint and the well-known documents need.
type oauthServer struct {
	issuer *auth.Issuer
	scopes auth.ScopePolicy
}

// serveWellKnown registers the JWKS and the RFC 8414 metadata. They are
// outside APIBasePath, so outside the spec's validation, like the docs.
func (o *oauthServer) serveWellKnown(e *echo.Echo) {
	maxAge := "public, max-age=" + strconv.Itoa(int(auth.JWKSMaxAge.Seconds()))
	e.GET(JWKSPath, func(c echo.Context) error {
		raw, err := o.issuer.JWKS(c.Request().Context())
		if err != nil {
			return err
		}
		c.Response().Header().Set(echo.HeaderCacheControl, maxAge)
		return c.JSONBlob(http.StatusOK, raw)
	})
	base := o.issuer.Config().PublicURL
	metadata := map[string]any{
		"issuer":                                base,
		"token_endpoint":                        base + APIBasePath + "/oauth/token",
		"jwks_uri":                              base + JWKSPath,
		"grant_types_supported":                 []string{grantClientCredentials},
		"token_endpoint_auth_methods_supported": []string{"client_secret_basic", "client_secret_post"},
		"scopes_supported":                      o.scopes.All(),
		// No authorization endpoint: no response type (RFC 8414 requires
		// the member).
		"response_types_supported": []string{},
		"service_documentation":    base + DocsPath,
	}
	e.GET(MetadataPath, func(c echo.Context) error {
		c.Response().Header().Set(echo.HeaderCacheControl, maxAge)
		return c.JSON(http.StatusOK, metadata)
	})
}
