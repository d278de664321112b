package controlplanetest_test

import (
	"context"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/membership-api/controlplane/controlplanetest"
	"github.com/membership-api/controlplane/gen"
)

// TestInvitationWalk: invite, read the accept link from the mailbox,
// accept as the invitee, then move the clock past a second invitation's
// expiry and see it expired, on SQLite and (with TEST_POSTGRES_DSN)
// PostgreSQL.
func TestInvitationWalk(t *testing.T) {
	t.Parallel()
	for _, dialect := range []string{"sqlite", "postgres"} {
		t.Run(dialect, func(t *testing.T) {
			t.Parallel()
			var opts []controlplanetest.Option
			if dialect == "postgres" {
				dsn := os.Getenv("TEST_POSTGRES_DSN")
				if dsn == "" {
					t.Skip("TEST_POSTGRES_DSN is not set")
				}
				opts = append(opts, controlplanetest.WithPostgres(dsn))
			}
			walk(t, controlplanetest.Start(t, opts...))
		})
	}
}

func walk(t *testing.T, srv *controlplanetest.Server) {
	ctx := context.Background()
	ws := srv.CreateWorkspace("acme")
	admin := srv.Client(ws.AdminToken, ws.Name)

	bob := "bob@example.com"
	inv, err := admin.InviteWorkspaceUserWithResponse(ctx, nil, gen.InviteWorkspaceUserJSONRequestBody{Email: &bob})
	if err != nil || inv.StatusCode() != http.StatusOK {
		t.Fatalf("invite: %v %d %s", err, inv.StatusCode(), inv.Body)
	}
	mails := srv.Emails(bob)
	if len(mails) != 1 {
		t.Fatalf("got %d emails to %s, want 1", len(mails), bob)
	}
	link, err := url.Parse(mails[0].AcceptURL)
	if err != nil || !strings.Contains(mails[0].Text, mails[0].AcceptURL) {
		t.Fatalf("accept link %q (in the text: %v)", mails[0].AcceptURL, strings.Contains(mails[0].Text, mails[0].AcceptURL))
	}
	workspace := link.Path[strings.LastIndexByte(link.Path, '/')+1:]
	if workspace != ws.Name || mails[0].Workspace != ws.Name {
		t.Fatalf("the link names workspace %q (email: %q), want %q", workspace, mails[0].Workspace, ws.Name)
	}
	invitee := srv.Client(srv.Token("bob", bob), "")
	join, err := invitee.AcceptWorkspaceInvitationWithResponse(ctx, workspace)
	if err != nil || join.StatusCode() != http.StatusOK {
		t.Fatalf("accept: %v %d %s", err, join.StatusCode(), join.Body)
	}

	carol := "carol@example.com"
	if inv, err := admin.InviteWorkspaceUserWithResponse(ctx, nil, gen.InviteWorkspaceUserJSONRequestBody{Email: &carol}); err != nil || inv.StatusCode() != http.StatusOK {
		t.Fatalf("invite carol: %v", err)
	}
	srv.Advance(8 * 24 * time.Hour)
	// The admin's token has expired with the clock too: a fresh one.
	admin = srv.Client(srv.Token(ws.AdminSub, ws.AdminEmail), ws.Name)
	users, err := admin.ListWorkspaceUsersWithResponse(ctx, nil)
	if err != nil || users.JSON200 == nil {
		t.Fatalf("list: %v", err)
	}
	var expired, member bool
	for _, u := range *users.JSON200 {
		switch {
		case u.Email != nil && *u.Email == carol:
			expired = u.Expired != nil && *u.Expired
		case u.Email != nil && *u.Email == bob:
			member = true
		}
	}
	if !expired || !member {
		t.Fatalf("after 8 days: carol's invitation expired %v, bob a member %v; want both", expired, member)
	}
	late := srv.Client(srv.Token("carol", carol), "")
	if join, err := late.AcceptWorkspaceInvitationWithResponse(ctx, ws.Name); err != nil || join.StatusCode() != http.StatusNotFound {
		t.Fatalf("accepting an expired invitation: %v %d, want 404", err, join.StatusCode())
	}
}

// TestStartToReady measures Start until the server answers /readyz (the
// figure is logged; tests assert no timing).
func TestStartToReady(t *testing.T) {
	t.Parallel()
	began := time.Now()
	srv := controlplanetest.Start(t)
	req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, srv.URL+"/readyz", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("readyz: %d", resp.StatusCode)
	}
	t.Logf("Start to ready: %v", time.Since(began))
}
