package server

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/membership-api/controlplane/store"
)

// A list cursor is the position of the last entry of a page, signed:
//
//	base64url( version | kind | created_at (µs since 1970) | id | HMAC-SHA256[:16] )
//
// The MAC also covers which list it pages and for whom (the workspace and
// caller, or the invitee), which the cursor does not carry: a cursor used on
// another list, in another workspace or by another caller fails the check
// like an altered one, and the answer is a 400 rather than a page of some
// other list's positions. The key is kept in the database (store.CursorKey),
// so a cursor made by one replica is good on every other, with nothing to
// configure. The position is not secret (the caller has seen those
// entries); the MAC makes it tamper-evident, not confidential.
const (
	cursorVersion = 1
	cursorMACSize = 16 // 128 bits: forging one needs 2^128 guesses
	cursorSize    = 1 + 1 + 8 + 8 + cursorMACSize
)

// Lists a cursor can page; part of the MAC's input.
const (
	listUsers       = "users"
	listInvitations = "profile/invitations"
)

var errBadCursor = newError(http.StatusBadRequest, KindInvalidCursor,
	"invalid cursor: it was made for another list, workspace or caller, or was altered; use the one in the previous page's Link header, or start again without cursor")

func cursorMAC(key []byte, list, scope string, payload []byte) []byte {
	m := hmac.New(sha256.New, key)
	_, _ = fmt.Fprintf(m, "%s\x00%s\x00", list, scope) // a hash.Hash's Write never returns an error
	m.Write(payload)
	return m.Sum(nil)[:cursorMACSize]
}

func encodeCursor(key []byte, list, scope string, pos store.ListPosition) string {
	b := make([]byte, 0, cursorSize)
	b = append(b, cursorVersion, byte(pos.Kind))                            //nolint:gosec // G115: a store.Kind… constant, a small number
	b = binary.BigEndian.AppendUint64(b, uint64(pos.CreatedAt.UnixMicro())) //nolint:gosec // G115: the bits, read back by decodeCursor
	b = binary.BigEndian.AppendUint64(b, uint64(pos.ID))                    //nolint:gosec // G115: the bits, read back by decodeCursor
	b = append(b, cursorMAC(key, list, scope, b)...)
	return base64.RawURLEncoding.EncodeToString(b)
}

func decodeCursor(key []byte, list, scope, cursor string) (store.ListPosition, error) {
	b, err := base64.RawURLEncoding.Strict().DecodeString(cursor)
	if err != nil || len(b) != cursorSize || b[0] != cursorVersion {
		return store.ListPosition{}, errBadCursor
	}
	payload, mac := b[:cursorSize-cursorMACSize], b[cursorSize-cursorMACSize:]
	if !hmac.Equal(mac, cursorMAC(key, list, scope, payload)) {
		return store.ListPosition{}, errBadCursor
	}
	return store.ListPosition{
		Kind:      int(payload[1]),
		CreatedAt: time.UnixMicro(int64(binary.BigEndian.Uint64(payload[2:10]))).UTC(), //nolint:gosec // G115: the bits encodeCursor wrote (MAC-checked above)
		ID:        int64(binary.BigEndian.Uint64(payload[10:18])),                      //nolint:gosec // G115: the bits encodeCursor wrote (MAC-checked above)
	}, nil
}

// paging is what a list request asked for: a limit (0: everything) and where
// to start, with what it takes to sign the next page's cursor.
type paging struct {
	key   []byte
	list  string
	scope string
	limit int
	after *store.ListPosition
}

// newPaging checks limit and cursor (the validator already bounded limit to
// 1..1000). A cursor without limit continues to the end of the list.
func (s *Server) newPaging(_ context.Context, list, scope string, limit *int, cursor *string) (paging, error) {
	p := paging{list: list, scope: scope}
	if limit != nil {
		p.limit = *limit
	}
	if limit == nil && cursor == nil {
		return p, nil // the whole list, as upstream: no key needed
	}
	p.key = s.cursorKey
	if cursor != nil {
		pos, err := decodeCursor(p.key, list, scope, *cursor)
		if err != nil {
			return paging{}, err
		}
		p.after = &pos
	}
	return p, nil
}

// nextLink is the RFC 8288 Link header value announcing the page after next.
func (p paging) nextLink(next store.ListPosition) string {
	return fmt.Sprintf("<%s/%s?limit=%d&cursor=%s>; rel=\"next\"",
		APIBasePath, p.list, p.limit, url.QueryEscape(encodeCursor(p.key, p.list, p.scope, next)))
}
