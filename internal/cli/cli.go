// Package cli is the controlplane command: it serves the Blaxel control
// plane's workspace-membership API (openapi/controlplane.yml) and administers
// its data. main.go at the module root only calls Main.
//
// Every flag can also be set through an environment variable: the flag name
// upper-cased with '-' as '_' and a CONTROLPLANE_ prefix (--data-dir is
// CONTROLPLANE_DATA_DIR). Flags win over the environment.
//
// One file per command (serve.go, migrate_cmd.go, workspace_cmd.go,
// apikey_cmd.go, token_cmd.go, oauth_keys_cmd.go, secrets_cmd.go, mail_cmd.go with
// mail-worker, mail-status and mail-retry, webhook_worker_cmd.go,
// backup_cmd.go with backup and restore, copy_cmd.go,
// observe.go for version); each
// command's flags fill one config struct through its bind method, and flag
// groups shared by several commands (dataConfig, logConfig, mailConfig) bind
// the same way. help.go prints every command's help (flags under the
// headings of flagGroups, and examples); flagreference.go renders the same
// definitions as docs/operations/flags.md.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/peterbourgon/ff/v3"
	"github.com/peterbourgon/ff/v3/ffcli"
)

const envPrefix = "CONTROLPLANE"

// Main runs the command line of the process (os.Args) until SIGINT or
// SIGTERM and exits with its code.
func Main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := Run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// Run executes one CLI command and returns the exit code. Errors are one
// line on stderr; output meant for scripts (keys, tokens) is stdout alone.
// The end-to-end tests call it in-process, as a user would run the binary.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	root := newRootCommand(stdout, stderr)
	if len(args) > 0 && args[0] == "help" {
		return printHelp(root, args[1:], stdout, stderr)
	}
	err := root.Parse(args)
	if errors.Is(err, flag.ErrHelp) {
		if _, err := fmt.Fprintln(stdout, usage(helpTarget(root, args))); err != nil {
			return 1
		}
		return 0
	}
	if err == nil {
		err = root.Run(ctx)
	}
	switch {
	case err == nil:
		return 0
	case errors.Is(err, errNoCommand):
		note(stderr, "%s\n", usage(root))
		return 2
	}
	// One line, whatever the cause (driver errors can span several).
	msg := strings.Join(strings.Fields(flagErrorMessage(err, helpTarget(root, args))), " ")
	note(stderr, "error: %s\n", msg)
	return 1
}

// printHelp answers controlplane help [COMMAND [SUBCOMMAND]] with what
// COMMAND --help prints.
func printHelp(root *ffcli.Command, args []string, stdout, stderr io.Writer) int {
	c, err := helpCommand(root, args)
	if err != nil {
		note(stderr, "error: %s\n", err)
		return 2
	}
	if _, err := fmt.Fprintln(stdout, usage(c)); err != nil {
		return 1
	}
	return 0
}

// flagErrorMessage is err's message, with a flag parsing error (from ff or
// the flag package, while parsing or in interspersed) reworded to name the
// flag as it is spelled in the help and to point at that help.
func flagErrorMessage(err error, c *ffcli.Command) string {
	msg := strings.TrimPrefix(err.Error(), "error parsing commandline arguments: ")
	helpHint := "run controlplane " + commandPath(c) + " --help"
	if commandPath(c) == "controlplane" {
		helpHint = "run controlplane --help"
	}
	if name, ok := strings.CutPrefix(msg, "flag provided but not defined: "); ok {
		return fmt.Sprintf("unknown flag --%s: %s for the flags it takes", strings.TrimLeft(name, "-"), helpHint)
	}
	// The flag package's other parse errors: a bad value, a missing one.
	if strings.HasPrefix(msg, "invalid value ") || strings.HasPrefix(msg, "invalid boolean ") || strings.HasPrefix(msg, "flag needs an argument: ") {
		return strings.ReplaceAll(msg, " -", " --") + " (" + helpHint + ")"
	}
	return msg
}

// note writes a status or error line for the operator on stderr. A failed
// write is not reported: stderr is where it would be reported, and the
// command's own outcome (its exit code, its stdout) does not depend on it.
func note(stderr io.Writer, format string, args ...any) {
	_, _ = fmt.Fprintf(stderr, format, args...)
}

var errNoCommand = errors.New("no command given")

func newRootCommand(stdout, stderr io.Writer) *ffcli.Command {
	fs := newFlagSet("controlplane")
	version := fs.Bool("version", false, "print the version and exit (as controlplane version)")
	return &ffcli.Command{
		Name:       "controlplane",
		ShortUsage: "controlplane <command> [flags]",
		LongHelp:   "Every flag can also be set as CONTROLPLANE_<FLAG_NAME> (e.g. CONTROLPLANE_DATA_DIR).",
		FlagSet:    fs,
		Subcommands: []*ffcli.Command{
			versionCommand(stdout),
			serveCommand(stdout, stderr),
			migrateCommand(stdout, stderr),
			workspaceCommand(stdout, stderr),
			apikeyCommand(stdout, stderr),
			tokenCommand(stdout),
			oauthKeysCommand(stdout, stderr),
			secretsCommand(stdout),
			mailWorkerCommand(stderr),
			webhookWorkerCommand(stderr),
			mailStatusCommand(stdout),
			mailRetryCommand(stdout),
			backupCommand(stdout, stderr),
			restoreCommand(stdout, stderr),
			copyCommand(stdout, stderr),
		},
		Exec: func(_ context.Context, args []string) error {
			if *version {
				_, err := fmt.Fprintln(stdout, readBuildInfo())
				return err
			}
			if len(args) == 0 {
				return errNoCommand
			}
			return fmt.Errorf("unknown command %q: run controlplane --help", args[0])
		},
	}
}

// helpTarget is the command whose usage --help should print.
func helpTarget(c *ffcli.Command, args []string) *ffcli.Command {
	for _, a := range args {
		for _, sub := range c.Subcommands {
			if a == sub.Name {
				return helpTarget(sub, args[1:])
			}
		}
	}
	return c
}

// groupExec is the Exec of a command that only holds subcommands.
func groupExec(usage string) func(context.Context, []string) error {
	return func(_ context.Context, args []string) error {
		if len(args) > 0 {
			return fmt.Errorf("unknown command %q: usage: %s", args[0], usage)
		}
		return fmt.Errorf("missing command: usage: %s", usage)
	}
}

// newFlagSet returns a flag set that reports errors instead of exiting and
// prints nothing itself: run prints usage and errors, once.
func newFlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return fs
}

func envOptions() []ff.Option { return []ff.Option{ff.WithEnvVarPrefix(envPrefix)} }

// interspersed parses flags that follow positional arguments (the flag
// package stops at the first one), so `workspace create NAME --admin-sub S`
// works as documented. It returns the positional arguments.
func interspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var positional []string
	for len(args) > 0 {
		positional = append(positional, args[0])
		if err := fs.Parse(args[1:]); err != nil {
			return nil, err
		}
		args = fs.Args()
	}
	return positional, nil
}
