package cli

// The copy command: every row of one database into another, empty and
// migrated one (SQLite to PostgreSQL, or back), checked table by table
// (store.Copy).

import (
	"context"
	"errors"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/peterbourgon/ff/v3/ffcli"

	"github.com/membership-api/controlplane/store"
)

func copyCommand(stdout, stderr io.Writer) *ffcli.Command {
	fs := newFlagSet("copy")
	from := fs.String("from", "", "the database to copy: "+store.DSNForms)
	to := fs.String("to", "", "the database to fill, migrated and empty (controlplane migrate --db TARGET)")
	batch := fs.Int("batch-size", 1000, "rows read and written per statement")
	return &ffcli.Command{
		Name: "copy", ShortUsage: "controlplane copy --from DSN --to DSN [flags]",
		ShortHelp: "copy every row into an empty, migrated database (SQLite to PostgreSQL or back)",
		LongHelp: "Stop every serve, mail-worker and webhook-worker of the source first, and start servers only on the " +
			"target afterwards: queued emails and webhooks are then delivered once, from the target. copy refuses a " +
			"SQLite database a process holds, a source whose messages are being delivered, a target that is not " +
			"empty or not migrated, and schemas of different versions. The target is written in one transaction; " +
			"afterwards every table's rows and checksum are compared with the source's.",
		FlagSet: fs, Options: envOptions(),
		Exec: func(ctx context.Context, _ []string) error {
			if *from == "" || *to == "" {
				return errors.New("--from and --to are required: the database to copy and the one to fill")
			}
			if *from == *to {
				return errors.New("--from and --to name the same database")
			}
			for _, dsn := range []string{*from, *to} {
				if err := checkDB(dsn); err != nil {
					return err
				}
				// Before opening: opening a missing SQLite file creates it.
				if err := store.CheckIdle(dsn); err != nil {
					if dsn == *to {
						return fmt.Errorf("target: %w (create it with controlplane migrate --db %s)", err, dsn)
					}
					return fmt.Errorf("source: %w", err)
				}
			}
			return runCopy(ctx, *from, *to, *batch, stdout, stderr)
		},
	}
}

func runCopy(ctx context.Context, fromDSN, toDSN string, batch int, stdout, stderr io.Writer) (err error) {
	from, err := store.Open(ctx, fromDSN, store.Options{MaxOpenConns: 2})
	if err != nil {
		return fmt.Errorf("source: %w", err)
	}
	defer func() { err = errors.Join(err, from.Close()) }()
	to, err := store.Open(ctx, toDSN, store.Options{MaxOpenConns: 2})
	if err != nil {
		return fmt.Errorf("target: %w", err)
	}
	defer func() { err = errors.Join(err, to.Close()) }()
	note(stderr, "copy: %s (%s) → %s (%s)\n", store.RedactDSN(fromDSN), from.Dialect(), store.RedactDSN(toDSN), to.Dialect())
	start := time.Now()
	last := map[string]time.Duration{}
	report, err := store.Copy(ctx, from, to, store.CopyOptions{BatchSize: batch, Progress: func(p store.CopyProgress) {
		// A line per table, and one every 5 s while a large one is copied.
		if p.Done || p.Elapsed-last[p.Table] >= 5*time.Second {
			last[p.Table] = p.Elapsed
			state := "copying"
			if p.Done {
				state = "copied"
			}
			note(stderr, "copy: %-18s %s %d of %d rows (%.1fs)\n", p.Table, state, p.Copied, p.Rows, p.Elapsed.Seconds())
		}
	}})
	if len(report.Tables) > 0 {
		if perr := printChecks(stdout, report.Tables); perr != nil {
			return errors.Join(err, perr)
		}
	}
	if err != nil {
		return err
	}
	note(stderr, "copy: %d rows in %.1fs; every table's rows and checksum match\n", report.Rows, time.Since(start).Seconds())
	// Values bound to the secrets key moved as stored (docs/operations/secrets.md).
	note(stderr, "copy: OAuth signing keys and webhook secrets were copied as stored: encrypted ones stay encrypted under the source's "+
		"secrets key; start the target's servers with that key (--secrets-key or --secrets-key-file; on SQLite it is the data directory's %s)\n", secretsKeyFile)
	return nil
}

// printChecks prints each table's rows and checksums in source and target.
func printChecks(w io.Writer, checks []store.TableCheck) error {
	tw := tabwriter.NewWriter(w, 0, 2, 2, ' ', 0)
	if _, err := fmt.Fprintln(tw, "TABLE\tSOURCE ROWS\tTARGET ROWS\tSOURCE SHA-256\tTARGET SHA-256\t"); err != nil {
		return err
	}
	for _, c := range checks {
		verdict := "ok"
		if !c.Match() {
			verdict = "DIFFERENT"
		}
		if _, err := fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%s\t%s\n", c.Table, c.SourceRows, c.TargetRows, c.SourceSum[:16], c.TargetSum[:16], verdict); err != nil {
			return err
		}
	}
	return tw.Flush()
}
