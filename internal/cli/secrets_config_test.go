package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/membership-api/controlplane/internal/keyring"
)

// TestSecretsConfig: where the keys come from, and refusals that name the
// flag and never show a key.
func TestSecretsConfig(t *testing.T) {
	t.Parallel()
	k1, _ := keyring.Generate()
	k2, _ := keyring.Generate()
	dir := t.TempDir()
	file := filepath.Join(dir, "keys")
	if err := os.WriteFile(file, []byte("# new first\n"+k2+"\n\n"+k1+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	raw1, _ := keyring.Decode(k1)
	raw2, _ := keyring.Decode(k2)

	kr, from, err := (&secretsConfig{keys: k1 + "," + k2}).keyring(dir, false)
	if err != nil || kr.PrimaryID() != keyring.KeyID(raw1) || len(kr.IDs()) != 2 || from != "--secrets-key" {
		t.Errorf("--secrets-key: %v %q %v", kr, from, err)
	}
	kr, _, err = (&secretsConfig{keyFile: file}).keyring(dir, false)
	if err != nil || kr.PrimaryID() != keyring.KeyID(raw2) || len(kr.IDs()) != 2 {
		t.Errorf("--secrets-key-file: %v %v", kr, err)
	}
	if kr, _, err := (&secretsConfig{}).keyring(dir, false); kr != nil || err != nil {
		t.Errorf("PostgreSQL without a key: %v %v, want none", kr, err)
	}
	data := filepath.Join(dir, "data")
	kr, from, err = (&secretsConfig{}).keyring(data, true)
	if err != nil || kr == nil || from != filepath.Join(data, secretsKeyFile) {
		t.Fatalf("SQLite without a key: %v %q %v, want the data directory's", kr, from, err)
	}
	again, _, _ := (&secretsConfig{}).keyring(data, true)
	if again.PrimaryID() != kr.PrimaryID() {
		t.Error("SQLite: a second start made another key")
	}

	for name, c := range map[string]secretsConfig{
		"both":      {keys: k1, keyFile: file},
		"malformed": {keys: k1 + "," + k1[:20]},
		"empty":     {keys: k1 + ","},
	} {
		_, _, err := c.keyring(dir, true)
		if err == nil || !strings.Contains(err.Error(), "--secrets-key") || strings.Contains(err.Error(), k1[:20]) {
			t.Errorf("%s: %v, want refused naming --secrets-key and not showing the key", name, err)
		}
	}
}
