package server

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/membership-api/controlplane/auth"
	"github.com/membership-api/controlplane/gen"
	"github.com/membership-api/controlplane/store"
)

// oauthTokenOperation is the token endpoint's operationId in the YAML.
const oauthTokenOperation = "OauthToken"

// RFC 6749 §5.2 error codes: the `error` of the token endpoint's refusals.
const (
	OAuthInvalidRequest       = "invalid_request"
	OAuthInvalidClient        = "invalid_client"
	OAuthUnsupportedGrantType = "unsupported_grant_type"
	OAuthInvalidScope         = "invalid_scope"
)

// clientChallenge is the WWW-Authenticate of an invalid_client answer
// (RFC 6749 §5.2: the scheme the client is to authenticate with).
const clientChallenge = `Basic realm="controlplane"`

// grantClientCredentials is the one grant type served (RFC 6749 §4.4).
const grantClientCredentials = "client_credentials"

// oauthError is an RFC 6749 §5.2 refusal.
type oauthError struct {
	status      int
	code        string
	description string
}

// response renders the refusal as the spec's OAuthError: RFC 6749's error
// and error_description, and this server's Error fields beside them.
func (e oauthError) response(ctx context.Context) gen.OauthTokenResponseObject {
	status, desc := e.status, e.description
	body := gen.OAuthError{Code: &status, Error: e.code, ErrorDescription: &desc, Message: &desc}
	if st := stateFrom(ctx); st != nil && st.id != "" {
		body.RequestId = &st.id
	}
	if e.status == http.StatusUnauthorized {
		challenge := clientChallenge
		return gen.OauthToken401JSONResponse{Body: body, Headers: gen.OauthToken401ResponseHeaders{WWWAuthenticate: &challenge}}
	}
	return gen.OauthToken400JSONResponse(body)
}

func invalidRequest(format string, args ...any) *oauthError {
	return &oauthError{status: http.StatusBadRequest, code: OAuthInvalidRequest, description: fmt.Sprintf(format, args...)}
}

// rawRequestKey holds the token request itself in its context: the strict
// handler sees only the context, and client authentication is in the
// Authorization header, which OpenAPI 3.0 does not let a spec declare as a
// parameter.
type rawRequestKey struct{}

// keepRawRequest is the strict middleware that gives the token endpoint its
// request (rawRequestKey); other operations pass untouched.
func keepRawRequest(f gen.StrictHandlerFunc, operationID string) gen.StrictHandlerFunc {
	if operationID != oauthTokenOperation {
		return f
	}
	return func(c echo.Context, request any) (any, error) {
		r := c.Request()
		c.SetRequest(r.WithContext(context.WithValue(r.Context(), rawRequestKey{}, r)))
		return f(c, request)
	}
}

// tokenRequest is what the token endpoint reads from a request.
type tokenRequest struct {
	grantType, scope       string
	clientID, secret       string
	basic, bodyCredentials bool
}

// OauthToken is RFC 6749 §4.4's token endpoint: a service account's client
// credentials for a short-lived access token.
func (s *Server) OauthToken(ctx context.Context, request gen.OauthTokenRequestObject) (gen.OauthTokenResponseObject, error) {
	r, _ := ctx.Value(rawRequestKey{}).(*http.Request)
	if r == nil {
		return nil, errors.New("the token endpoint was called without its request (keepRawRequest)")
	}
	if oerr := refusePlainHTTP(r, s.cfg.TrustedProxies, s.cfg.OAuth.AllowPlainHTTP); oerr != nil {
		return oerr.response(ctx), nil
	}
	req, oerr := readTokenRequest(r, request)
	if oerr == nil {
		oerr = checkTokenRequest(req)
	}
	if oerr != nil {
		return oerr.response(ctx), nil
	}
	account, err := s.serviceAccounts.AuthenticateServiceAccount(ctx, req.clientID, req.secret)
	if errors.Is(err, store.ErrNotFound) {
		// Presented and refused: counts against the client address's
		// failed-authentication quota (ratelimit.go), as a wrong API key does.
		if st := stateFrom(ctx); st != nil {
			st.clientAuthFailed = true
		}
		return oauthError{http.StatusUnauthorized, OAuthInvalidClient, "client authentication failed: unknown client or wrong secret"}.response(ctx), nil
	}
	if err != nil {
		return nil, err
	}
	scopes, bad := s.oauth.scopes.Grant(account.Role, req.scope)
	if bad != "" {
		return oauthError{http.StatusBadRequest, OAuthInvalidScope,
			fmt.Sprintf("scope %q is not one a service account with role %s may hold (docs/api/service-accounts.md, Machine identities)", bad, account.Role)}.response(ctx), nil
	}
	token, _, err := s.oauth.issuer.Sign(auth.ServiceAccountToken{ClientID: account.ClientID, Workspace: account.Workspace.Name, Scopes: scopes})
	if err != nil {
		return nil, fmt.Errorf("sign access token: %w", err)
	}
	if st := stateFrom(ctx); st != nil {
		// The access log names who got a token (sub), as for any caller.
		st.principal = &auth.Principal{Sub: account.ClientID, BoundWorkspace: account.Workspace.Name, ServiceAccount: true, Scopes: scopes}
	}
	noStore, noCache := "no-store", "no-cache"
	return gen.OauthToken200JSONResponse{
		Body: gen.OAuthToken{AccessToken: token, TokenType: "Bearer", ExpiresIn: int(s.oauth.issuer.Config().TokenTTL.Seconds()), Scope: auth.JoinScopes(scopes)},
		// RFC 6749 §5.1: the answer holds a credential; nothing may cache it.
		Headers: gen.OauthToken200ResponseHeaders{CacheControl: &noStore, Pragma: &noCache},
	}, nil
}

// readTokenRequest reads the parameters from the JSON or form body and the
// client authentication from the Authorization header. A parameter sent
// empty counts as absent (RFC 6749 §3.1); one sent twice is refused.
func readTokenRequest(r *http.Request, request gen.OauthTokenRequestObject) (tokenRequest, *oauthError) {
	var req tokenRequest
	var clientID, secret string
	switch {
	case request.JSONBody != nil:
		b := request.JSONBody
		req.grantType, req.scope, clientID, secret = deref(b.GrantType), deref(b.Scope), deref(b.ClientId), deref(b.ClientSecret)
	case request.FormdataBody != nil:
		// PostForm: the body alone (credentials in the URL are refused
		// by RFC 6749 §2.3.1, and are not read).
		for name, values := range r.PostForm {
			if len(values) > 1 {
				return req, invalidRequest("parameter %q sent more than once (RFC 6749 §3.1)", name)
			}
		}
		f := r.PostForm
		req.grantType, req.scope, clientID, secret = f.Get("grant_type"), f.Get("scope"), f.Get("client_id"), f.Get("client_secret")
	default:
		return req, invalidRequest("send the parameters as a JSON or application/x-www-form-urlencoded body")
	}
	req.bodyCredentials = secret != ""
	header, err := authorizationHeader(r)
	if err != nil {
		return req, invalidRequest("%s", err.Error())
	}
	if header == "" {
		req.clientID, req.secret = clientID, secret
		return req, nil
	}
	id, sec, oerr := basicCredentials(header)
	if oerr != nil {
		return req, oerr
	}
	if req.bodyCredentials || clientID != "" && clientID != id {
		return req, invalidRequest("two client authentication methods: send the client ID and secret with HTTP Basic or in the body, not both (RFC 6749 §2.3)")
	}
	req.basic, req.clientID, req.secret = true, id, sec
	return req, nil
}

// authorizationHeader is the client's authorization: Authorization, or
// X-Blaxel-Authorization as Blaxel's SDKs name it (credentialHeaders), ""
// when neither is sent. Two different values are refused, as on every
// other operation (errTwoCredentials).
func authorizationHeader(r *http.Request) (string, error) {
	var value, key string
	for _, h := range credentialHeaders {
		for _, v := range r.Header.Values(h) {
			if v == "" {
				continue
			}
			// The same credential twice, scheme case and spacing aside, is one.
			scheme, cred, _ := strings.Cut(v, " ")
			k := strings.ToLower(scheme) + " " + strings.TrimSpace(cred)
			if value != "" && k != key {
				return "", errTwoCredentials
			}
			value, key = v, k
		}
	}
	return value, nil
}

// basicCredentials reads RFC 6749 §2.3.1 HTTP Basic client authentication:
// base64 of the form-urlencoded client ID, a colon, the form-urlencoded
// secret.
func basicCredentials(header string) (id, secret string, oerr *oauthError) {
	scheme, value, _ := strings.Cut(header, " ")
	if !strings.EqualFold(scheme, "Basic") {
		return "", "", invalidRequest("the token endpoint authenticates clients with HTTP Basic (Authorization: Basic base64(client_id:client_secret)) or client_id and client_secret in the body")
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(value))
	if err != nil {
		return "", "", invalidRequest("the Basic credentials are not base64")
	}
	rawID, rawSecret, ok := strings.Cut(string(raw), ":")
	if !ok {
		return "", "", invalidRequest("the Basic credentials must be client_id:client_secret")
	}
	if id, err = url.QueryUnescape(rawID); err == nil {
		secret, err = url.QueryUnescape(rawSecret)
	}
	if err != nil {
		return "", "", invalidRequest("the Basic credentials must be form-urlencoded (RFC 6749 §2.3.1)")
	}
	return id, secret, nil
}

// checkTokenRequest applies RFC 6749's order: the grant type, then client
// authentication (401 invalid_client when missing).
func checkTokenRequest(req tokenRequest) *oauthError {
	switch req.grantType {
	case "":
		return invalidRequest("grant_type is required: client_credentials")
	case grantClientCredentials:
	default:
		return &oauthError{http.StatusBadRequest, OAuthUnsupportedGrantType,
			fmt.Sprintf("grant_type %q is not supported: this server issues tokens for client_credentials only (no refresh tokens: ask again with the client credentials)", req.grantType)}
	}
	if req.clientID == "" || req.secret == "" {
		return &oauthError{http.StatusUnauthorized, OAuthInvalidClient,
			"client authentication required: HTTP Basic base64(client_id:client_secret), or client_id and client_secret in the body"}
	}
	return nil
}

// refusePlainHTTP is RFC 6749 §3.2: the token endpoint requires TLS, since
// the request carries the client's secret and the answer a bearer token.
// Accepted: a TLS connection; a loopback one (nothing crossed a network);
// one from a trusted proxy (--trusted-proxies) that says the client spoke
// HTTPS (X-Forwarded-Proto: https); any, when the operator said TLS ends
// before the server (AllowPlainHTTP). A trusted proxy that forwards a client
// (X-Forwarded-For) without saying its scheme is refused: it cannot be told
// from one forwarding plain HTTP.
func refusePlainHTTP(r *http.Request, trusted []*net.IPNet, allowPlain bool) *oauthError {
	if r.TLS != nil || allowPlain {
		return nil
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	peer := net.ParseIP(host)
	fromProxy := peer != nil && slices.ContainsFunc(trusted, func(n *net.IPNet) bool { return n.Contains(peer) })
	if fromProxy {
		// The proxy nearest the server appends last.
		protos := strings.Split(strings.Join(r.Header.Values("X-Forwarded-Proto"), ","), ",")
		switch proto := strings.TrimSpace(protos[len(protos)-1]); {
		case strings.EqualFold(proto, "https"):
			return nil
		case proto == "" && r.Header.Get("X-Forwarded-For") == "" && peer.IsLoopback():
			// Not forwarded: a local client of its own.
			return nil
		}
		return invalidRequest("the token endpoint requires TLS (RFC 6749 §3.2): this request came in plain HTTP through a proxy; call it with https://")
	}
	if peer != nil && peer.IsLoopback() {
		return nil
	}
	return invalidRequest("the token endpoint requires TLS (RFC 6749 §3.2): call it with https://")
}
