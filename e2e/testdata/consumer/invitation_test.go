// A consumer's test of its own code against the real control plane, run
// in-process by controlplanetest (TestControlPlaneTestModule copies this
// module and runs go test in it; docs/api/testing.md shows it).
package consumer

import (
	"context"
	"net/http"
	"net/url"
	"path"
	"testing"
	"time"

	"github.com/membership-api/controlplane/controlplanetest"
	"github.com/membership-api/controlplane/gen"
)

func TestInvitationExpires(t *testing.T) {
	ctx := context.Background()
	srv := controlplanetest.Start(t)
	ws := srv.CreateWorkspace("acme")
	admin := srv.Client(ws.AdminToken, ws.Name)

	// Invite Bob; the invitation email is in the mailbox once the invite is answered.
	bob := "bob@example.com"
	inv, err := admin.InviteWorkspaceUserWithResponse(ctx, nil, gen.InviteWorkspaceUserJSONRequestBody{Email: &bob})
	if err != nil || inv.StatusCode() != http.StatusOK {
		t.Fatalf("invite: %v %d %s", err, inv.StatusCode(), inv.Body)
	}
	mails := srv.Emails(bob)
	if len(mails) != 1 {
		t.Fatalf("got %d emails to %s, want 1", len(mails), bob)
	}
	// The accept link names the workspace (…/invitations/acme?email=…).
	link, err := url.Parse(mails[0].AcceptURL)
	if err != nil {
		t.Fatal(err)
	}
	workspace := path.Base(link.Path)

	// Bob accepts with a token of his own.
	asBob := srv.Client(srv.Token("bob", bob), "")
	if res, err := asBob.AcceptWorkspaceInvitationWithResponse(ctx, workspace); err != nil || res.StatusCode() != http.StatusOK {
		t.Fatalf("accept: %v %d", err, res.StatusCode())
	}

	// Carol's invitation expires after 7 days of the server's clock.
	carol := "carol@example.com"
	if res, err := admin.InviteWorkspaceUserWithResponse(ctx, nil, gen.InviteWorkspaceUserJSONRequestBody{Email: &carol}); err != nil || res.StatusCode() != http.StatusOK {
		t.Fatalf("invite carol: %v", err)
	}
	srv.Advance(8 * 24 * time.Hour)
	asCarol := srv.Client(srv.Token("carol", carol), "")
	if res, err := asCarol.AcceptWorkspaceInvitationWithResponse(ctx, ws.Name); err != nil || res.StatusCode() != http.StatusNotFound {
		t.Fatalf("accepting after 8 days: %v %d, want 404", err, res.StatusCode())
	}
	// Tokens expire by the same clock: the admin needs a fresh one.
	admin = srv.Client(srv.Token(ws.AdminSub, ws.AdminEmail), ws.Name)
	users, err := admin.ListWorkspaceUsersWithResponse(ctx, nil)
	if err != nil || users.JSON200 == nil {
		t.Fatalf("list: %v", err)
	}
	for _, u := range *users.JSON200 {
		if u.Email != nil && *u.Email == carol && (u.Expired == nil || !*u.Expired) {
			t.Errorf("carol's invitation is not shown expired")
		}
	}
}
