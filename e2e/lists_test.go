package e2e_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"runtime"
	"runtime/metrics"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/membership-api/controlplane/gen"
	"github.com/membership-api/controlplane/store"
	"github.com/membership-api/controlplane/store/storetest"
)

// nextLink matches the Link header announcing the next page (RFC 8288).
var nextLink = regexp.MustCompile(`^<(/v0/[a-z/]+\?limit=(\d+)&cursor=([A-Za-z0-9_-]+))>; rel="next"$`)

// getList GETs path with the header and returns the body's entries (as raw
// JSON, to compare bytes) and the next page's path ("" on the last page).
func (f *fixture) getList(t *testing.T, path string, h http.Header) (entries []json.RawMessage, body []byte, next string) {
	t.Helper()
	resp, body := f.do(t, http.MethodGet, path, h, "")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %s", path, resp.StatusCode, body)
	}
	if err := json.Unmarshal(body, &entries); err != nil {
		t.Fatalf("GET %s: %v in %q", path, err, body)
	}
	if link := resp.Header.Get("Link"); link != "" {
		m := nextLink.FindStringSubmatch(link)
		if m == nil {
			t.Fatalf("GET %s: Link %q is not <…>; rel=\"next\"", path, link)
		}
		next = m[1]
	}
	return entries, body, next
}

// walk follows Link headers from path to the last page, calling between
// (if set) while each page is being fetched.
func (f *fixture) walk(t *testing.T, path string, h http.Header, limit int, between func(page int)) []json.RawMessage {
	t.Helper()
	var all []json.RawMessage
	for page := 0; path != ""; page++ {
		if page > 10000 {
			t.Fatal("the walk does not end")
		}
		var wg sync.WaitGroup
		if between != nil {
			wg.Add(1)
			go func() { defer wg.Done(); between(page) }()
		}
		entries, _, next := f.getList(t, path, h)
		wg.Wait()
		if len(entries) > limit || (next != "" && len(entries) != limit) {
			t.Fatalf("GET %s: %d entries with limit %d, next %q", path, len(entries), limit, next)
		}
		all = append(all, entries...)
		path = next
	}
	return all
}

func emailsOf(t *testing.T, entries []json.RawMessage) []string {
	t.Helper()
	var out []string
	for _, e := range entries {
		var u struct{ Email string }
		if err := json.Unmarshal(e, &u); err != nil {
			t.Fatal(err)
		}
		out = append(out, u.Email)
	}
	return out
}

// Without limit and cursor the lists are what they were: the whole list,
// members oldest first then pending invitations oldest first, no Link, and
// the very bytes the generated response wrote (json.Encoder of the array).
// With limit, pages of that size follow Link headers to the same list.
func TestLists_PagesAndUnpaged(t *testing.T) {
	t.Parallel()
	parallelDialects(t, func(t *testing.T, dialect string) {
		f := newFixture(t, dialect, "--rate-limits=false")
		st := f.store()
		ctx := context.Background()
		want := []string{f.adminEmail, f.memberEmail}
		for i := range 5 {
			email := fmt.Sprintf("m%d@acme.test", i)
			if _, err := storetest.AddMember(ctx, st, f.ws, "test", storetest.NewMember{Sub: fmt.Sprintf("u-m%d", i), Email: email, Role: store.RoleMember}); err != nil {
				t.Fatal(err)
			}
			want = append(want, email)
		}
		for i := range 6 {
			email := fmt.Sprintf("i%d@example.com", i)
			if _, err := st.Invite(ctx, store.InviteParams{Workspace: f.ws, Caller: f.adminSub, Email: email, TTL: time.Hour}); err != nil {
				t.Fatal(err)
			}
			want = append(want, email)
		}
		for i := range 3 { // bob is invited to three workspaces
			name := fmt.Sprintf("team%d", i)
			if _, err := st.CreateWorkspace(ctx, store.NewWorkspace{Name: name, AdminSub: "u-" + name, AdminEmail: name + "@example.com"}); err != nil {
				t.Fatal(err)
			}
			if _, err := st.Invite(ctx, store.InviteParams{Workspace: name, Caller: "u-" + name, Email: "bob@example.com", TTL: time.Hour}); err != nil {
				t.Fatal(err)
			}
		}
		admin := f.bearer(f.userToken(f.adminSub, f.adminEmail))

		all, body, next := f.getList(t, "/v0/users", admin)
		if next != "" {
			t.Errorf("unpaged list announces a next page %q", next)
		}
		if got := emailsOf(t, all); strings.Join(got, " ") != strings.Join(want, " ") {
			t.Errorf("unpaged: got %v, want %v", got, want)
		}
		var typed []gen.WorkspaceUser
		if err := json.Unmarshal(body, &typed); err != nil {
			t.Fatal(err)
		}
		var old bytes.Buffer
		if err := json.NewEncoder(&old).Encode(typed); err != nil { // what the generated response wrote
			t.Fatal(err)
		}
		if !bytes.Equal(body, old.Bytes()) {
			t.Errorf("unpaged bytes differ from the generated response's:\n got %s\nwant %s", body, old.Bytes())
		}

		for _, limit := range []int{1, 2, 4, 13, 14, 1000} {
			got := f.walk(t, fmt.Sprintf("/v0/users?limit=%d", limit), admin, limit, nil)
			if len(got) != len(all) {
				t.Errorf("limit %d: %d entries, want %d", limit, len(got), len(all))
				continue
			}
			for i := range got {
				if !bytes.Equal(got[i], all[i]) {
					t.Errorf("limit %d: entry %d is %s, want %s", limit, i, got[i], all[i])
				}
			}
		}
		// The next page's link, exactly.
		resp, _ := f.do(t, http.MethodGet, "/v0/users?limit=12", admin, "")
		if m := nextLink.FindStringSubmatch(resp.Header.Get("Link")); m == nil || !strings.HasPrefix(m[1], "/v0/users?limit=12&cursor=") {
			t.Errorf("Link after a full page: %q", resp.Header.Get("Link"))
		}
		if resp, _ := f.do(t, http.MethodGet, "/v0/users?limit=13", admin, ""); resp.Header.Get("Link") != "" {
			t.Errorf("Link on a last page exactly full: %q", resp.Header.Get("Link"))
		}

		// My invitations: the same, with workspace and member count.
		bob := f.bearer(f.userToken("u-bob", "bob@example.com"))
		mine, mineBody, next := f.getList(t, "/v0/profile/invitations", bob)
		if len(mine) != 3 || next != "" {
			t.Fatalf("bob's invitations: %s, next %q", mineBody, next)
		}
		var typedMine []gen.PendingInvitationRender
		if err := json.Unmarshal(mineBody, &typedMine); err != nil {
			t.Fatalf("bob's invitations: %v: %s", err, mineBody)
		}
		for i, inv := range typedMine {
			if deref(inv.Workspace.Name) != fmt.Sprintf("team%d", i) || *inv.WorkspaceDetails.UserNumber != 1 || deref(inv.InvitedBy.Email) != fmt.Sprintf("team%d@example.com", i) {
				t.Errorf("invitation %d: %s", i, mine[i])
			}
		}
		for _, limit := range []int{1, 2, 3} {
			got := f.walk(t, fmt.Sprintf("/v0/profile/invitations?limit=%d", limit), bob, limit, nil)
			if len(got) != 3 || !bytes.Equal(got[0], mine[0]) || !bytes.Equal(got[2], mine[2]) {
				t.Errorf("invitations limit %d: %s", limit, got)
			}
		}
		if _, body, _ := f.getList(t, "/v0/profile/invitations?limit=5", f.bearer(f.userToken("u-nobody", "nobody@example.com"))); string(body) != "[]\n" {
			t.Errorf("no invitations: %q, want []", body)
		}
	})
}

// A walk while others invite and accept, each page fetched while an invite
// and an accept run: every entry that existed before the walk and was not
// changed during it appears exactly once and in the order it had; nothing
// appears twice.
func TestLists_PagingWhileOthersWrite(t *testing.T) {
	t.Parallel()
	parallelDialects(t, func(t *testing.T, dialect string) {
		f := newFixture(t, dialect, "--rate-limits=false")
		st := f.store()
		ctx := context.Background()
		for i := range 20 {
			if _, err := storetest.AddMember(ctx, st, f.ws, "test", storetest.NewMember{Sub: fmt.Sprintf("u-m%d", i), Email: fmt.Sprintf("m%d@acme.test", i), Role: store.RoleMember}); err != nil {
				t.Fatal(err)
			}
		}
		for i := range 40 {
			if _, err := st.Invite(ctx, store.InviteParams{Workspace: f.ws, Caller: f.adminSub, Email: fmt.Sprintf("i%02d@example.com", i), TTL: time.Hour}); err != nil {
				t.Fatal(err)
			}
		}
		admin := f.bearer(f.userToken(f.adminSub, f.adminEmail))
		before, _, _ := f.getList(t, "/v0/users", admin)
		c := f.srv.client(t)
		accepted := map[string]bool{}
		var mu sync.Mutex
		between := func(page int) {
			email := fmt.Sprintf("new%d@example.com", page)
			r, err := c.InviteWorkspaceUserWithResponse(ctx, nil, gen.InviteWorkspaceUserJSONRequestBody{Email: &email},
				withAuth("Authorization", f.userToken(f.adminSub, f.adminEmail), f.ws))
			if err != nil || r.StatusCode() != 200 {
				t.Errorf("invite during the walk: %v %v", err, r.StatusCode())
			}
			// Accept invitations from both ends: ones the walk has passed
			// and ones ahead of it.
			for _, i := range []int{page, 39 - page} {
				invitee := fmt.Sprintf("i%02d@example.com", i)
				a, err := c.AcceptWorkspaceInvitationWithResponse(ctx, f.ws, withAuth("Authorization", f.userToken("u-"+invitee, invitee), ""))
				if err != nil || a.StatusCode() != 200 {
					t.Errorf("accept during the walk: %v %v", err, a.StatusCode())
				}
				mu.Lock()
				accepted[invitee] = true
				mu.Unlock()
			}
		}
		walked := emailsOf(t, f.walk(t, "/v0/users?limit=7", admin, 7, between))
		if len(accepted) < 10 {
			t.Fatalf("only %d accepts during the walk", len(accepted))
		}
		seen := map[string]int{}
		for _, e := range walked {
			if seen[e]++; seen[e] > 1 {
				t.Errorf("%s listed twice", e)
			}
		}
		// The untouched entries of before, in their order.
		var wantOrder, gotOrder []string
		for _, e := range emailsOf(t, before) {
			if !accepted[e] {
				wantOrder = append(wantOrder, e)
			}
		}
		untouched := map[string]bool{}
		for _, e := range wantOrder {
			untouched[e] = true
		}
		for _, e := range walked {
			if untouched[e] {
				gotOrder = append(gotOrder, e)
			}
		}
		if strings.Join(gotOrder, " ") != strings.Join(wantOrder, " ") {
			t.Errorf("untouched entries:\n got %v\nwant %v", gotOrder, wantOrder)
		}
	})
}

// Bad limits and cursors are 400s with the Error body, and change nothing:
// a cursor is good only for the list, workspace and caller it was made for,
// and only as it was made.
func TestLists_BadPaging(t *testing.T) {
	t.Parallel()
	parallelDialects(t, func(t *testing.T, dialect string) {
		f := newFixture(t, dialect, "--rate-limits=false")
		st := f.store()
		ctx := context.Background()
		if _, err := storetest.AddMember(ctx, st, f.otherWS, "test", storetest.NewMember{Sub: "u-other2", Email: "other2@other.test", Role: store.RoleMember}); err != nil {
			t.Fatal(err)
		}
		for ws, admin := range map[string]string{f.ws: f.adminSub, f.otherWS: f.otherSub} {
			if _, err := st.Invite(ctx, store.InviteParams{Workspace: ws, Caller: admin, Email: "bob@example.com", TTL: time.Hour}); err != nil {
				t.Fatal(err)
			}
		}
		admin := f.bearer(f.userToken(f.adminSub, f.adminEmail))
		member := f.bearer(f.userToken(f.memberSub, f.memberEmail))
		other := with(f.bearer(f.userToken(f.otherSub, f.otherEmail)), "X-Blaxel-Workspace", f.otherWS)
		bob := f.bearer(f.userToken("u-bob", "bob@example.com"))
		carol := f.bearer(f.userToken("u-carol", "carol@example.com"))
		cursorOf := func(path string, h http.Header) string {
			t.Helper()
			_, _, next := f.getList(t, path, h)
			if next == "" {
				t.Fatalf("GET %s: no next page", path)
			}
			u, err := url.Parse(next)
			if err != nil {
				t.Fatal(err)
			}
			return u.Query().Get("cursor")
		}
		adminCursor := cursorOf("/v0/users?limit=1", admin)
		otherCursor := cursorOf("/v0/users?limit=1", other)
		bobCursor := cursorOf("/v0/profile/invitations?limit=1", bob)
		// The admin's cursor still works for the admin.
		if entries, _, _ := f.getList(t, "/v0/users?limit=1&cursor="+adminCursor, admin); len(entries) != 1 {
			t.Fatalf("the admin's own cursor: %d entries", len(entries))
		}
		altered := []byte(adminCursor)
		altered[5] ^= 1 // still base64url
		if altered[5] == '-' || altered[5] == '_' {
			altered[5] = 'A'
		}
		get := func(name, path string, h http.Header) badInput {
			return badInput{name: name, method: http.MethodGet, path: path, header: h, status: http.StatusBadRequest}
		}
		f.checkBadInputs(t, []badInput{
			get("LimitZero", "/v0/users?limit=0", admin),
			get("LimitNegative", "/v0/users?limit=-1", admin),
			get("LimitTooLarge", "/v0/users?limit=1001", admin),
			get("LimitNotANumber", "/v0/users?limit=ten", admin),
			get("LimitFraction", "/v0/profile/invitations?limit=1.5", bob),
			get("CursorAltered", "/v0/users?limit=1&cursor="+string(altered), admin),
			get("CursorTruncated", "/v0/users?limit=1&cursor="+adminCursor[:len(adminCursor)-2], admin),
			get("CursorGarbage", "/v0/users?cursor=%21%21not-base64", admin),
			get("CursorEmpty", "/v0/users?limit=1&cursor=", admin),
			get("CursorTooLong", "/v0/users?cursor="+strings.Repeat("A", 201), admin),
			get("CursorOtherWorkspace", "/v0/users?limit=1&cursor="+otherCursor, admin),
			get("CursorOtherCaller", "/v0/users?limit=1&cursor="+adminCursor, member),
			get("CursorOtherList", "/v0/profile/invitations?limit=1&cursor="+adminCursor, bob),
			get("CursorOtherList2", "/v0/users?limit=1&cursor="+bobCursor, admin),
			get("CursorOtherInvitee", "/v0/profile/invitations?limit=1&cursor="+bobCursor, carol),
		})
		// The message says what is wrong.
		_, body := f.do(t, http.MethodGet, "/v0/users?limit=1&cursor="+otherCursor, admin, "")
		if !strings.Contains(string(body), "cursor") {
			t.Errorf("foreign cursor: %s, want a message about the cursor", body)
		}
	})
}

// seedUsers gives workspace ws n more entries, half members and half
// pending invitations (invited by admin), 16 at a time.
func seedUsers(tb testing.TB, st *store.Store, ws, admin string, n int) {
	tb.Helper()
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for w := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += 16 {
				var err error
				if i%2 == 0 {
					_, err = storetest.AddMember(ctx, st, ws, "seed", storetest.NewMember{Sub: fmt.Sprintf("seed-%d", i), Email: fmt.Sprintf("seed-%d@%s.test", i, ws), Role: store.RoleMember})
				} else {
					_, err = st.Invite(ctx, store.InviteParams{Workspace: ws, Caller: admin, Email: fmt.Sprintf("invitee-%d@example.com", i), TTL: time.Hour})
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		tb.Fatal(err)
	}
}

// heapPeak samples the live heap every half millisecond until stop is
// closed and returns the largest value seen.
func heapPeak(stop <-chan struct{}) <-chan uint64 {
	out := make(chan uint64, 1)
	go func() {
		sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
		var peak uint64
		tick := time.NewTicker(500 * time.Microsecond)
		defer tick.Stop()
		for {
			metrics.Read(sample)
			peak = max(peak, sample[0].Value.Uint64())
			select {
			case <-stop:
				out <- peak
				return
			case <-tick.C:
			}
		}
	}()
	return out
}

// 64 unpaged lists of 10,000 entries in flight at once cost the server
// little memory: entries are written as they are read. (Built whole, each
// body took 8–9 MB while in flight: 64 of them over 500 MB of heap.) The
// server runs in this process; the clients discard what they read.
func TestLists_UnpagedMemory(t *testing.T) {
	// Not parallel: it measures this process's heap, which other tests'
	// servers and clients share.
	if testing.Short() {
		t.Skip("seeds 10,000 entries")
	}
	// The measure is heap objects, garbage not yet collected included: at
	// serve's default GC target (--gc-percent 400) garbage may reach 4x the
	// live heap before a collection, which measured the GC target and the
	// machine's speed, not streaming (make bench measures RSS at the
	// default). At 100, garbage stays about the size of the live heap.
	f := newFixture(t, "sqlite", "--rate-limits=false", "--gc-percent", "100")
	seedUsers(t, f.store(), f.ws, f.adminSub, 10_000)
	tok := f.userToken(f.adminSub, f.adminEmail)
	get := func() (int64, error) {
		req, _ := http.NewRequestWithContext(context.Background(), http.MethodGet, f.srv.URL+"/v0/users", nil)
		req.Header = f.bearer(tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		return io.Copy(io.Discard, resp.Body)
	}
	one, err := get()
	if err != nil || one < 10_000*50 {
		t.Fatalf("one list: %d bytes, %v", one, err)
	}
	runtime.GC()
	base := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	metrics.Read(base)
	resetPeakRSS := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) // Linux: VmHWM restarts from now
	stop := make(chan struct{})
	peak := heapPeak(stop)
	// Under -race the server is ~10x slower: 128 lists queued behind the
	// cap on concurrent unpaged lists (one per core) would outlast its 30 s
	// write timeout, and so did 16 on a 2-core machine busy with other
	// builds (the last ones were cut off at 30 s).
	clients, rounds := 64, 2
	if raceEnabled {
		clients, rounds = 8, 1
	}
	var wg sync.WaitGroup
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range rounds {
				if n, err := get(); err != nil || n != one {
					t.Errorf("list: %d bytes (want %d), %v", n, one, err)
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	grew := int64(<-peak) - int64(base[0].Value.Uint64()) //nolint:gosec // G115: heap bytes, far below 2^63
	t.Logf("%d × %d unpaged lists of %d bytes: heap objects peaked %.1f MB above the idle %.1f MB", clients, rounds, one, float64(grew)/1e6, float64(base[0].Value.Uint64())/1e6)
	if status, err := os.ReadFile("/proc/self/status"); err == nil && resetPeakRSS == nil {
		hwm := regexp.MustCompile(`VmHWM:\s*(\d+ kB)`).FindSubmatch(status)
		t.Logf("peak RSS of this process (server, clients and test) meanwhile: %s", hwm[1])
	}
	if grew > 64<<20 {
		t.Errorf("live heap grew by %.0f MB with 64 lists in flight, want under 64 MB", float64(grew)/1e6)
	}
}
