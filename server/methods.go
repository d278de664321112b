package server

import (
	"errors"
	"net/http"
	"strings"

	"github.com/getkin/kin-openapi/routers"
	"github.com/labstack/echo/v4"
)

// probeMethods are the methods tried to find what a path of the YAML allows,
// in the order Allow lists them.
var probeMethods = []string{
	http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut,
	http.MethodPatch, http.MethodDelete, http.MethodTrace,
}

// findRoute is the router's FindRoute, except that HEAD finds the GET
// operation of its path when the YAML declares no HEAD of its own: HEAD is
// answered wherever GET is (RFC 9110 §9.3.2), as GET without the body, with
// the same security, validation and status. kin-openapi's router does not
// know that; net/http drops the body of a HEAD answer.
func (v *requestValidator) findRoute(req *http.Request) (*routers.Route, map[string]string, error) {
	route, params, err := v.router.FindRoute(req)
	if err != nil && req.Method == http.MethodHead && errors.Is(err, routers.ErrMethodNotAllowed) {
		get := *req
		get.Method = http.MethodGet
		return v.router.FindRoute(&get)
	}
	return route, params, err
}

// methodNotAllowed answers a request whose path the YAML declares but not
// its method: OPTIONS gets 204 (RFC 9110 §9.3.7: what the path allows, as
// Echo answers it on the routes outside /v0), anything else 405, both with
// Allow. Neither needs credentials: the answer is the same for everyone.
func (v *requestValidator) methodNotAllowed(c echo.Context) error {
	c.Response().Header().Set(echo.HeaderAllow, v.allowedMethods(c.Request()))
	if c.Request().Method == http.MethodOptions {
		return c.NoContent(http.StatusNoContent)
	}
	return echo.ErrMethodNotAllowed
}

// allowedMethods lists the methods the YAML declares for the request's
// path, plus HEAD where GET is and OPTIONS. Asking the router once per
// method keeps it exact (path templates, one definition of matching) and
// costs a few microseconds, on wrong-method requests only.
func (v *requestValidator) allowedMethods(req *http.Request) string {
	allowed := make([]string, 0, len(probeMethods)+1)
	probe := *req
	for _, m := range probeMethods {
		probe.Method = m
		if _, _, err := v.findRoute(&probe); err == nil {
			allowed = append(allowed, m)
		}
	}
	return strings.Join(append(allowed, http.MethodOptions), ", ")
}
