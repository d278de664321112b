package server

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"
)

// corsAllowHeaders are the request headers the spec and Blaxel's SDKs use,
// which a browser must be allowed to send cross-origin (Content-Type too:
// application/json is not one of the CORS-safelisted types).
var corsAllowHeaders = []string{
	echo.HeaderAuthorization, "X-Blaxel-Authorization", WorkspaceHeader,
	echo.HeaderContentType, echo.HeaderXRequestID, "Idempotency-Key", "Blaxel-Version",
}

// corsExposeHeaders are the response headers a page may read: request IDs
// for support, the rate-limit fields for backing off, Link for paging,
// WWW-Authenticate for what a 401 means and Idempotency-Replayed for a
// replayed answer (none is CORS-safelisted).
var corsExposeHeaders = []string{
	echo.HeaderXRequestID, echo.HeaderRetryAfter, "RateLimit", "RateLimit-Policy",
	"Link", echo.HeaderWWWAuthenticate, IdempotencyReplayedHeader,
}

// corsMaxAge is how long a browser may reuse a preflight answer, in
// seconds: ten minutes bounds how long a removed origin keeps working.
const corsMaxAge = 600

// ParseOrigins reads --cors-allowed-origins: comma-separated origins
// (scheme://host[:port], as a browser sends them in Origin) or "*" for
// any. Credentials are headers, never cookies, so "*" lets pages anywhere
// call the API only with a token their user gave them.
func ParseOrigins(list string) ([]string, error) {
	var origins []string
	for _, s := range strings.Split(list, ",") {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		if s != "*" {
			u, err := url.Parse(s)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || strings.ContainsAny(u.Host, "*?") ||
				u.User != nil || u.RawQuery != "" || u.Fragment != "" || (u.Path != "" && u.Path != "/") {
				return nil, fmt.Errorf("--cors-allowed-origins: %q is not an origin such as https://app.example.com", s)
			}
			// Origin headers are lower-case scheme and host, no trailing slash.
			s = strings.ToLower(u.Scheme + "://" + u.Host)
		}
		if !slices.Contains(origins, s) {
			origins = append(origins, s)
		}
	}
	return origins, nil
}

// cors answers preflights from the allowed origins and marks other answers
// to them readable. Plain OPTIONS requests (no Origin or no
// Access-Control-Request-Method) are left to the routes, which answer 204
// with Allow whether or not CORS is on. It runs before the rate limits and
// the validator: a preflight carries no credentials and costs nothing to
// anyone's quota.
func cors(origins []string, doc *openapi3.T) echo.MiddlewareFunc {
	return middleware.CORSWithConfig(middleware.CORSConfig{
		Skipper: func(c echo.Context) bool {
			r := c.Request()
			return r.Method == http.MethodOptions &&
				(r.Header.Get(echo.HeaderOrigin) == "" || r.Header.Get(echo.HeaderAccessControlRequestMethod) == "")
		},
		// Exact matches only: Echo's patterns would read a "*" or "?"
		// inside an origin as a wildcard (ParseOrigins allows neither).
		AllowOriginFunc: func(origin string) (bool, error) {
			return slices.Contains(origins, "*") || slices.Contains(origins, origin), nil
		},
		AllowMethods:  specMethods(doc),
		AllowHeaders:  corsAllowHeaders,
		ExposeHeaders: corsExposeHeaders,
		MaxAge:        corsMaxAge,
	})
}

// specMethods are the methods the YAML's operations use, plus HEAD with GET.
func specMethods(doc *openapi3.T) []string {
	var methods []string
	for _, item := range doc.Paths.Map() {
		for m := range item.Operations() {
			if !slices.Contains(methods, m) {
				methods = append(methods, m)
			}
		}
	}
	if slices.Contains(methods, http.MethodGet) && !slices.Contains(methods, http.MethodHead) {
		methods = append(methods, http.MethodHead)
	}
	slices.Sort(methods)
	return methods
}
