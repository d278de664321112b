package server

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
	yaml "go.yaml.in/yaml/v3"

	"github.com/membership-api/controlplane/openapi"
)

// Where the contract is served: under APIBasePath, next to the operations it
// describes, as many APIs do (a client that knows the base URL finds it).
// They are routes of their own, not operations of the YAML (see docs/api/contract-and-browsers.md), so the request validator never sees them.
const (
	ContractYAMLPath = APIBasePath + "/openapi.yml"
	ContractJSONPath = APIBasePath + "/openapi.json"
)

// contractCacheControl lets browsers and proxies reuse the document for five
// minutes, then revalidate it with its ETag (a 304 costs a few bytes). The
// document changes only with a new binary, and during a rolling deploy
// replicas already answer with both versions for minutes; a longer max-age
// would keep docs pages on the old contract for longer than that.
const contractCacheControl = "public, max-age=300"

// contractDocument is one encoding of the contract, ready to serve.
type contractDocument struct {
	body        []byte
	contentType string
	etag        string
}

// contract holds the contract as this server serves it.
type contract struct {
	yaml, json contractDocument
}

// newContract prepares openapi/controlplane.yml for serving: its servers
// become the one relative server APIBasePath, as LoadSpec does for the
// validator, so a docs page or a client generator pointed at this server
// calls this server (upstream's absolute https://api.blaxel.ai/v0 would send
// "try it" requests there), and the OAuth2 flows' token URLs name the token
// endpoint under APIBasePath (pointTokenURLsAtAPIBase). Everything else is
// the YAML as written: the YAML keeps its order and comments; the JSON is the
// same document.
func newContract() (*contract, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(openapi.ControlPlaneYAML, &root); err != nil {
		return nil, fmt.Errorf("parse openapi/controlplane.yml: %w", err)
	}
	if root.Kind != yaml.DocumentNode || len(root.Content) != 1 || root.Content[0].Kind != yaml.MappingNode {
		return nil, fmt.Errorf("openapi/controlplane.yml: not a YAML mapping")
	}
	doc := root.Content[0]
	servers := &yaml.Node{}
	if err := servers.Encode([]map[string]string{{"url": APIBasePath, "description": "this server"}}); err != nil {
		return nil, err
	}
	setMember(doc, "servers", servers)
	if paths := member(doc, "paths"); paths != nil {
		// Path- and operation-level servers would override the document's
		// (LoadSpec drops them for the validator too).
		for i := 1; i < len(paths.Content); i += 2 {
			item := paths.Content[i]
			deleteMember(item, "servers")
			for j := 1; j < len(item.Content); j += 2 {
				deleteMember(item.Content[j], "servers")
			}
		}
	}
	pointTokenURLsAtAPIBase(doc)
	var yamlBody bytes.Buffer
	enc := yaml.NewEncoder(&yamlBody)
	enc.SetIndent(2)
	if err := enc.Encode(&root); err != nil {
		return nil, fmt.Errorf("encode served contract: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	var value any
	if err := root.Decode(&value); err != nil {
		return nil, fmt.Errorf("decode served contract: %w", err)
	}
	jsonBody, err := json.MarshalIndent(value, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("served contract as JSON: %w", err)
	}
	return &contract{
		yaml: newContractDocument(yamlBody.Bytes(), "application/yaml; charset=utf-8"), // RFC 9512
		json: newContractDocument(jsonBody, echo.MIMEApplicationJSON),
	}, nil
}

// pointTokenURLsAtAPIBase rewrites every OAuth2 flow's tokenUrl (and
// refreshUrl) that is an absolute path outside APIBasePath, such as the
// YAML's /oauth/token, to the same path under APIBasePath (/v0/oauth/token),
// where this server answers it.
//
// Why the served copy and not the YAML: the YAML keeps upstream's
// /oauth/token so the published document changes only by addition. Why
// rewrite rather than also answer /oauth/token at the root: a relative URL in
// the contract resolves against the server URL (OAS 3.0.3 "Relative
// References in URLs", RFC 3986 §5.2), and "/oauth/token" against "/v0" is
// "/oauth/token" at the host's root, which Swagger UI's Authorize dialog
// (clientCredentials) then POSTs to and gets 404; a client generator reads it
// the same way. The rewritten URL stays relative, so it resolves to this
// server whatever host or scheme the page was loaded from, behind any proxy,
// and a second route outside /v0 would be one more path to guard (rate
// limits, CORS, the validator) for no caller that needs it.
// authorizationUrl is left alone: this server has no authorization endpoint.
func pointTokenURLsAtAPIBase(doc *yaml.Node) {
	schemes := member(member(doc, "components"), "securitySchemes")
	if schemes == nil || schemes.Kind != yaml.MappingNode {
		return
	}
	for i := 1; i < len(schemes.Content); i += 2 {
		flows := member(schemes.Content[i], "flows")
		if flows == nil || flows.Kind != yaml.MappingNode {
			continue
		}
		for j := 1; j < len(flows.Content); j += 2 {
			for _, key := range []string{"tokenUrl", "refreshUrl"} {
				u := member(flows.Content[j], key)
				if u == nil || u.Kind != yaml.ScalarNode || !strings.HasPrefix(u.Value, "/") ||
					u.Value == APIBasePath || strings.HasPrefix(u.Value, APIBasePath+"/") {
					continue
				}
				u.Value = APIBasePath + u.Value
			}
		}
	}
}

func newContractDocument(body []byte, contentType string) contractDocument {
	sum := sha256.Sum256(body)
	// A strong validator: the same bytes on every replica of one build.
	etag := `"` + base64.RawURLEncoding.EncodeToString(sum[:16]) + `"`
	return contractDocument{body: body, contentType: contentType, etag: etag}
}

// handler serves the document: no credentials (the contract is public, as
// upstream's is), ETag with If-None-Match → 304, HEAD and Range, all through
// http.ServeContent.
func (d contractDocument) handler(c echo.Context) error {
	h := c.Response().Header()
	h.Set(echo.HeaderContentType, d.contentType)
	h.Set("ETag", d.etag)
	h.Set("Cache-Control", contractCacheControl)
	h.Set("X-Content-Type-Options", "nosniff")
	http.ServeContent(c.Response(), c.Request(), "", time.Time{}, bytes.NewReader(d.body))
	return nil
}

// member returns the value of key in a YAML mapping, or nil.
func member(m *yaml.Node, key string) *yaml.Node {
	if m == nil || m.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1]
		}
	}
	return nil
}

// setMember replaces the value of key in a YAML mapping, where it stands,
// or appends it.
func setMember(m *yaml.Node, key string, value *yaml.Node) {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			m.Content[i+1] = value
			return
		}
	}
	m.Content = append(m.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: key}, value)
}

// deleteMember removes key from a YAML mapping, if it is one and has it.
func deleteMember(m *yaml.Node, key string) {
	if m == nil || m.Kind != yaml.MappingNode {
		return
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			m.Content = append(m.Content[:i], m.Content[i+2:]...)
			return
		}
	}
}
