package e2e_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestControlPlaneTestModule: controlplanetest is usable from another
// module, as a consumer's go.mod would have it through go get (here
// through replace directives): testdata/consumer's test (invite, read the
// accept link from the mailbox, accept, advance the clock past the
// expiry) passes there, and the packages it builds hold nothing of this
// repository's own tests (storetest, smtptest, e2e) nor a test framework.
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
		"require (\n\tgithub.com/membership-api/controlplane v0.0.0\n\tgithub.com/membership-api/controlplane/client v0.0.0\n)\n\n" +
		"replace github.com/membership-api/controlplane => " + root + "\n\n" +
		"replace github.com/membership-api/controlplane/client => " + filepath.Join(root, "client") + "\n"
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte(gomod), 0o644); err != nil {
		t.Fatal(err)
	}
	goCmd := func(args ...string) string {
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
		if m != "example.test/consumer" && !strings.HasPrefix(m, "github.com/membership-api/controlplane") {
			t.Errorf("the consumer's go.mod requires %s directly", m)
		}
	}
	out := goCmd("test", "-count=1", "-v", ".")
	if !strings.Contains(out, "--- PASS: TestInvitationExpires") {
		t.Errorf("the consumer's test did not pass:\n%s", out)
	}
}
