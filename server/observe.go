package server

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"regexp"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/labstack/echo/v4"

	"github.com/membership-api/controlplane/metrics"
)

// HeaderRequestID carries a request's ID, from the client (kept when it is
// 1 to maxRequestIDLength printable ASCII characters) or generated, on every
// answer; it is also on every log line of the request and in error bodies.
const HeaderRequestID = "X-Request-Id"

// maxRequestIDLength bounds a client's request ID (the spec's Error.request_id).
const maxRequestIDLength = 128

// UnmatchedOperation is the operation label of requests that match no
// route: a bounded label whatever path a client (or a scanner) sends.
const UnmatchedOperation = "unmatched"

// operation is what the access log and metrics know of an operation of the
// spec: made once per operation, so a request only looks it up.
type operation struct {
	id     string // the spec's operationId
	method string // the spec's method
	route  string // the spec path under APIBasePath, e.g. /v0/users/{subOrEmail}
	series *metrics.RequestSeries
}

type routeKey struct{ method, path string }

// observer writes the access log line and records the request metrics of
// every request, and gives each its request ID.
type observer struct {
	access  *slog.Logger // the access log line (request_id is added by hand)
	metrics *metrics.Metrics
	// ops are the spec's operations by method and Echo route path
	// (/v0/users/:subOrEmail); specPaths their Echo paths.
	ops       map[routeKey]*operation
	specPaths map[string]bool
}

// pathParam matches a path template parameter of the spec, {name}, which
// Echo writes :name.
var pathParam = regexp.MustCompile(`\{([^}]+)\}`)

func newObserver(doc *openapi3.T, access *slog.Logger, m *metrics.Metrics) *observer {
	o := &observer{access: access, metrics: m, ops: map[routeKey]*operation{}, specPaths: map[string]bool{}}
	for path, item := range doc.Paths.Map() {
		echoPath := APIBasePath + pathParam.ReplaceAllString(path, ":$1")
		o.specPaths[echoPath] = true
		for method, op := range item.Operations() {
			info := &operation{id: op.OperationID, method: method, route: APIBasePath + path}
			if m != nil {
				info.series = m.Requests(op.OperationID, method)
			}
			o.ops[routeKey{method, echoPath}] = info
		}
	}
	return o
}

// middleware is the outermost middleware: it sets the request ID, lets
// the rest answer (rendering an error through the error handler here, so
// the status is final), then logs and counts the request.
func (o *observer) middleware(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		start := time.Now()
		req := c.Request()
		// The validator and the authenticator fill in this state; the
		// request carries it from here so that every log line and error
		// body of the request can name its ID.
		state := &requestState{}
		if ids := req.Header[HeaderRequestID]; len(ids) == 1 && validRequestID(ids[0]) {
			state.id = ids[0]
		} else {
			state.id = newRequestID()
		}
		state.idHeader[0] = state.id
		c.Response().Header()[HeaderRequestID] = state.idHeader[:]
		c.SetRequest(req.WithContext(context.WithValue(req.Context(), requestStateKey{}, state)))

		defer func() {
			// A handler that aborts its connection mid-answer (a list
			// failing after its first entries: http.ErrAbortHandler, which
			// the Recover middleware passes on) still gets its access line
			// and its count; net/http then closes the connection.
			if p := recover(); p != nil {
				o.done(c, state, time.Since(start))
				panic(p)
			}
		}()
		err := next(c)
		if err != nil {
			o.count(err)
			c.Error(err)
		}
		o.done(c, state, time.Since(start))
		return nil
	}
}

// count records what an error says about the request: an authentication
// failure (and why) or a rate limit reached.
func (o *observer) count(err error) {
	if o.metrics == nil {
		return
	}
	var apiErr *APIError
	if !errors.As(err, &apiErr) {
		return
	}
	if apiErr.authReason != "" {
		o.metrics.AuthFailure(apiErr.authReason)
	}
	if apiErr.quota != "" {
		o.metrics.RateLimited(apiErr.quota)
	}
}

// done writes the access log line and records the request's metrics.
func (o *observer) done(c echo.Context, state *requestState, latency time.Duration) {
	req, res := c.Request(), c.Response()
	op := o.operation(req.Method, c.Path())
	if o.metrics != nil {
		series := op.series
		if series == nil || req.Method != op.method { // another route, or a HEAD answered by GET
			series = o.metrics.Requests(op.id, methodLabel(req.Method))
		}
		series.Observe(res.Status, latency)
	}
	level := slog.LevelInfo
	if op.id == "/healthz" || op.id == "/readyz" {
		level = slog.LevelDebug // probes every few seconds would drown the log
	}
	if !o.access.Enabled(req.Context(), level) {
		return
	}
	// Never a header (credentials), nor the raw path (it can hold an
	// email): the route is the spec's template.
	attrs := []slog.Attr{
		slog.String("request_id", state.id),
		slog.String("operation", op.id),
		slog.String("method", req.Method),
		slog.String("route", op.route),
		slog.Int("status", res.Status),
		slog.Duration("latency", latency),
		slog.Int64("bytes", res.Size),
		slog.String("remote", c.RealIP()),
		slog.String("user_agent", truncate(req.UserAgent(), 256)),
	}
	if p := state.principal; p != nil {
		attrs = append(attrs, slog.String("sub", p.Sub))
		if ws := callerWorkspace(req, state); ws != "" {
			attrs = append(attrs, slog.String("workspace", truncate(ws, 256)))
		}
	}
	o.access.LogAttrs(context.Background(), level, "request", attrs...)
}

// operation names the request for the log and metrics: the spec's
// operation (HEAD counts as its GET, which answers it), another route of
// the server by its path (/healthz, /docs), or UnmatchedOperation.
func (o *observer) operation(method, echoPath string) *operation {
	if op := o.ops[routeKey{method, echoPath}]; op != nil {
		return op
	}
	if method == http.MethodHead {
		if op := o.ops[routeKey{http.MethodGet, echoPath}]; op != nil {
			return op
		}
	}
	switch {
	case echoPath == "", echoPath == "/*", echoPath == APIBasePath, echoPath == APIBasePath+"/*", o.specPaths[echoPath]:
		// Echo's catch-alls, or a method the spec's path does not have.
		return &unmatched
	}
	return &operation{id: echoPath, route: echoPath}
}

var unmatched = operation{id: UnmatchedOperation, route: UnmatchedOperation}

// callerWorkspace is the workspace an authenticated request acts on: the
// header it sent, else its API key's.
func callerWorkspace(req *http.Request, state *requestState) string {
	if ws := req.Header.Get(WorkspaceHeader); ws != "" {
		return ws
	}
	if key := state.principal.APIKey; key != nil {
		return key.Workspace.Name
	}
	return ""
}

// methodLabel bounds the method label: a client can send any token as a method.
func methodLabel(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodOptions, http.MethodConnect, http.MethodTrace:
		return m
	}
	return "OTHER"
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// validRequestID accepts 1 to maxRequestIDLength printable ASCII
// characters, so a client's ID can neither split a log line nor grow it
// without bound.
func validRequestID(id string) bool {
	if id == "" || len(id) > maxRequestIDLength {
		return false
	}
	for i := 0; i < len(id); i++ {
		if id[i] < 0x20 || id[i] > 0x7e {
			return false
		}
	}
	return true
}

// newRequestID returns 128 random bits in hex: unique across replicas and
// restarts without coordination. The runtime's generator (ChaCha8, seeded
// from the OS) costs a few nanoseconds, crypto/rand a system call; the ID
// is a label, not a secret.
func newRequestID() string {
	var raw [16]byte
	for i := 0; i < 16; i += 8 {
		binary.LittleEndian.PutUint64(raw[i:], rand.Uint64()) //nolint:gosec // G404: a label, not a secret (see above)
	}
	var buf [32]byte
	hex.Encode(buf[:], raw[:])
	return string(buf[:])
}

// RequestIDFrom returns the ID of the request ctx belongs to ("" outside a request).
func RequestIDFrom(ctx context.Context) string {
	if st := stateFrom(ctx); st != nil {
		return st.id
	}
	return ""
}

// requestIDHandler adds the request's ID to every record logged with the
// request's context (log.InfoContext(ctx, …)), so each line of a request
// can be found from its access line or an error body.
type requestIDHandler struct{ slog.Handler }

func (h requestIDHandler) Handle(ctx context.Context, r slog.Record) error {
	if id := RequestIDFrom(ctx); id != "" {
		r.AddAttrs(slog.String("request_id", id))
	}
	return h.Handler.Handle(ctx, r)
}

func (h requestIDHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return requestIDHandler{h.Handler.WithAttrs(attrs)}
}

func (h requestIDHandler) WithGroup(name string) slog.Handler {
	return requestIDHandler{h.Handler.WithGroup(name)}
}
