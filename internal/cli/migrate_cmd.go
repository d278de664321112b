package cli

import (
	"context"
	"io"

	"github.com/peterbourgon/ff/v3/ffcli"

	"github.com/membership-api/controlplane/store"
)

func migrateCommand(stderr io.Writer) *ffcli.Command {
	fs := newFlagSet("migrate")
	var cfg dataConfig
	cfg.bind(fs)
	return &ffcli.Command{
		Name: "migrate", ShortUsage: "controlplane migrate [flags]", ShortHelp: "create or upgrade the database schema",
		FlagSet: fs, Options: envOptions(),
		Exec: func(ctx context.Context, _ []string) error {
			// Opening the store migrates it.
			return cfg.withStore(ctx, func(st *store.Store) error {
				note(stderr, "schema up to date (%s)\n", st.Dialect())
				return nil
			})
		},
	}
}
