package main

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// The floor does the work it stands for: it answers the benchmark's invite
// and refuses what the contract refuses (a missing or unknown token, a
// token without the operation's scope, a bad email, a missing workspace
// header), so a floor that skipped validation would fail here, not just
// read faster.
func TestFloor(t *testing.T) {
	tokens := map[string]principal{
		"good":    {sub: "bench-admin", scopes: scopeSet("workspaces:invite"), exp: time.Now().Add(time.Hour)},
		"noscope": {sub: "bench-admin", scopes: scopeSet("workspaces:list"), exp: time.Now().Add(time.Hour)},
		"expired": {sub: "bench-admin", scopes: scopeSet("workspaces:invite"), exp: time.Now().Add(-time.Second)},
	}
	e, err := newServer(context.Background(), "../../openapi/controlplane.yml", tokens)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, token, workspace, body string
		want                         int
	}{
		{"invite", "good", "bench", `{"email":"u1-1-r1@bench.test"}`, 200},
		{"no token", "", "bench", `{"email":"a@bench.test"}`, 401},
		{"unknown token", "guess", "bench", `{"email":"a@bench.test"}`, 401},
		{"expired token", "expired", "bench", `{"email":"a@bench.test"}`, 401},
		{"scope missing", "noscope", "bench", `{"email":"a@bench.test"}`, 401},
		{"bad email", "good", "bench", `{"email":"not an email"}`, 400},
		{"email not a string", "good", "bench", `{"email":7}`, 400},
		{"no workspace header", "good", "", `{"email":"a@bench.test"}`, 400},
	} {
		t.Run(c.name, func(t *testing.T) {
			req := httptest.NewRequestWithContext(context.Background(), "POST", "/v0/users", strings.NewReader(c.body))
			req.Header.Set("Content-Type", "application/json")
			if c.workspace != "" {
				req.Header.Set("X-Blaxel-Workspace", c.workspace)
			}
			if c.token != "" {
				req.Header.Set("Authorization", "Bearer "+c.token)
			}
			rec := httptest.NewRecorder()
			e.ServeHTTP(rec, req)
			if rec.Code != c.want {
				t.Fatalf("got %d %s, want %d", rec.Code, rec.Body, c.want)
			}
			var got map[string]any
			if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
				t.Fatalf("body is not JSON: %s", rec.Body)
			}
			if c.want == http.StatusOK && (got["email"] != "u1-1-r1@bench.test" || got["workspace"] != "bench") {
				t.Errorf("got %v, want the invitation of u1-1-r1@bench.test in bench", got)
			}
			if c.want != http.StatusOK && got["code"] != float64(c.want) {
				t.Errorf("got error body %v, want code %d", got, c.want)
			}
		})
	}
}
