package server

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
)

// credentialHeaders carry the bearer credential: Blaxel's SDKs and CLI send
// "X-Blaxel-Authorization: Bearer <key or token>"; everything else sends
// the standard "Authorization: Bearer".
var credentialHeaders = []string{blaxelAuthorizationHeader, "Authorization"}

const blaxelAuthorizationHeader = "X-Blaxel-Authorization"

// credentialVia is the set of headers a credential came in.
type credentialVia uint8

const (
	viaBlaxelHeader  credentialVia = 1 << iota // X-Blaxel-Authorization
	viaAuthorization                           // Authorization
)

// errTwoCredentials: the request carries two different credentials. Which
// one counts would depend on who reads the request (a proxy, a log, this
// server), so neither does; it is the client's mistake, not a failed
// authentication (400, not 401).
var errTwoCredentials = errors.New("two different credentials sent (Authorization and X-Blaxel-Authorization, or one of them twice): send one")

// bearerCredential extracts the bearer credential, or "" when none is sent,
// and the headers it came in.
// The same credential in both headers is fine (some clients set both); any
// two different values are errTwoCredentials, checked before the form so that
// a second credential of another kind (Basic) is not silently ignored.
func bearerCredential(r *http.Request) (string, credentialVia, error) {
	var header, value, cred string
	var ok bool
	var via credentialVia
	for _, h := range credentialHeaders {
		for _, v := range r.Header.Values(h) {
			if v == "" {
				continue
			}
			c, isBearer := bearerToken(v)
			same := v == value || isBearer && ok && c == cred
			if header != "" && !same {
				return "", 0, errTwoCredentials
			}
			header, value, cred, ok = h, v, c, isBearer
			if h == blaxelAuthorizationHeader {
				via |= viaBlaxelHeader
			} else {
				via |= viaAuthorization
			}
		}
	}
	if header != "" && !ok {
		return "", 0, fmt.Errorf("the %s header must be \"Bearer <token or API key>\"", header)
	}
	return cred, via, nil
}

// bearerToken returns the credential of a "Bearer <credential>" header value
// (the scheme name is case-insensitive, RFC 9110 §11.1).
func bearerToken(v string) (string, bool) {
	scheme, cred, ok := strings.Cut(v, " ")
	cred = strings.TrimSpace(cred)
	return cred, ok && strings.EqualFold(scheme, "Bearer") && cred != ""
}
