package keyring

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// ReadFile reads a keyring from a file of keys, one per line, the sealing
// one first; blank lines and # comments are skipped.
func ReadFile(path string) (*Keyring, error) {
	raw, err := os.ReadFile(path) //nolint:gosec // G304: the operator names the file
	if err != nil {
		return nil, err
	}
	var keys []string
	for line := range strings.SplitSeq(string(raw), "\n") {
		if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
			keys = append(keys, line)
		}
	}
	return Parse(keys)
}

// LoadOrCreateFile reads the keyring of path, making the file (mode 0600,
// one new key, its directory 0700) if it does not exist. O_EXCL: of two
// processes starting at once, both use the first key written.
func LoadOrCreateFile(path string) (*Keyring, error) {
	k, err := ReadFile(path)
	if err == nil {
		return k, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("secrets key %s: %w", path, err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("create directory of %s: %w", path, err)
	}
	key, err := Generate()
	if err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600) //nolint:gosec // G304: a fixed name in the operator's directory
	if errors.Is(err, fs.ErrExist) {
		return ReadFile(path)
	}
	if err == nil {
		_, err = f.WriteString("# controlplane secrets key: back it up apart from the database; without it the OAuth signing keys and webhook secrets stored there cannot be read\n" + key + "\n")
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		return nil, fmt.Errorf("write secrets key %s: %w", path, err)
	}
	return ReadFile(path)
}
