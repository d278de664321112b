package server

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/membership-api/controlplane/store"
)

// A list whose reading fails after its first entries went out cannot turn
// into an error answer any more (the 200 is sent): the connection is cut
// so that the client sees a broken body, never a shorter list that parses,
// and the failure is logged. One that fails before its first entry is an
// ordinary error, for Echo's error handler to answer.
func TestListResponse_FailureMidStream(t *testing.T) {
	dbGone := errors.New("database connection lost")
	var logs bytes.Buffer
	for _, tc := range []struct {
		name    string
		entries int
	}{{"after 2,000 entries (headers and some entries flushed)", 2000}, {"after 2 entries (still buffered)", 2}, {"before any entry", 0}} {
		t.Run(tc.name, func(t *testing.T) {
			logs.Reset()
			var returned error
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				l := listResponse{ctx: r.Context(), log: slog.New(slog.NewTextHandler(&logs, nil)),
					each: func(add func(any) error) (*store.ListPosition, error) {
						for i := range tc.entries {
							if err := add(map[string]int{"n": i}); err != nil {
								return nil, err
							}
						}
						return nil, dbGone
					}}
				returned = l.write(w)
				if returned != nil {
					http.Error(w, "error answer", http.StatusInternalServerError)
				}
			}))
			defer srv.Close()
			req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, srv.URL, nil)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := http.DefaultClient.Do(req)
			if tc.entries == 2 {
				// Nothing left the server's buffer: the client gets no
				// answer at all, which is as broken as it should be.
				if err == nil {
					resp.Body.Close()
					t.Errorf("got %d, want the connection closed without an answer", resp.StatusCode)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, readErr := io.ReadAll(resp.Body)
			if tc.entries == 0 {
				if !errors.Is(returned, dbGone) || resp.StatusCode != http.StatusInternalServerError || readErr != nil {
					t.Errorf("got %d %q (read error %v, write returned %v), want the error returned for an error answer", resp.StatusCode, body, readErr, returned)
				}
				return
			}
			if resp.StatusCode != http.StatusOK || !errors.Is(readErr, io.ErrUnexpectedEOF) {
				t.Errorf("got %d %q, read error %v; want 200 and a body cut short (unexpected EOF)", resp.StatusCode, body, readErr)
			}
			if !strings.HasPrefix(string(body), `[{"n":0},{"n":1}`) || strings.HasSuffix(string(body), "]\n") {
				t.Errorf("body %q: want the entries sent so far and no closing bracket", body)
			}
			if !strings.Contains(logs.String(), "connection aborted") || !strings.Contains(logs.String(), dbGone.Error()) {
				t.Errorf("log %q: want the failure logged", logs.String())
			}
		})
	}
}

// Cursors: what encodeCursor makes, decodeCursor reads back, for the same
// list and scope only.
func TestCursor_RoundTripAndScope(t *testing.T) {
	key := bytes.Repeat([]byte{7}, 32)
	pos := store.ListPosition{Kind: store.KindInvitation, ID: 1 << 40}
	pos.CreatedAt = pos.CreatedAt.AddDate(2026, 0, 0).UTC()
	c := encodeCursor(key, listUsers, "1\x00alice", pos)
	got, err := decodeCursor(key, listUsers, "1\x00alice", c)
	if err != nil || got.Kind != pos.Kind || got.ID != pos.ID || !got.CreatedAt.Equal(pos.CreatedAt) {
		t.Errorf("round trip: got %+v, %v; want %+v", got, err, pos)
	}
	for name, try := range map[string]func() error{
		"other scope": func() error { _, err := decodeCursor(key, listUsers, "2\x00alice", c); return err },
		"other list":  func() error { _, err := decodeCursor(key, listInvitations, "1\x00alice", c); return err },
		"other key": func() error {
			_, err := decodeCursor(bytes.Repeat([]byte{8}, 32), listUsers, "1\x00alice", c)
			return err
		},
		"padded": func() error { _, err := decodeCursor(key, listUsers, "1\x00alice", c+"="); return err },
	} {
		if err := try(); err != errBadCursor { //nolint:errorlint // the one refusal itself, as is: identity is the point
			t.Errorf("%s: got %v, want errBadCursor", name, err)
		}
	}
}
