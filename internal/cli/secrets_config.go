package cli

// The secrets key flags of every command that opens the store: the keys
// that encrypt the OAuth signing keys and webhook secrets in the database
// (store/secrets.go, docs/operations/secrets.md).

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"

	"github.com/membership-api/controlplane/internal/keyring"
	"github.com/membership-api/controlplane/store"
)

// secretsKeyFile is the key serve makes in the data directory on SQLite
// when none is given, beside the development issuer's key.
const secretsKeyFile = "secrets.key"

// secretsConfig is where the secrets keys come from.
type secretsConfig struct {
	keys    string
	keyFile string
}

// bind binds the flags. Plain strings, checked after parsing: a flag.Value
// that refused a bad key would have the flag package quote it in its error.
func (c *secretsConfig) bind(fs *flag.FlagSet) {
	fs.StringVar(&c.keys, "secrets-key", "", "keys encrypting the OAuth signing keys and webhook secrets in the database: comma-separated base64 of 32 bytes "+
		"(controlplane secrets generate-key), the first encrypts, all decrypt (default on SQLite: <data-dir>/"+secretsKeyFile+", made on first use; on PostgreSQL: none, stored in the clear)")
	fs.StringVar(&c.keyFile, "secrets-key-file", "", "read the --secrets-key keys from this file instead, one per line (# starts a comment)")
}

// keyring is the keyring of the keys given, else on SQLite the data
// directory's key (made on first use), else nil: PostgreSQL without a key
// stores the secrets in the clear, as before. source says where the keys
// came from, for the log.
func (c *secretsConfig) keyring(dataDir string, sqlite bool) (kr *keyring.Keyring, source string, err error) {
	switch {
	case c.keys != "" && c.keyFile != "":
		return nil, "", fmt.Errorf("set one of %s and --secrets-key-file, not both", store.SecretsKeyFlag)
	case c.keys != "":
		kr, err := keyring.Parse(strings.Split(c.keys, ","))
		if err != nil {
			return nil, "", fmt.Errorf("%s: %w", store.SecretsKeyFlag, err)
		}
		return kr, store.SecretsKeyFlag, nil
	case c.keyFile != "":
		kr, err := keyring.ReadFile(c.keyFile)
		if err != nil {
			return nil, "", fmt.Errorf("--secrets-key-file %s: %w", c.keyFile, err)
		}
		return kr, "--secrets-key-file", nil
	case sqlite:
		path := filepath.Join(dataDir, secretsKeyFile)
		kr, err := keyring.LoadOrCreateFile(path)
		if err != nil {
			return nil, "", fmt.Errorf("%w (give the key with %s, or move the file away to make a new one: the secrets it encrypted are then lost)", err, store.SecretsKeyFlag)
		}
		return kr, path, nil
	}
	return nil, "", nil
}

// checkSecretsAtStart opens one stored secret of each kind per key, so a
// missing or wrong key stops the process now, naming the flag, rather than
// failing token requests and deliveries later. On SQLite (one machine, no
// replica that could lack the key) it also encrypts what is still stored
// in the clear or under an older key; on PostgreSQL that is `secrets
// rotate`'s job, once every replica has the key. It returns whether the
// secrets are stored in the clear.
func checkSecretsAtStart(ctx context.Context, st *store.Store, source string, log *slog.Logger) (inTheClear bool, err error) {
	status, err := st.CheckSecrets(ctx)
	if err != nil {
		return false, err
	}
	if !st.SecretsEncrypted() {
		log.Warn("secrets: the OAuth signing keys and webhook secrets are stored in the clear: whoever reads the database (a dump, a backup, a replica) can mint tokens and forge webhooks; set "+
			store.SecretsKeyFlag+" (docs/operations/secrets.md)", "in_the_clear", status.Plaintext())
		return true, nil
	}
	// Rotation reads every secret: only when the counts just taken show a
	// value that is not yet under the first key (not at every start).
	if store.Dialect(st.Dialect()) == store.SQLite && !allUnder(st.SecretsKeyID(), status.SigningKeys, status.WebhookSecrets) {
		res, err := st.RotateSecrets(ctx, 0)
		if err != nil {
			return false, err
		}
		if res.Sealed > 0 {
			log.Info("secrets: encrypted under the first key", "values", res.Sealed, "were_in_the_clear", res.Converted)
		}
		status.SigningKeys, status.WebhookSecrets = nil, nil
	}
	log.Info("secrets: stored encrypted", "key_id", st.SecretsKeyID(), "keys_from", source, "in_the_clear", status.Plaintext())
	if status.Plaintext() > 0 {
		log.Warn("secrets: some are still stored in the clear: run `controlplane secrets rotate` once every replica has the key", "in_the_clear", status.Plaintext())
	}
	return false, nil
}

// allUnder tells whether every counted value (counts by sealing key id, ""
// for plaintext) is sealed under key id.
func allUnder(id string, counts ...map[string]int) bool {
	for _, byKey := range counts {
		for k, n := range byKey {
			if k != id && n > 0 {
				return false
			}
		}
	}
	return true
}
