package server

import (
	"context"
	"net/http"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/labstack/echo/v4"
)

// serveWeb adds what browsers and tooling need around the API: the contract
// (ContractYAMLPath, ContractJSONPath), the docs page (DocsPath), CORS for
// the configured origins, and HEAD on every GET route. Called last in New,
// once every route exists.
func serveWeb(ctx context.Context, e *echo.Echo, cfg Config, doc *openapi3.T) error {
	c, err := newContract()
	if err != nil {
		return err
	}
	d, err := newDocs(ctx)
	if err != nil {
		return err
	}
	e.Any(ContractYAMLPath, fixedMethods(c.yaml.handler))
	e.Any(ContractJSONPath, fixedMethods(c.json.handler))
	e.GET(DocsPath, d.handler)
	e.GET(DocsPath+"/*", d.handler)
	if len(cfg.CORSAllowedOrigins) > 0 {
		e.Use(cors(cfg.CORSAllowedOrigins, doc))
	}
	answerHEAD(e)
	return nil
}

// fixedMethods serves a GET-only document at a path under APIBasePath. It
// takes every method because the /v0 catch-all would otherwise take the
// others there, and the validator, knowing no such operation, would say 404
// where 405 with Allow is true.
func fixedMethods(get echo.HandlerFunc) echo.HandlerFunc {
	const allow = "GET, HEAD, OPTIONS"
	return func(c echo.Context) error {
		switch c.Request().Method {
		case http.MethodGet, http.MethodHead:
			return get(c)
		case http.MethodOptions:
			c.Response().Header().Set(echo.HeaderAllow, allow)
			return c.NoContent(http.StatusNoContent)
		}
		c.Response().Header().Set(echo.HeaderAllow, allow)
		return echo.ErrMethodNotAllowed
	}
}

// answerHEAD routes HEAD to the GET handler of every GET route that has no
// HEAD of its own (Echo routes HEAD only where it is registered). The GET
// handler runs with the request still a HEAD, so access logs and metrics
// say HEAD, the validator applies GET's security (a HEAD without a token
// is a 401, like the GET), and net/http sends no body.
func answerHEAD(e *echo.Echo) {
	has := map[string]bool{}
	for _, r := range e.Routes() {
		if r.Method == http.MethodHead {
			has[r.Path] = true
		}
	}
	for _, r := range e.Routes() {
		if r.Method != http.MethodGet || has[r.Path] {
			continue
		}
		has[r.Path] = true
		e.HEAD(r.Path, func(c echo.Context) error {
			// The GET route's handler carries its group's middlewares
			// (rate limits, validator) as registered.
			e.Router().Find(http.MethodGet, echo.GetPath(c.Request()), c)
			return c.Handler()(c)
		})
	}
}
