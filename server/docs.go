package server

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"io/fs"
	"net/http"
	"regexp"
	"strings"

	"github.com/labstack/echo/v4"
	"github.com/swaggest/swgui"
	"github.com/swaggest/swgui/v5/static"
	"github.com/swaggest/swgui/v5emb"
)

// DocsPath is where the docs page is served: Swagger UI rendering the served
// contract (ContractYAMLPath), with "try it" against this server.
const DocsPath = "/docs"

// docs serves Swagger UI from assets embedded in the binary (swgui's v5emb:
// nothing is fetched from a CDN, so the page works offline and an
// air-gapped deployment shows it too).
type docs struct {
	assets http.Handler
	// files are the assets' names: anything else under DocsPath is the
	// API's JSON 404, not the file server's plain-text one.
	files map[string]bool
	index []byte
	// csp allows the page's own scripts and styles only: the assets by
	// origin, the page's inline ones by hash (computed from the page as
	// rendered, so it follows swgui's template when the module is updated).
	csp string
}

func newDocs(ctx context.Context) (*docs, error) {
	cfg := swgui.Config{
		Title:       "Blaxel Control Plane",
		SwaggerJSON: ContractYAMLPath, // the YAML keeps the authors' order of operations
		BasePath:    DocsPath + "/",
		SettingsUI: map[string]string{
			// Tokens typed into "Authorize" stay in the page's memory,
			// not in localStorage where any script of the origin could read them later.
			"persistAuthorization": "false",
			// Durations make a slow answer visible while trying things out.
			"displayRequestDuration": "true",
		},
	}
	assets := v5emb.NewHandlerWithConfig(cfg)
	entries, err := fs.ReadDir(static.FS, ".")
	if err != nil {
		return nil, fmt.Errorf("docs assets: %w", err)
	}
	files := make(map[string]bool, len(entries))
	for _, e := range entries {
		// Stored gzipped; served by their plain names (statigz
		// decompresses for a client that does not accept gzip).
		files[DocsPath+"/"+strings.TrimSuffix(e.Name(), ".gz")] = true
	}
	// The page is the same for every request (no per-request values in the
	// config), so render it once and hash what it inlines.
	rec := &pageRecorder{header: http.Header{}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, DocsPath+"/", nil)
	if err != nil {
		return nil, err
	}
	assets.ServeHTTP(rec, req)
	if rec.status != 0 && rec.status != http.StatusOK {
		return nil, fmt.Errorf("docs page: swgui answered %d", rec.status)
	}
	index := rec.body.Bytes()
	scripts := inlineHashes(index, inlineScript)
	if len(scripts) == 0 {
		return nil, fmt.Errorf("docs page: no inline script found in swgui's page (its template changed?)")
	}
	styles := inlineHashes(index, inlineStyle)
	csp := strings.Join([]string{
		"default-src 'none'",
		"script-src 'self' " + strings.Join(scripts, " "),
		"style-src 'self' " + strings.Join(styles, " "),
		"img-src 'self' data:", // Swagger UI draws its icons as data: SVGs
		"connect-src 'self'",   // the contract and "try it" requests: this server only
		"base-uri 'none'",
		"form-action 'none'",
		"frame-ancestors 'none'", // no clickjacking of an "Execute" button
	}, "; ")
	return &docs{assets: assets, files: files, index: index, csp: csp}, nil
}

var (
	inlineScript = regexp.MustCompile(`(?s)<script>(.*?)</script>`)
	inlineStyle  = regexp.MustCompile(`(?s)<style>(.*?)</style>`)
)

// inlineHashes returns the CSP source expressions ('sha256-…') of the
// contents of re's first group in page.
func inlineHashes(page []byte, re *regexp.Regexp) []string {
	var out []string
	for _, m := range re.FindAllSubmatch(page, -1) {
		sum := sha256.Sum256(m[1])
		out = append(out, "'sha256-"+base64.StdEncoding.EncodeToString(sum[:])+"'")
	}
	return out
}

// handler serves the page at DocsPath (with or without the trailing slash)
// and its assets below it.
func (d *docs) handler(c echo.Context) error {
	h := c.Response().Header()
	h.Set("Content-Security-Policy", d.csp)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	path := strings.TrimSuffix(c.Request().URL.Path, "/")
	if path == DocsPath {
		// Revalidated on every visit: the page names the assets, which
		// change with the binary.
		h.Set("Cache-Control", "no-cache")
		return c.HTMLBlob(http.StatusOK, d.index)
	}
	if !d.files[c.Request().URL.Path] {
		return echo.ErrNotFound
	}
	d.assets.ServeHTTP(c.Response(), c.Request())
	return nil
}

// pageRecorder captures the docs page as swgui renders it.
type pageRecorder struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (r *pageRecorder) Header() http.Header         { return r.header }
func (r *pageRecorder) Write(b []byte) (int, error) { return r.body.Write(b) }
func (r *pageRecorder) WriteHeader(status int)      { r.status = status }
