package server_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"

	"github.com/membership-api/controlplane/auth"
	"github.com/membership-api/controlplane/gen"
	"github.com/membership-api/controlplane/server"
	"github.com/membership-api/controlplane/store"
)

// Handler tests: real handlers behind the Echo instance New builds (the
// spec's validator, authentication with development tokens, routing, the
// error handler, JSON), on fakeStore in place of the database. Every answer
// is checked against the spec, as e2e does. The store's own behaviour is
// tested on real databases in store/ and e2e/; here the store's answers are
// given, and what is tested is what the handlers make of them.

// fakeStore is an in-memory stand-in for the store interfaces the handlers
// under test use (Membership, Invite, EachUser) and those New needs to start
// (the cursor key, the issuer's signing keys). Any other method is the
// embedded nil interface's: calling it panics, which the recover middleware
// answers 500, so a handler that reaches for more than the test set up fails.
type fakeStore struct {
	server.Store

	mu         sync.Mutex
	workspaces map[string]*fakeWorkspace
	keys       []store.SigningKey
	// inviteErr, when set, is Invite's answer (error-mapping tests).
	inviteErr error
	// invited records Invite's parameters.
	invited []store.InviteParams
	// listed records the position and limit EachUser was asked for.
	listed []listCall
}

type listCall struct {
	workspaceName string
	after         *store.ListPosition
	limit         int
}

// fakeWorkspace is a workspace with its users in list order: members first
// (Accepted), then pending invitations.
type fakeWorkspace struct {
	store.Workspace
	users []store.UserEntry
}

var errFakeWorkspaceNotFound = &store.Error{Kind: store.ErrNotFound, Code: store.CodeWorkspaceNotFound, Message: "workspace not found"}

func newFakeStore() *fakeStore {
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	acme := &fakeWorkspace{Workspace: store.Workspace{ID: 7, Name: "acme", DisplayName: "Acme",
		Audit: store.Audit{CreatedAt: at, UpdatedAt: at, CreatedBy: "u-admin", UpdatedBy: "u-admin"}}}
	for _, u := range []struct{ sub, role string }{
		{"u-admin", store.RoleAdmin}, {"u-member", store.RoleMember}, {"u-2", store.RoleMember}, {"u-3", store.RoleMember},
	} {
		acme.users = append(acme.users, store.UserEntry{Sub: u.sub, Email: u.sub + "@acme.test", Role: u.role, Accepted: true})
	}
	acme.users = append(acme.users, store.UserEntry{Email: "pending@acme.test", Role: store.RoleMember, Source: store.SourceInvitation})
	return &fakeStore{workspaces: map[string]*fakeWorkspace{"acme": acme}}
}

func (f *fakeStore) membership(workspaceName, sub string) (*fakeWorkspace, store.Membership, error) {
	ws := f.workspaces[workspaceName]
	if ws == nil {
		return nil, store.Membership{}, errFakeWorkspaceNotFound
	}
	for _, u := range ws.users {
		if u.Accepted && u.Sub == sub {
			return ws, store.Membership{Workspace: ws.Workspace, Role: u.Role}, nil
		}
	}
	return nil, store.Membership{}, errFakeWorkspaceNotFound
}

func (f *fakeStore) Membership(_ context.Context, workspaceName, sub string) (store.Membership, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, m, err := f.membership(workspaceName, sub)
	return m, err
}

// Invite refuses as the store does: a caller outside the workspace, one who
// is not its admin, an email that is a member's.
func (f *fakeStore) Invite(_ context.Context, p store.InviteParams) (store.Invitation, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.invited = append(f.invited, p)
	if f.inviteErr != nil {
		return store.Invitation{}, f.inviteErr
	}
	ws, m, err := f.membership(p.Workspace, p.Caller)
	if err != nil {
		return store.Invitation{}, err
	}
	if m.Role != store.RoleAdmin {
		return store.Invitation{}, &store.Error{Kind: store.ErrForbidden, Code: store.CodeNotAdmin, Message: "only workspace admins may invite"}
	}
	email := store.NormalizeEmail(p.Email)
	for _, u := range ws.users {
		if u.Accepted && u.Email == email {
			return store.Invitation{}, &store.Error{Kind: store.ErrConflict, Code: store.CodeAlreadyMember,
				Message: email + " is already a member of this workspace"}
		}
	}
	now := time.Now().UTC()
	ws.users = append(ws.users, store.UserEntry{Email: email, Role: p.Role, Source: store.SourceInvitation})
	return store.Invitation{ID: int64(len(ws.users)), WorkspaceID: ws.ID, Email: email, Role: p.Role, Status: "pending",
		InvitedBy: p.Caller, ExpiresAt: now.Add(p.TTL),
		Audit: store.Audit{CreatedAt: now, UpdatedAt: now, CreatedBy: p.Caller, UpdatedBy: p.Caller}}, nil
}

// EachUser pages the workspace's users by their index (ID 1, 2, …), as the
// store pages by position.
func (f *fakeStore) EachUser(_ context.Context, workspaceName string, after *store.ListPosition, limit int,
	fn func(store.UserEntry, store.ListPosition) error) (*store.ListPosition, error) {
	f.mu.Lock()
	f.listed = append(f.listed, listCall{workspaceName, after, limit})
	var users []store.UserEntry
	if ws := f.workspaces[workspaceName]; ws != nil {
		users = slices.Clone(ws.users)
	}
	f.mu.Unlock()
	start := 0
	if after != nil {
		start = int(after.ID)
	}
	for i := start; i < len(users); i++ {
		pos := store.ListPosition{Kind: store.KindMember, CreatedAt: time.Unix(0, 0).UTC(), ID: int64(i + 1)}
		if !users[i].Accepted {
			pos.Kind = store.KindInvitation
		}
		if limit > 0 && i == start+limit {
			last := pos
			last.ID--
			return &last, nil
		}
		if err := fn(users[i], pos); err != nil {
			return nil, err
		}
	}
	return nil, nil
}

func (f *fakeStore) CursorKey(context.Context) ([]byte, error) {
	return []byte("a fixed key for the handler tests"), nil
}

func (f *fakeStore) EnsureFirstSigningKey(_ context.Context, key store.SigningKey) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.keys) == 0 {
		key.Generation, key.SignFrom, key.CreatedAt = 1, time.Now(), time.Now()
		f.keys = append(f.keys, key)
	}
	return nil
}

func (f *fakeStore) SigningKeys(context.Context) ([]store.SigningKey, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.keys), nil
}

// handlerFixture is the server New builds on a fakeStore.
type handlerFixture struct {
	st         *fakeStore
	h          http.Handler
	dev        *auth.DevIssuer
	router     routers.Router
	mailQueued atomic.Int64
}

func newHandlerFixture(t *testing.T) *handlerFixture {
	t.Helper()
	ctx := context.Background()
	dev, err := auth.LoadDevIssuer(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	f := &handlerFixture{st: newFakeStore(), dev: dev}
	cfg := server.Config{Auth: auth.VerifierConfig{DevIssuer: dev}, MailQueued: func() { f.mailQueued.Add(1) }}
	e, closeFn, err := server.New(ctx, cfg, f.st, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(closeFn)
	f.h = e
	doc, err := server.LoadSpec(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if f.router, err = gorillamux.NewRouter(doc); err != nil {
		t.Fatal(err)
	}
	return f
}

// token is a development token for sub with scopes.
func (f *handlerFixture) token(t *testing.T, sub string, scopes ...string) string {
	t.Helper()
	tok, err := f.dev.Sign(auth.TokenRequest{Sub: sub, Email: sub + "@acme.test", Scopes: scopes, TTL: time.Hour}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// do serves one request (token and workspace: "" for none) and checks the
// answer against the spec.
func (f *handlerFixture) do(t *testing.T, method, target, token, workspace, body string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequestWithContext(context.Background(), method, target, strings.NewReader(body))
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if workspace != "" {
		req.Header.Set(server.WorkspaceHeader, workspace)
	}
	rec := httptest.NewRecorder()
	f.h.ServeHTTP(rec, req)

	route, params, err := f.router.FindRoute(req)
	if err != nil {
		t.Fatalf("%s %s: not an operation of the spec: %v", method, target, err)
	}
	input := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route},
		Status:                 rec.Code,
		Header:                 rec.Header(),
		Body:                   io.NopCloser(bytes.NewReader(rec.Body.Bytes())),
		Options:                &openapi3filter.Options{IncludeResponseStatus: true},
	}
	if err := openapi3filter.ValidateResponse(context.Background(), input); err != nil {
		t.Errorf("%s %s: answer %d does not match the spec: %v\nbody: %s", method, target, rec.Code, err, rec.Body)
	}
	return rec
}

// errorOf decodes an Error body and checks what every one must carry: the
// status as code, and the X-Request-Id header's value as request_id.
func errorOf(t *testing.T, rec *httptest.ResponseRecorder) gen.Error {
	t.Helper()
	var e gen.Error
	if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil {
		t.Fatalf("not an Error body: %v: %s", err, rec.Body)
	}
	if e.Code == nil || *e.Code != rec.Code {
		t.Errorf("code %v, want the status %d", e.Code, rec.Code)
	}
	if e.RequestId == nil || *e.RequestId == "" || *e.RequestId != rec.Header().Get(server.HeaderRequestID) {
		t.Errorf("request_id %v, want the X-Request-Id header %q", e.RequestId, rec.Header().Get(server.HeaderRequestID))
	}
	return e
}

func TestInviteWorkspaceUser(t *testing.T) {
	f := newHandlerFixture(t)
	admin := f.token(t, "u-admin", "workspaces:invite")
	for _, tc := range []struct {
		name      string
		token     string
		workspace string
		body      string
		status    int
		kind      string // the Error body's `error`; "" for a 200
		reachesDB bool   // the handler calls Invite
	}{
		{"Invited", admin, "acme", `{"email":"New@Example.com"}`, 200, "", true},
		{"NotAdmin", f.token(t, "u-member", "workspaces:invite"), "acme", `{"email":"b@example.com"}`, 403, store.CodeNotAdmin, true},
		{"AlreadyMember", admin, "acme", `{"email":"U-2@acme.test"}`, 409, store.CodeAlreadyMember, true},
		{"NotInWorkspace", f.token(t, "u-stranger", "workspaces:invite"), "acme", `{"email":"c@example.com"}`, 404, store.CodeWorkspaceNotFound, true},
		{"UnknownWorkspace", admin, "nope", `{"email":"c@example.com"}`, 404, store.CodeWorkspaceNotFound, true},
		{"NoWorkspace", admin, "", `{"email":"c@example.com"}`, 400, server.KindWorkspaceRequired, false},
		{"NoEmail", admin, "acme", `{}`, 400, server.KindInvalidEmail, false},
		{"MalformedEmail", admin, "acme", `{"email":"not-an-email"}`, 400, server.KindInvalidEmail, false},
		{"ScopeMissing", f.token(t, "u-admin", "workspaces:list"), "acme", `{"email":"c@example.com"}`, 403, server.KindInsufficientScope, false},
		{"NoCredentials", "", "acme", `{"email":"c@example.com"}`, 401, server.KindMissingCredentials, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before, mails := len(f.st.invited), f.mailQueued.Load()
			rec := f.do(t, http.MethodPost, "/v0/users", tc.token, tc.workspace, tc.body)
			if rec.Code != tc.status {
				t.Fatalf("got %d %s, want %d", rec.Code, rec.Body, tc.status)
			}
			if reached := len(f.st.invited) > before; reached != tc.reachesDB {
				t.Errorf("store's Invite called: %v, want %v", reached, tc.reachesDB)
			}
			if tc.kind != "" {
				if e := errorOf(t, rec); e.Error != tc.kind {
					t.Errorf("error kind %q, want %q (%s)", e.Error, tc.kind, rec.Body)
				}
				if f.mailQueued.Load() != mails {
					t.Error("the mail dispatcher was woken for a refused invitation")
				}
				return
			}
			var inv gen.PendingInvitation
			if err := json.Unmarshal(rec.Body.Bytes(), &inv); err != nil {
				t.Fatal(err)
			}
			if deref(inv.Email) != "new@example.com" || deref(inv.Role) != store.RoleMember || deref(inv.Workspace) != "acme" || deref(inv.InvitedBy) != "u-admin" {
				t.Errorf("got %s, want new@example.com invited by u-admin to acme as member", rec.Body)
			}
			got := f.st.invited[len(f.st.invited)-1]
			want := store.InviteParams{Workspace: "acme", Caller: "u-admin", Email: "New@Example.com", Role: store.RoleMember, TTL: server.DefaultInviteTTL}
			if got != want {
				t.Errorf("Invite got %+v, want %+v", got, want)
			}
			if f.mailQueued.Load() != mails+1 {
				t.Error("the mail dispatcher was not woken after the invitation")
			}
		})
	}
}

// TestStoreErrorMapping: what the store answers reaches the client as the
// one error table says: the sentinel picks the status, the store's code the
// kind (else the status's), its message is shown; anything that is not a
// store refusal is a 500 whose cause stays in the log.
func TestStoreErrorMapping(t *testing.T) {
	f := newHandlerFixture(t)
	admin := f.token(t, "u-admin", "workspaces:invite")
	storeErr := func(kind error, code, msg string) error { return &store.Error{Kind: kind, Code: code, Message: msg} }
	for _, tc := range []struct {
		name    string
		err     error
		status  int
		kind    string
		message string // "": the store's message must not show
	}{
		{"NotFound", storeErr(store.ErrNotFound, store.CodeWorkspaceNotFound, "workspace not found"), 404, store.CodeWorkspaceNotFound, "workspace not found"},
		{"ConflictWithoutCode", storeErr(store.ErrConflict, "", "changed meanwhile"), 409, server.KindConflict, "changed meanwhile"},
		{"Invalid", storeErr(store.ErrInvalid, store.CodeInvalidEmail, "bad address"), 400, server.KindInvalidEmail, "bad address"},
		{"Forbidden", storeErr(store.ErrForbidden, store.CodeDomainNotAllowed, "domain refused"), 403, server.KindDomainNotAllowed, "domain refused"},
		{"Wrapped", fmt.Errorf("invite: %w", storeErr(store.ErrConflict, store.CodeAlreadyMember, "already in")), 409, store.CodeAlreadyMember, "already in"},
		{"Internal", errors.New("disk on fire"), 500, server.KindInternal, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f.st.mu.Lock()
			f.st.inviteErr = tc.err
			f.st.mu.Unlock()
			rec := f.do(t, http.MethodPost, "/v0/users", admin, "acme", `{"email":"x@example.com"}`)
			if rec.Code != tc.status {
				t.Fatalf("got %d %s, want %d", rec.Code, rec.Body, tc.status)
			}
			e := errorOf(t, rec)
			if e.Error != tc.kind {
				t.Errorf("error kind %q, want %q", e.Error, tc.kind)
			}
			switch {
			case tc.message != "" && deref(e.Message) != tc.message:
				t.Errorf("message %q, want the store's %q", deref(e.Message), tc.message)
			case tc.message == "" && strings.Contains(rec.Body.String(), "disk on fire"):
				t.Errorf("the internal cause reached the client: %s", rec.Body)
			}
		})
	}
}

// TestListWorkspaceUsers_Cursor walks the list a page at a time by the
// Link headers, and checks that a cursor works only where it was made.
func TestListWorkspaceUsers_Cursor(t *testing.T) {
	f := newHandlerFixture(t)
	admin := f.token(t, "u-admin", "workspaces:list")
	all := []string{"u-admin@acme.test", "u-member@acme.test", "u-2@acme.test", "u-3@acme.test", "pending@acme.test"}

	list := func(t *testing.T, target, token string) (emails []string, next string) {
		t.Helper()
		rec := f.do(t, http.MethodGet, target, token, "acme", "")
		if rec.Code != http.StatusOK {
			t.Fatalf("GET %s: got %d %s", target, rec.Code, rec.Body)
		}
		var users []gen.WorkspaceUser
		if err := json.Unmarshal(rec.Body.Bytes(), &users); err != nil {
			t.Fatal(err)
		}
		for _, u := range users {
			emails = append(emails, deref(u.Email))
		}
		if link := rec.Header().Get("Link"); link != "" {
			target, ok := strings.CutSuffix(link, `>; rel="next"`)
			if !ok || !strings.HasPrefix(target, "<") {
				t.Fatalf("Link %q, want <…>; rel=\"next\"", link)
			}
			next = target[1:]
		}
		return emails, next
	}

	for _, tc := range []struct {
		limit int // 0: no limit parameter
		pages []int
	}{{0, []int{5}}, {2, []int{2, 2, 1}}, {4, []int{4, 1}}, {5, []int{5}}, {1000, []int{5}}} {
		t.Run(fmt.Sprintf("limit=%d", tc.limit), func(t *testing.T) {
			target := "/v0/users"
			if tc.limit > 0 {
				target += fmt.Sprintf("?limit=%d", tc.limit)
			}
			var got []string
			var sizes []int
			for target != "" && len(sizes) <= len(all) {
				page, next := list(t, target, admin)
				got, sizes, target = append(got, page...), append(sizes, len(page)), next
			}
			if !slices.Equal(got, all) || !slices.Equal(sizes, tc.pages) {
				t.Errorf("got %q in pages of %v, want %q in pages of %v", got, sizes, all, tc.pages)
			}
		})
	}

	_, next := list(t, "/v0/users?limit=2", admin)
	call := f.st.listed[len(f.st.listed)-1]
	if call.workspaceName != "acme" || call.after != nil || call.limit != 2 {
		t.Errorf("EachUser got %+v, want acme from the start, limit 2", call)
	}
	u, err := url.Parse(next)
	if err != nil {
		t.Fatal(err)
	}
	cursor := u.Query().Get("cursor")
	if cursor == "" {
		t.Fatalf("no cursor in %q", next)
	}
	// The same cursor with its position moved by one entry: well-formed,
	// but not what the server signed.
	raw, err := base64.RawURLEncoding.DecodeString(cursor)
	if err != nil {
		t.Fatal(err)
	}
	raw[len(raw)-17]++ // the id's last byte, before the 16-byte MAC
	altered := base64.RawURLEncoding.EncodeToString(raw)
	for _, tc := range []struct {
		name, target, token string
	}{
		{"AnotherCaller", next, f.token(t, "u-member", "workspaces:list")},
		{"Altered", "/v0/users?limit=2&cursor=" + altered, admin},
		{"NotBase64", "/v0/users?limit=2&cursor=%21%21", admin},
	} {
		t.Run(tc.name, func(t *testing.T) {
			calls := len(f.st.listed)
			rec := f.do(t, http.MethodGet, tc.target, tc.token, "acme", "")
			if rec.Code != http.StatusBadRequest {
				t.Fatalf("got %d %s, want 400", rec.Code, rec.Body)
			}
			if e := errorOf(t, rec); e.Error != server.KindInvalidCursor {
				t.Errorf("error kind %q, want %q", e.Error, server.KindInvalidCursor)
			}
			if len(f.st.listed) != calls {
				t.Error("the store was asked for a page of a refused cursor")
			}
		})
	}

	t.Run("NotAMember", func(t *testing.T) {
		rec := f.do(t, http.MethodGet, "/v0/users?limit=2", f.token(t, "u-stranger", "workspaces:list"), "acme", "")
		if e := errorOf(t, rec); rec.Code != http.StatusNotFound || e.Error != store.CodeWorkspaceNotFound {
			t.Errorf("got %d %s, want 404 %s", rec.Code, rec.Body, store.CodeWorkspaceNotFound)
		}
	})
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
