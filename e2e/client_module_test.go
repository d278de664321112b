package e2e_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestClientModule: the generated client is a module others can import.
// A separate small module, using it through a replace directive
// as a consumer's go.mod would through go get, invites someone and lists the
// workspace against a running server; the client's dependencies stay out of
// the server's (no Echo, no kin-openapi, no server package).
func TestClientModule(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds a separate module (-short)")
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command on PATH")
	}
	clientDir, err := filepath.Abs("../client")
	if err != nil {
		t.Fatal(err)
	}
	f := newTenant(t, "sqlite")
	token := f.userToken(f.adminSub, f.adminEmail)

	dir := t.TempDir()
	write := func(name, content string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("go.mod", `module example.test/consumer

go 1.26.0

require github.com/membership-api/controlplane/client v0.0.0

replace github.com/membership-api/controlplane/client => `+clientDir+"\n")
	write("main.go", `package main

import (
	"context"
	"fmt"
	"net/http"
	"os"

	"github.com/membership-api/controlplane/client"
)

func main() {
	auth := func(_ context.Context, req *http.Request) error {
		req.Header.Set("Authorization", "Bearer "+os.Getenv("CP_TOKEN"))
		req.Header.Set("X-Blaxel-Workspace", os.Getenv("CP_WORKSPACE"))
		return nil
	}
	c, err := client.NewClientWithResponses(os.Getenv("CP_URL"), client.WithRequestEditorFn(auth))
	if err != nil {
		panic(err)
	}
	email := "from-client@example.com"
	inv, err := c.InviteWorkspaceUserWithResponse(context.Background(), nil, client.InviteWorkspaceUserJSONRequestBody{Email: &email})
	if err != nil || inv.JSON200 == nil {
		fmt.Println("invite failed:", err, inv.StatusCode(), string(inv.Body))
		os.Exit(1)
	}
	users, err := c.ListWorkspaceUsersWithResponse(context.Background(), nil)
	if err != nil || users.JSON200 == nil {
		fmt.Println("list failed:", err)
		os.Exit(1)
	}
	for _, u := range *users.JSON200 {
		if u.Email != nil {
			fmt.Println(*u.Email)
		}
	}
}
`)
	goCmd := func(args ...string) string {
		t.Helper()
		cmd := exec.CommandContext(context.Background(), goBin, args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "CP_URL="+f.srv.URL+"/v0", "CP_TOKEN="+token, "CP_WORKSPACE="+f.ws, "GOFLAGS=-mod=mod")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	goCmd("mod", "tidy")
	for _, dep := range strings.Fields(goCmd("list", "-deps", ".")) {
		for _, banned := range []string{"labstack/echo", "getkin/kin-openapi", "gorm.io", "github.com/membership-api/controlplane/server", "github.com/membership-api/controlplane/store"} {
			if strings.Contains(dep, banned) {
				t.Errorf("the client drags in %s", dep)
			}
		}
	}
	out := goCmd("run", ".")
	if !strings.Contains(out, "from-client@example.com") || !strings.Contains(out, f.adminEmail) {
		t.Errorf("the consumer's list does not hold the invitee and the admin:\n%s", out)
	}
}
