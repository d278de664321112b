package e2e_test

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestControlPlaneTestModule: controlplanetest is usable from another
// module whose go.mod requires this one alone, as go get would write it
// (here through a replace directive in the consumer's go.mod, which is the
// consumer's to have): testdata/consumer's test (invite, read the accept
// link from the mailbox, accept, advance the clock past the expiry) passes
// there, and the packages it builds hold nothing of this repository's own
// tests (storetest, smtptest, e2e) nor a test framework. This module's own
// go.mod has no replace or exclude directive: `go install` and `go run` of
// module@version refuse a module with one.
func TestControlPlaneTestModule(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds a separate module (-short)")
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command on PATH")
	}
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	raw, err := os.ReadFile(filepath.Join("testdata", "consumer", "invitation_test.go"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "invitation_test.go"), raw, 0o644); err != nil {
		t.Fatal(err)
	}
	gomod := "module example.test/consumer\n\ngo 1.26.8\n\n" +
		"require github.com/membership-api/controlplane v0.0.0\n\n" +
		"replace github.com/membership-api/controlplane => " + root + "\n"
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte(gomod), 0o644); err != nil {
		t.Fatal(err)
	}
	goIn := func(dir string, args ...string) string {
		t.Helper()
		cmd := exec.CommandContext(context.Background(), goBin, args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	goCmd := func(args ...string) string { t.Helper(); return goIn(dir, args...) }

	var own struct {
		Require []struct{ Path string }
		Replace []struct{ Old struct{ Path string } }
		Exclude []struct{ Path string }
	}
	if err := json.Unmarshal([]byte(goIn(root, "mod", "edit", "-json")), &own); err != nil {
		t.Fatal(err)
	}
	for _, r := range own.Replace {
		t.Errorf("go.mod replaces %s: go install and go run of the module@version would fail for everyone", r.Old.Path)
	}
	for _, e := range own.Exclude {
		t.Errorf("go.mod excludes %s: go install and go run of the module@version would fail for everyone", e.Path)
	}
	for _, r := range own.Require {
		if strings.HasPrefix(r.Path, "github.com/membership-api/controlplane/") {
			t.Errorf("go.mod requires %s, which go get of this module cannot resolve before it is published", r.Path)
		}
	}

	goCmd("mod", "tidy")
	for _, dep := range strings.Fields(goCmd("list", "-deps", "-test", ".")) {
		for _, banned := range []string{"/storetest", "/smtptest", "controlplane/e2e", "testify", "chromedp", "testcontainers", "gomock"} {
			if strings.Contains(dep, banned) {
				t.Errorf("controlplanetest drags %s into its users' tests", dep)
			}
		}
	}
	direct := goCmd("list", "-m", "-f", "{{if not .Indirect}}{{.Path}}{{end}}", "all")
	for _, m := range strings.Fields(direct) {
		if m != "example.test/consumer" && m != "github.com/membership-api/controlplane" {
			t.Errorf("the consumer's go.mod requires %s directly", m)
		}
	}
	out := goCmd("test", "-count=1", "-v", ".")
	if !strings.Contains(out, "--- PASS: TestInvitationExpires") {
		t.Errorf("the consumer's test did not pass:\n%s", out)
	}
}
