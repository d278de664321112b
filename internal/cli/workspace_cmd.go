package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/peterbourgon/ff/v3/ffcli"

	"github.com/membership-api/controlplane/store"
)

// workspaceCreateConfig is every flag of `workspace create`.
type workspaceCreateConfig struct {
	data        dataConfig
	adminSub    string
	adminEmail  string
	displayName string
	allowLocal  bool
}

func (c *workspaceCreateConfig) bind(fs *flag.FlagSet) {
	c.data.bind(fs)
	fs.StringVar(&c.adminSub, "admin-sub", "", "sub of the workspace's first admin (required)")
	fs.StringVar(&c.adminEmail, "admin-email", "", "email of the first admin (required)")
	fs.StringVar(&c.displayName, "display-name", "", "display name (default: the name)")
	fs.BoolVar(&c.allowLocal, "allow-local-email-domains", false, "development: accept an admin email at localhost, a single-label or an all-numeric domain")
}

func workspaceCommand(stdout, stderr io.Writer) *ffcli.Command {
	fs := newFlagSet("workspace create")
	var cfg workspaceCreateConfig
	cfg.bind(fs)
	create := &ffcli.Command{
		Name: "create", ShortUsage: "controlplane workspace create NAME --admin-sub SUB --admin-email EMAIL [--display-name S]",
		ShortHelp: "create a workspace with its first admin", FlagSet: fs, Options: envOptions(),
		Exec: func(ctx context.Context, args []string) error {
			args, err := interspersed(fs, args)
			if err != nil {
				return err
			}
			if len(args) != 1 {
				return errors.New("workspace create needs exactly one NAME (flags go after it or before it, e.g. workspace create acme --admin-sub u1 --admin-email a@acme.test)")
			}
			return createWorkspace(ctx, cfg, args[0], stdout, stderr)
		},
	}
	listFS := newFlagSet("workspace list")
	var listCfg dataConfig
	listCfg.bind(listFS)
	list := &ffcli.Command{
		Name: "list", ShortUsage: "controlplane workspace list",
		ShortHelp: "list every workspace: name, display name, members (people), created", FlagSet: listFS, Options: envOptions(),
		Exec: func(ctx context.Context, args []string) error {
			if len(args) != 0 {
				return errors.New("workspace list takes no arguments")
			}
			return listWorkspaces(ctx, listCfg, stdout)
		},
	}
	return &ffcli.Command{Name: "workspace", ShortUsage: "controlplane workspace create|list ...", ShortHelp: "manage workspaces",
		FlagSet: newFlagSet("workspace"), Subcommands: []*ffcli.Command{create, list},
		Exec: groupExec(create.ShortUsage + "\n       " + list.ShortUsage)}
}

// listWorkspaces prints one tab-separated line per workspace, by name.
func listWorkspaces(ctx context.Context, cfg dataConfig, stdout io.Writer) error {
	return cfg.withStore(ctx, func(st *store.Store) error {
		workspaces, err := st.AllWorkspaces(ctx)
		if err != nil {
			return err
		}
		w := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		if _, err := fmt.Fprintln(w, "NAME\tDISPLAY NAME\tMEMBERS\tCREATED"); err != nil {
			return err
		}
		for _, ws := range workspaces {
			if _, err := fmt.Fprintf(w, "%s\t%s\t%d\t%s\n", ws.Name, ws.DisplayName, ws.MemberCount, ws.CreatedAt.UTC().Format(time.RFC3339)); err != nil {
				return err
			}
		}
		return w.Flush()
	})
}

// createWorkspace creates the workspace name with its first admin and
// prints the name on stdout (for scripts).
func createWorkspace(ctx context.Context, cfg workspaceCreateConfig, name string, stdout, stderr io.Writer) error {
	if cfg.adminSub == "" || cfg.adminEmail == "" {
		return errors.New("--admin-sub and --admin-email are required")
	}
	return cfg.data.withStore(ctx, func(st *store.Store) error {
		nw := store.NewWorkspace{Name: name, DisplayName: cfg.displayName, AdminSub: cfg.adminSub, AdminEmail: cfg.adminEmail}
		ws, err := st.CreateWorkspace(store.WithActor(ctx, cliActor), nw, store.EmailOptions{AllowLocalDomains: cfg.allowLocal})
		if err != nil {
			return err
		}
		if _, err := fmt.Fprintln(stdout, ws.Name); err != nil {
			return err
		}
		note(stderr, "created workspace %q with admin %s\n", ws.Name, cfg.adminSub)
		return nil
	})
}
