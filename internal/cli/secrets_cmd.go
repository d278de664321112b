package cli

// The secrets command: rotate (re-encrypt every stored secret under the
// first --secrets-key, converting those stored in the clear), status, and
// generate-key (docs/operations/secrets.md).

import (
	"context"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/peterbourgon/ff/v3/ffcli"

	"github.com/membership-api/controlplane/internal/keyring"
	"github.com/membership-api/controlplane/store"
)

// secretsRotateConfig is every flag of `secrets rotate`.
type secretsRotateConfig struct {
	data  dataConfig
	batch int
}

func (c *secretsRotateConfig) bind(fs *flag.FlagSet) {
	c.data.bind(fs)
	fs.IntVar(&c.batch, "batch", store.DefaultSecretsBatch, "rows re-encrypted per transaction")
}

func secretsCommand(stdout io.Writer) *ffcli.Command {
	rotateFS := newFlagSet("secrets rotate")
	var rotateCfg secretsRotateConfig
	rotateCfg.bind(rotateFS)
	rotate := &ffcli.Command{
		Name: "rotate", ShortUsage: "controlplane secrets rotate --secrets-key NEW,OLD...",
		ShortHelp: "re-encrypt the stored secrets under the first --secrets-key; safe while servers run",
		FlagSet:   rotateFS, Options: envOptions(),
		Exec: func(ctx context.Context, _ []string) error { return rotateSecrets(ctx, rotateCfg, stdout) },
	}
	statusFS := newFlagSet("secrets status")
	var statusCfg dataConfig
	statusCfg.bind(statusFS)
	status := &ffcli.Command{
		Name: "status", ShortUsage: "controlplane secrets status",
		ShortHelp: "count the stored secrets by the key that encrypts them",
		FlagSet:   statusFS, Options: envOptions(),
		Exec: func(ctx context.Context, _ []string) error { return secretsStatus(ctx, statusCfg, stdout) },
	}
	generate := &ffcli.Command{
		Name: "generate-key", ShortUsage: "controlplane secrets generate-key",
		ShortHelp: "print a new random key for --secrets-key (base64 of 32 bytes)",
		FlagSet:   newFlagSet("secrets generate-key"),
		Exec: func(context.Context, []string) error {
			key, err := keyring.Generate()
			if err == nil {
				_, err = fmt.Fprintln(stdout, key)
			}
			return err
		},
	}
	const usage = "controlplane secrets rotate|status|generate-key ..."
	return &ffcli.Command{Name: "secrets", ShortUsage: usage,
		ShortHelp: "the keys encrypting signing keys and webhook secrets in the database",
		FlagSet:   newFlagSet("secrets"), Subcommands: []*ffcli.Command{rotate, status, generate},
		Exec: groupExec(usage)}
}

// rotateSecrets re-seals every stored secret under the first key and
// prints what it did.
func rotateSecrets(ctx context.Context, cfg secretsRotateConfig, stdout io.Writer) error {
	if cfg.batch <= 0 {
		return fmt.Errorf("--batch %d must be positive", cfg.batch)
	}
	return cfg.data.withStore(ctx, func(st *store.Store) error {
		res, err := st.RotateSecrets(ctx, cfg.batch)
		if _, werr := fmt.Fprintf(stdout, "re-encrypted %d secrets under key %s (%d were stored in the clear); %d were already\n",
			res.Sealed, st.SecretsKeyID(), res.Converted, res.Current); werr != nil && err == nil {
			err = werr
		}
		return err
	})
}

// secretsStatus prints the stored secrets by key.
func secretsStatus(ctx context.Context, cfg dataConfig, stdout io.Writer) error {
	return cfg.withStore(ctx, func(st *store.Store) error {
		status, err := st.CheckSecrets(ctx)
		if err != nil {
			return err
		}
		for _, kind := range []struct {
			name   string
			counts map[string]int
		}{{"signing keys", status.SigningKeys}, {"webhook secrets", status.WebhookSecrets}} {
			ids := make([]string, 0, len(kind.counts))
			for id := range kind.counts {
				ids = append(ids, id)
			}
			slices.Sort(ids)
			var parts []string
			for _, id := range ids {
				label := "key " + id
				if id == "" {
					label = "in the clear"
				}
				parts = append(parts, fmt.Sprintf("%d %s", kind.counts[id], label))
			}
			if len(parts) == 0 {
				parts = []string{"none"}
			}
			if _, err := fmt.Fprintf(stdout, "%s: %s\n", kind.name, strings.Join(parts, ", ")); err != nil {
				return err
			}
		}
		first := st.SecretsKeyID()
		if first == "" {
			first = "none (new secrets are stored in the clear)"
		}
		_, err = fmt.Fprintf(stdout, "encrypting key: %s\n", first)
		return err
	})
}
