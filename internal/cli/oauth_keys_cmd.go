package cli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/peterbourgon/ff/v3/ffcli"

	"github.com/membership-api/controlplane/auth"
	"github.com/membership-api/controlplane/store"
)

// oauthKeysRotateConfig is every flag of `oauth-keys rotate`.
type oauthKeysRotateConfig struct {
	data  dataConfig
	delay time.Duration
}

func (c *oauthKeysRotateConfig) bind(fs *flag.FlagSet) {
	c.data.bind(fs)
	fs.DurationVar(&c.delay, "delay", auth.MinRotationDelay(auth.DefaultKeyRefresh),
		"how long the new key is published before it signs: at least the JWKS max-age plus serve's --oauth-key-refresh, so every verifier knows it first")
}

func oauthKeysCommand(stdout, stderr io.Writer) *ffcli.Command {
	rotateFS := newFlagSet("oauth-keys rotate")
	var rotateCfg oauthKeysRotateConfig
	rotateCfg.bind(rotateFS)
	rotate := &ffcli.Command{
		Name: "rotate", ShortUsage: "controlplane oauth-keys rotate [--delay D]",
		ShortHelp: "add a new token signing key (published now, signing after --delay); prints its kid",
		FlagSet:   rotateFS, Options: envOptions(),
		Exec: func(ctx context.Context, _ []string) error { return rotateOAuthKey(ctx, rotateCfg, stdout, stderr) },
	}
	listFS := newFlagSet("oauth-keys list")
	var listCfg dataConfig
	listCfg.bind(listFS)
	list := &ffcli.Command{
		Name: "list", ShortUsage: "controlplane oauth-keys list", ShortHelp: "list the token signing keys",
		FlagSet: listFS, Options: envOptions(),
		Exec: func(ctx context.Context, _ []string) error { return listOAuthKeys(ctx, listCfg, stdout) },
	}
	return &ffcli.Command{Name: "oauth-keys", ShortUsage: "controlplane oauth-keys rotate|list ...",
		ShortHelp: "manage the keys that sign service-account access tokens",
		FlagSet:   newFlagSet("oauth-keys"), Subcommands: []*ffcli.Command{rotate, list},
		Exec: groupExec("controlplane oauth-keys rotate|list ...")}
}

// rotateOAuthKey adds the next signing key. The key it follows keeps
// signing until the new one starts and stays published until its last
// token expired (serve computes both from the keys' times); keys retired
// longer than auth.RetiredKeyRetention ago are deleted.
func rotateOAuthKey(ctx context.Context, cfg oauthKeysRotateConfig, stdout, stderr io.Writer) error {
	if cfg.delay < 0 {
		return fmt.Errorf("--delay %s must not be negative", cfg.delay)
	}
	if minimum := auth.MinRotationDelay(auth.DefaultKeyRefresh); cfg.delay < minimum {
		note(stderr, "warning: --delay %s is under %s (JWKS max-age plus the default key refresh): a verifier that cached the JWKS or a replica that has not re-read the keys may refuse the new key's first tokens\n", cfg.delay, minimum)
	}
	key, err := auth.NewSigningKey("cli")
	if err != nil {
		return err
	}
	return cfg.data.withStore(ctx, func(st *store.Store) error {
		stored, err := st.AddSigningKey(ctx, key, cfg.delay, time.Now().Add(-auth.RetiredKeyRetention))
		if err != nil {
			return err
		}
		if _, err := fmt.Fprintln(stdout, stored.KID); err != nil {
			return err
		}
		note(stderr, "signing key %s (generation %d) published; it signs from %s\n", stored.KID, stored.Generation, stored.SignFrom.Format(time.RFC3339))
		return nil
	})
}

func listOAuthKeys(ctx context.Context, cfg dataConfig, stdout io.Writer) error {
	return cfg.withStore(ctx, func(st *store.Store) error {
		keys, err := st.SigningKeys(ctx)
		if err != nil {
			return err
		}
		w := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		if _, err := fmt.Fprintln(w, "GENERATION\tKID\tALG\tSIGNS FROM\tCREATED BY"); err != nil {
			return err
		}
		for _, k := range keys {
			if _, err := fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%s\n", k.Generation, k.KID, k.Algorithm, k.SignFrom.UTC().Format(time.RFC3339), k.CreatedBy); err != nil {
				return err
			}
		}
		return w.Flush()
	})
}
