package cli

import (
	"os"
	"testing"
)

const flagReferenceFile = "../../docs/operations/flags.md"

// The committed flag reference is what the flag definitions render; with
// UPDATE_DOCS=1 the test writes it instead.
func TestFlagReference(t *testing.T) {
	want := flagReference()
	if os.Getenv("UPDATE_DOCS") == "1" {
		if err := os.WriteFile(flagReferenceFile, []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	got, err := os.ReadFile(flagReferenceFile)
	if err != nil {
		t.Fatalf("%v: generate it with %s", err, flagReferenceRegenerate)
	}
	if string(got) != want {
		t.Fatalf("docs/operations/flags.md is not what the flag definitions render: run %s and commit it", flagReferenceRegenerate)
	}
}
