package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"text/tabwriter"

	"github.com/peterbourgon/ff/v3/ffcli"

	"github.com/membership-api/controlplane/store"
)

func migrateCommand(stdout, stderr io.Writer) *ffcli.Command {
	statusFS := newFlagSet("migrate status")
	var statusCfg dataConfig
	statusCfg.bind(statusFS)
	status := &ffcli.Command{
		Name: "status", ShortUsage: "controlplane migrate status [flags]",
		ShortHelp: "print the schema versions applied (and when) and pending; changes nothing",
		FlagSet:   statusFS, Options: envOptions(),
		Exec: func(ctx context.Context, _ []string) error { return migrationStatus(ctx, statusCfg, stdout) },
	}
	fs := newFlagSet("migrate")
	var cfg dataConfig
	cfg.bind(fs)
	return &ffcli.Command{
		Name: "migrate", ShortUsage: "controlplane migrate [status] [flags]",
		ShortHelp: "create or upgrade the database schema (idempotent)",
		FlagSet:   fs, Options: envOptions(), Subcommands: []*ffcli.Command{status},
		Exec: func(ctx context.Context, args []string) error {
			if len(args) > 0 {
				return fmt.Errorf("migrate: unknown argument %q (usage: controlplane migrate [status] [flags])", args[0])
			}
			// Opening the store migrates it.
			return cfg.withStore(ctx, func(st *store.Store) error {
				v, err := st.SchemaVersion(ctx)
				if err != nil {
					return err
				}
				note(stderr, "schema up to date: version %d (%s)\n", v, st.Dialect())
				return nil
			})
		},
	}
}

// migrationStatus prints one tab-separated line per version (version,
// name, applied or pending, when), then the database's version and what
// to do. A version applied by a newer release is listed as unknown.
func migrationStatus(ctx context.Context, cfg dataConfig, stdout io.Writer) (err error) {
	st, err := cfg.openWith(ctx, store.Hooks{}, slog.Default(), nil)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, st.Close()) }()
	states, err := st.MigrationStatus(ctx)
	if err != nil {
		return err
	}
	// Written to a buffer (which cannot fail), then to stdout at once.
	var out bytes.Buffer
	w := tabwriter.NewWriter(&out, 0, 4, 2, ' ', 0)
	_, _ = fmt.Fprintln(w, "VERSION\tNAME\tSTATE\tAPPLIED AT")
	for _, m := range states {
		state, name := "pending", m.Name
		switch {
		case !m.Known:
			state, name = "applied", "(unknown: applied by a newer release)"
		case m.Applied:
			state = "applied"
		}
		_, _ = fmt.Fprintf(w, "%d\t%s\t%s\t%s\n", m.Version, name, state, m.AppliedAt)
	}
	_ = w.Flush() // into the buffer: cannot fail
	v, err := st.SchemaVersion(ctx)
	if err != nil {
		return err
	}
	switch check := st.CheckSchema(ctx); {
	case check == nil:
		_, _ = fmt.Fprintf(&out, "schema version %d (%s): up to date\n", v, st.Dialect())
	case errors.Is(check, store.ErrSchemaPending):
		_, _ = fmt.Fprintf(&out, "schema version %d (%s), this binary's is %d: run controlplane migrate\n", v, st.Dialect(), store.LatestSchemaVersion())
	default:
		_, _ = fmt.Fprintf(&out, "schema version %d (%s): %v\n", v, st.Dialect(), check)
	}
	_, err = stdout.Write(out.Bytes())
	return err
}
