package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/peterbourgon/ff/v3/ffcli"

	"github.com/membership-api/controlplane/store"
)

// apikeyCreateConfig is every flag of `apikey create`.
type apikeyCreateConfig struct {
	data      dataConfig
	workspace string
	sub       string
}

func (c *apikeyCreateConfig) bind(fs *flag.FlagSet) {
	c.data.bind(fs)
	fs.StringVar(&c.workspace, "workspace", "", "workspace the key is bound to (required)")
	fs.StringVar(&c.sub, "sub", "", "member the key acts as (required)")
}

func apikeyCommand(stdout, stderr io.Writer) *ffcli.Command {
	createFS := newFlagSet("apikey create")
	var createCfg apikeyCreateConfig
	createCfg.bind(createFS)
	create := &ffcli.Command{
		Name: "create", ShortUsage: "controlplane apikey create --workspace NAME --sub SUB",
		ShortHelp: "issue an API key (printed once on stdout)", FlagSet: createFS, Options: envOptions(),
		Exec: func(ctx context.Context, _ []string) error {
			return createAPIKey(ctx, createCfg, stdout, stderr)
		},
	}
	revokeFS := newFlagSet("apikey revoke")
	var revokeCfg dataConfig // revoke has no flags of its own
	revokeCfg.bind(revokeFS)
	revoke := &ffcli.Command{
		Name: "revoke", ShortUsage: "controlplane apikey revoke KEY", ShortHelp: "revoke an API key at once",
		FlagSet: revokeFS, Options: envOptions(),
		Exec: func(ctx context.Context, args []string) error {
			args, err := interspersed(revokeFS, args)
			if err != nil {
				return err
			}
			if len(args) != 1 {
				return errors.New("apikey revoke needs exactly one KEY")
			}
			return revokeAPIKey(ctx, revokeCfg, args[0], stderr)
		},
	}
	return &ffcli.Command{Name: "apikey", ShortUsage: "controlplane apikey create|revoke ...", ShortHelp: "manage API keys",
		FlagSet: newFlagSet("apikey"), Subcommands: []*ffcli.Command{create, revoke},
		Exec: groupExec("controlplane apikey create|revoke ...")}
}

// createAPIKey issues a key and prints it alone on stdout: it is stored
// only as a hash, so this is the one time anyone sees it.
func createAPIKey(ctx context.Context, cfg apikeyCreateConfig, stdout, stderr io.Writer) error {
	if cfg.workspace == "" || cfg.sub == "" {
		return errors.New("--workspace and --sub are required")
	}
	return cfg.data.withStore(ctx, func(st *store.Store) error {
		key, _, err := st.CreateAPIKey(store.WithActor(ctx, cliActor), cfg.workspace, cfg.sub)
		if err != nil {
			return err
		}
		// The key exists now; if it cannot be shown, the command must fail so
		// that the operator revokes it and creates another.
		if _, err := fmt.Fprintln(stdout, key); err != nil {
			return fmt.Errorf("API key created but not printed (revoke it): %w", err)
		}
		note(stderr, "API key created; it is shown only this once\n")
		return nil
	})
}

func revokeAPIKey(ctx context.Context, cfg dataConfig, key string, stderr io.Writer) error {
	return cfg.withStore(ctx, func(st *store.Store) error {
		if err := st.RevokeAPIKey(store.WithActor(ctx, cliActor), "cli", key); err != nil {
			return err
		}
		note(stderr, "API key revoked\n")
		return nil
	})
}
