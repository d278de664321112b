package cli

// The backup and restore commands: a checked copy of the SQLite database
// taken while servers run, and its way back into a data directory no
// process holds (store.Backup, store.Restore). PostgreSQL has pg_dump.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/peterbourgon/ff/v3/ffcli"

	"github.com/membership-api/controlplane/store"
)

func backupCommand(stdout, stderr io.Writer) *ffcli.Command {
	fs := newFlagSet("backup")
	var data dataConfig
	data.bind(fs)
	to := fs.String("to", "", "the backup file to write (must not exist)")
	return &ffcli.Command{
		Name: "backup", ShortUsage: "controlplane backup --to FILE [flags]",
		ShortHelp: "copy the SQLite database to a new file while servers run, and check it",
		LongHelp: "The copy is one consistent snapshot (SQLite's VACUUM INTO): servers go on serving and writing " +
			"meanwhile. It is checked (PRAGMA integrity_check) and every table's rows are counted before it is " +
			"kept; an existing file is never overwritten. On PostgreSQL use pg_dump.",
		FlagSet: fs, Options: envOptions(),
		Exec: func(ctx context.Context, _ []string) error {
			if *to == "" {
				return errors.New("--to is required: the backup file to write")
			}
			if err := checkDB(data.db); err != nil {
				return err
			}
			r, err := store.Backup(ctx, data.dsn(), *to)
			if err != nil {
				return err
			}
			note(stderr, "backup: wrote %s (%d bytes): integrity ok, %d tables\n", r.Path, r.Bytes, len(r.Tables))
			return printTableRows(stdout, r.Tables)
		},
	}
}

func restoreCommand(stdout, stderr io.Writer) *ffcli.Command {
	fs := newFlagSet("restore")
	var data dataConfig
	data.bind(fs)
	from := fs.String("from", "", "the backup file to restore (from controlplane backup)")
	return &ffcli.Command{
		Name: "restore", ShortUsage: "controlplane restore --from FILE [flags]",
		ShortHelp: "replace the SQLite database with a checked backup (never one in use)",
		LongHelp: "The backup is checked (PRAGMA integrity_check, the tables of a controlplane database) before anything " +
			"changes, then copied beside the database, fsynced and renamed over it. Stop every serve, worker and " +
			"command using the database first: restore refuses while one holds it (its lock file, <db>.lock).",
		FlagSet: fs, Options: envOptions(),
		Exec: func(ctx context.Context, _ []string) error {
			if *from == "" {
				return errors.New("--from is required: the backup file to restore")
			}
			if err := checkDB(data.db); err != nil {
				return err
			}
			r, err := store.Restore(ctx, *from, data.dsn())
			if err != nil {
				return err
			}
			note(stderr, "restore: %s restored from %s (%d bytes): integrity ok, %d tables\n", r.Path, *from, r.Bytes, len(r.Tables))
			return printTableRows(stdout, r.Tables)
		},
	}
}

// printTableRows prints each table and its rows, one a line.
func printTableRows(w io.Writer, tables []store.TableRows) error {
	tw := tabwriter.NewWriter(w, 0, 2, 2, ' ', 0)
	for _, t := range tables {
		if _, err := fmt.Fprintf(tw, "%s\t%d\n", t.Table, t.Rows); err != nil {
			return err
		}
	}
	return tw.Flush()
}
