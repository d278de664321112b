package e2e_test

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/membership-api/controlplane/gen"
	"github.com/membership-api/controlplane/server"
	"github.com/membership-api/controlplane/store"
	"github.com/membership-api/controlplane/store/storetest"
)

// TestIdempotency_Replay: the same key and body replays the first answer
// (status, body, Idempotency-Replayed: true) without acting again, for a
// success and for an error; another body is a 422; another caller or
// operation has keys of its own; no key acts every time.
func TestIdempotency_Replay(t *testing.T) {
	t.Parallel()
	parallelDialects(t, func(t *testing.T, dialect string) {
		f := newTenant(t, dialect)
		ctx := context.Background()
		st := f.store()
		admin := f.bearer(f.userToken(f.adminSub, f.adminEmail))
		keyed := with(admin, "Idempotency-Key", "invite-bob-1")

		first, firstBody := f.do(t, "POST", "/v0/users", keyed, `{"email":"bob@example.com"}`)
		if first.StatusCode != 200 || first.Header.Get(server.IdempotencyReplayedHeader) != "" {
			t.Fatalf("first: %d %q %s", first.StatusCode, first.Header.Get(server.IdempotencyReplayedHeader), firstBody)
		}
		before := f.countRows(t)
		again, againBody := f.do(t, "POST", "/v0/users", keyed, `{ "email" : "bob@example.com" }`) // same JSON, other spacing
		if again.StatusCode != 200 || again.Header.Get(server.IdempotencyReplayedHeader) != "true" || string(againBody) != string(firstBody) {
			t.Errorf("replay: %d %q %s, want 200 true %s", again.StatusCode, again.Header.Get(server.IdempotencyReplayedHeader), againBody, firstBody)
		}
		after := f.countRows(t)
		if after["invitations"] != before["invitations"] || after["outbox_messages"] != before["outbox_messages"] {
			t.Errorf("a replay acted again: %v → %v", before, after)
		}

		// Another body with the key: 422, nothing done.
		f.checkBadInputs(t, []badInput{
			{"OtherBody", "POST", "/v0/users", keyed, `{"email":"carol@example.com"}`, 422},
			{"OtherOperation", "POST", "/v0/users/bulk", keyed, `{"email":"bob@example.com"}`, 400}, // the body is checked first
			{"OtherOperationValid", "POST", "/v0/users/bulk", keyed, `{"emails":["bob@example.com"]}`, 422},
		})

		// An error answer is replayed too, with the replay's own request ID.
		memberKey := with(admin, "Idempotency-Key", "invite-member")
		r1, b1 := f.do(t, "POST", "/v0/users", memberKey, `{"email":"`+f.memberEmail+`"}`)
		r2, b2 := f.do(t, "POST", "/v0/users", memberKey, `{"email":"`+f.memberEmail+`"}`)
		var e1, e2 gen.Error
		if err := json.Unmarshal(b1, &e1); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b2, &e2); err != nil {
			t.Fatal(err)
		}
		if r1.StatusCode != 409 || r2.StatusCode != 409 || r2.Header.Get(server.IdempotencyReplayedHeader) != "true" ||
			e1.Error != "already_member" || e2.Error != e1.Error || deref(e2.Message) != deref(e1.Message) {
			t.Errorf("error replay: %d %s then %d %q %s", r1.StatusCode, b1, r2.StatusCode, r2.Header.Get(server.IdempotencyReplayedHeader), b2)
		}

		// The key belongs to the caller: an API key of the same member
		// is the same caller (its sub); another admin is not.
		if resp, body := f.do(t, "POST", "/v0/users", with(f.bearer(f.adminKey), "Idempotency-Key", "invite-bob-1"), `{"email":"bob@example.com"}`); resp.StatusCode != 200 || resp.Header.Get(server.IdempotencyReplayedHeader) != "true" {
			t.Errorf("same member by API key: %d %q %s, want a replay", resp.StatusCode, resp.Header.Get(server.IdempotencyReplayedHeader), body)
		}
		if _, err := storetest.AddMember(ctx, st, f.ws, "test", storetest.NewMember{Sub: f.uniq("u-admin2"), Email: "admin2@" + f.ws + ".test", Role: store.RoleAdmin}); err != nil {
			t.Fatal(err)
		}
		if resp, body := f.do(t, "POST", "/v0/users", with(f.bearer(f.userToken(f.uniq("u-admin2"), "admin2@"+f.ws+".test")), "Idempotency-Key", "invite-bob-1"), `{"email":"dave@example.com"}`); resp.StatusCode != 200 || resp.Header.Get(server.IdempotencyReplayedHeader) != "" {
			t.Errorf("another caller's same key: %d %q %s, want a fresh 200", resp.StatusCode, resp.Header.Get(server.IdempotencyReplayedHeader), body)
		}

		// Bulk: replayed whole.
		bulkKey := with(admin, "Idempotency-Key", "bulk-1")
		b1r, b1b := f.do(t, "POST", "/v0/users/bulk", bulkKey, `{"emails":["e1@example.com","bad","`+f.memberEmail+`"]}`)
		b2r, b2b := f.do(t, "POST", "/v0/users/bulk", bulkKey, `{"emails":["e1@example.com","bad","`+f.memberEmail+`"]}`)
		if b1r.StatusCode != 200 || b2r.StatusCode != 200 || b2r.Header.Get(server.IdempotencyReplayedHeader) != "true" || string(b1b) != string(b2b) {
			t.Errorf("bulk replay: %d %s then %d %q %s", b1r.StatusCode, b1b, b2r.StatusCode, b2r.Header.Get(server.IdempotencyReplayedHeader), b2b)
		}
	})
}

// TestIdempotency_InUse: a request arriving while the first with its key
// still runs gets 409 idempotency_key_in_use. The first is held as running
// by claiming its key beside the server, as a request in flight would.
func TestIdempotency_InUse(t *testing.T) {
	t.Parallel()
	parallelDialects(t, func(t *testing.T, dialect string) {
		f := newTenant(t, dialect)
		st := f.store()
		admin := f.bearer(f.userToken(f.adminSub, f.adminEmail))
		for _, tc := range []struct {
			operation, path string
			body            any
			raw             string
		}{
			{"InviteWorkspaceUser", "/v0/users", gen.InviteWorkspaceUserJSONRequestBody{Email: ptr("held@example.com")}, `{"email":"held@example.com"}`},
			{"BulkInviteWorkspaceUsers", "/v0/users/bulk", gen.BulkInviteRequest{Emails: []string{"held@example.com"}}, `{"emails":["held@example.com"]}`},
		} {
			b, err := json.Marshal(tc.body)
			if err != nil {
				t.Fatal(err)
			}
			h := sha256.Sum256(append([]byte(tc.operation+"\x00"), b...))
			claim, err := st.BeginIdempotent(context.Background(), store.IdempotencyScope{Workspace: f.ws, Caller: f.adminSub, Key: "held-" + tc.operation}, h[:], time.Hour)
			if err != nil || claim.Outcome != store.IdempotencyClaimed {
				t.Fatalf("hold the key: %v %v", claim.Outcome, err)
			}
			f.checkBadInputs(t, []badInput{{tc.operation, "POST", tc.path, with(admin, "Idempotency-Key", "held-"+tc.operation), tc.raw, 409}})
			// Once the first is over (here: failed and released), the key runs.
			if err := st.ReleaseIdempotent(context.Background(), claim); err != nil {
				t.Fatal(err)
			}
			if resp, body := f.do(t, "POST", tc.path, with(admin, "Idempotency-Key", "held-"+tc.operation), tc.raw); resp.StatusCode != 200 {
				t.Errorf("%s after release: %d %s", tc.operation, resp.StatusCode, body)
			}
		}
	})
}

// TestIdempotency_RaceOneKey: 24 identical requests with one key at once:
// one runs (one invitation, one queued email), every other is a 409 or a
// replay of its answer.
func TestIdempotency_RaceOneKey(t *testing.T) {
	t.Parallel()
	parallelDialects(t, func(t *testing.T, dialect string) {
		f := newFixture(t, dialect, "--rate-limits=false") // many requests at once: not a rate-limit test
		ctx := context.Background()
		st := f.store()
		m, err := st.Membership(ctx, f.ws, f.adminSub)
		if err != nil {
			t.Fatal(err)
		}
		ws := m.Workspace
		admin := f.bearer(f.userToken(f.adminSub, f.adminEmail))
		for round, path := range []string{"/v0/users", "/v0/users/bulk", "/v0/users"} {
			email := "race" + string(rune('a'+round)) + "@example.com"
			body := `{"email":"` + email + `"}`
			if path == "/v0/users/bulk" {
				body = `{"emails":["` + email + `"]}`
			}
			key := with(admin, "Idempotency-Key", "race-"+email)
			before := f.countRows(t)
			const n = 24
			statuses := make([]int, n)
			replayed := make([]bool, n)
			bodies := make([]string, n)
			var wg sync.WaitGroup
			for i := range n {
				wg.Go(func() {
					resp, b := f.do(t, "POST", path, key, body)
					statuses[i], replayed[i], bodies[i] = resp.StatusCode, resp.Header.Get(server.IdempotencyReplayedHeader) == "true", string(b)
				})
			}
			wg.Wait()
			ran, first := 0, ""
			for i := range n {
				switch {
				case statuses[i] == 200 && !replayed[i]:
					ran++
					first = bodies[i]
				case statuses[i] == 200 || statuses[i] == 409:
				default:
					t.Errorf("%s: answer %d %s, want 200 or 409", path, statuses[i], bodies[i])
				}
			}
			if ran != 1 {
				t.Errorf("%s: %d requests ran, want 1", path, ran)
			}
			for i := range n {
				if replayed[i] && bodies[i] != first {
					t.Errorf("%s: replay %s differs from the answer %s", path, bodies[i], first)
				}
			}
			after := f.countRows(t)
			if _, err := storetest.PendingInvitation(ctx, st, ws.Name, email); err != nil ||
				after["invitations"] != before["invitations"]+1 || after["outbox_messages"] != before["outbox_messages"]+1 {
				t.Errorf("%s: rows %v → %v, want one invitation and one email more", path, before, after)
			}
		}
	})
}

// TestIdempotency_Expiry: past --idempotency-ttl a key is forgotten (the
// same key with another body runs) and the sweeper deletes expired keys.
func TestIdempotency_Expiry(t *testing.T) {
	t.Parallel()
	parallelDialects(t, func(t *testing.T, dialect string) {
		f := newFixture(t, dialect, "--idempotency-ttl", "1ms")
		admin := with(f.bearer(f.userToken(f.adminSub, f.adminEmail)), "Idempotency-Key", "short-lived")
		if resp, body := f.do(t, "POST", "/v0/users", admin, `{"email":"one@example.com"}`); resp.StatusCode != 200 {
			t.Fatalf("first: %d %s", resp.StatusCode, body)
		}
		time.Sleep(5 * time.Millisecond) // past the key's 1 ms
		resp, body := f.do(t, "POST", "/v0/users", admin, `{"email":"two@example.com"}`)
		if resp.StatusCode != 200 || resp.Header.Get(server.IdempotencyReplayedHeader) != "" || !json.Valid(body) {
			t.Errorf("after expiry, another body: %d %q %s, want a fresh 200", resp.StatusCode, resp.Header.Get(server.IdempotencyReplayedHeader), body)
		}
		// The sweeper runs every second with this TTL.
		deadline := time.Now().Add(20 * time.Second)
		for {
			rows := f.countRows(t)
			if rows["idempotency_keys"] == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("expired keys not swept: %d left", rows["idempotency_keys"])
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
}

// TestIdempotency_RateLimits: a bulk answer with rows over the invitation
// quota is a 200 and is kept; a single invite refused by the rate limit is
// answered before the key is claimed, so it is never replayed.
func TestIdempotency_RateLimits(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "sqlite", "--rate-limit-workspace-invites", "1/h")
	admin := f.bearer(f.userToken(f.adminSub, f.adminEmail))
	if a := f.inviteOne(t, admin, "spend@example.com"); a.status != 200 {
		t.Fatalf("spend the quota: %+v", a)
	}
	keyed := with(admin, "Idempotency-Key", "bulk-limited")
	rows := f.bulkInvite(t, keyed, `{"emails":["late@example.com"]}`)
	if rows[0].Status != 429 {
		t.Fatalf("row over the quota: %+v", rows[0])
	}
	// The bulk answer itself is a 200 and is kept: the same key replays it.
	resp, _ := f.do(t, "POST", "/v0/users/bulk", keyed, `{"emails":["late@example.com"]}`)
	if resp.Header.Get(server.IdempotencyReplayedHeader) != "true" {
		t.Errorf("bulk answer with a 429 row: not replayed")
	}
	// A single invite's 429 is not kept (the middleware answers before the
	// handler: the key is never claimed).
	single := with(admin, "Idempotency-Key", "single-limited")
	r1, _ := f.do(t, "POST", "/v0/users", single, `{"email":"late2@example.com"}`)
	r2, _ := f.do(t, "POST", "/v0/users", single, `{"email":"late2@example.com"}`)
	if r1.StatusCode != 429 || r2.StatusCode != 429 || r2.Header.Get(server.IdempotencyReplayedHeader) != "" {
		t.Errorf("single over the quota: %d then %d %q, want 429 twice, not replayed", r1.StatusCode, r2.StatusCode, r2.Header.Get(server.IdempotencyReplayedHeader))
	}
}
