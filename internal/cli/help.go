package cli

// The help every command prints (--help, controlplane help CMD): flags
// grouped under headings, spelled --flag, wrapped to helpWidth columns,
// and examples to copy. flagreference.go renders the same definitions as
// Markdown for docs/operations/flags.md.

import (
	"flag"
	"fmt"
	"slices"
	"strings"
	"text/tabwriter"
	"unicode/utf8"

	"github.com/peterbourgon/ff/v3/ffcli"
)

// helpWidth is the widest help line: readable in a terminal of 100 columns
// and in a code block of the docs.
const helpWidth = 100

// flagGroups are the headings flags are listed under, in this order. A
// flag belongs to the first group one of whose names equals it or, for a
// name ending in '-', starts with it. Flags of no group are the command's
// own and come first, under FLAGS.
var flagGroups = []struct {
	heading string
	names   []string
}{
	{"SERVER", []string{"addr", "invite-ttl", "idempotency-ttl", "body-limit", "shutdown-timeout", "cors-allowed-origins",
		"max-header-bytes", "max-connections", "read-header-timeout", "idle-timeout", "gc-percent"}},
	{"DATABASE", []string{"data-dir", "db", "db-", "migrate"}},
	{"SECRETS AND TLS", []string{"secrets-key", "secrets-key-file", "tls-", "oauth-allow-plain-http"}},
	{"AUTH", []string{"jwks-", "jwt-", "public-url", "oauth-"}},
	{"LIMITS", []string{"rate-limits", "rate-limit-", "redis", "redis-", "trusted-proxies"}},
	{"MAIL", []string{"smtp-", "mail-", "accept-url-template"}},
	{"WEBHOOKS", []string{"webhook-", "webhooks-", "audit-retention"}},
	{"OBSERVABILITY", []string{"log-", "metrics-addr", "cpu-profile"}},
	{"DEV MODE", []string{"dev", "dev-", "fixtures"}},
}

// ownFlags is the heading of the flags of no group: the command's own.
const ownFlags = ""

// flagGroup is the heading name is listed under (ownFlags: none).
func flagGroup(name string) string {
	for _, g := range flagGroups {
		for _, n := range g.names {
			if n == name || (strings.HasSuffix(n, "-") && strings.HasPrefix(name, n)) {
				return g.heading
			}
		}
	}
	return ownFlags
}

// groupedFlags is fs's flags by heading, own flags first, each group
// sorted by name; headings without flags are left out.
func groupedFlags(fs *flag.FlagSet) (headings []string, byHeading map[string][]*flag.Flag) {
	byHeading = map[string][]*flag.Flag{}
	fs.VisitAll(func(f *flag.Flag) {
		h := flagGroup(f.Name)
		byHeading[h] = append(byHeading[h], f)
	})
	for _, h := range append([]string{ownFlags}, headingsOf()...) {
		if len(byHeading[h]) > 0 {
			headings = append(headings, h)
		}
	}
	return headings, byHeading
}

func headingsOf() []string {
	hs := make([]string, len(flagGroups))
	for i, g := range flagGroups {
		hs[i] = g.heading
	}
	return hs
}

// examples are each command's examples, by command path (its flag set's
// name), one command line or a "# comment" each.
var examples = map[string][]string{
	"controlplane": {
		"controlplane serve --data-dir ./data",
		"controlplane help serve",
	},
	"version": {"controlplane version"},
	"serve": {
		"# development: SQLite under ./data, tokens from controlplane token",
		"controlplane serve --data-dir ./data --allow-local-email-domains",
		"# production: PostgreSQL, an external issuer, shared rate limits",
		"controlplane serve --addr :8080 --db postgres://cp@db:5432/cp?sslmode=require \\",
		"    --jwks-url https://issuer.example.com/.well-known/jwks.json --redis redis://redis:6379/0 \\",
		"    --secrets-key-file /etc/cp/secrets.keys --tls-cert-file cert.pem --tls-key-file key.pem",
	},
	"migrate": {
		"controlplane migrate --db postgres://cp@db:5432/cp?sslmode=require",
		"controlplane migrate status --data-dir ./data",
	},
	"migrate status":   {"controlplane migrate status --db postgres://cp@db:5432/cp?sslmode=require"},
	"workspace":        {"controlplane workspace create acme --admin-sub u1 --admin-email alice@acme.test"},
	"workspace create": {"controlplane workspace create acme --admin-sub u1 --admin-email a@acme.test --display-name Acme"},
	"workspace list":   {"controlplane workspace list --data-dir ./data"},
	"apikey":           {"controlplane apikey create --workspace acme --sub u1"},
	"apikey create":    {"KEY=$(controlplane apikey create --workspace acme --sub u1)"},
	"apikey revoke":    {"controlplane apikey revoke \"$KEY\""},
	"token": {
		"TOKEN=$(controlplane token --sub u1 --email a@x.test --scope \"workspaces:get workspaces:invite\")",
		"ADMIN=$(controlplane token --sub ops --scope admin --ttl 15m)",
	},
	"oauth-keys":        {"controlplane oauth-keys list"},
	"oauth-keys rotate": {"controlplane oauth-keys rotate --delay 10m"},
	"oauth-keys list":   {"controlplane oauth-keys list --db postgres://cp@db:5432/cp"},
	"secrets":           {"controlplane secrets status"},
	"secrets rotate": {
		"# NEW first: new values are encrypted with it; OLD still decrypts",
		"controlplane secrets rotate --secrets-key \"$NEW,$OLD\" --db postgres://cp@db:5432/cp",
	},
	"secrets status":       {"controlplane secrets status --secrets-key-file /etc/controlplane/secrets.keys"},
	"secrets generate-key": {"controlplane secrets generate-key > /etc/controlplane/secrets.keys"},
	"mail-worker": {
		"controlplane serve --mail-dispatcher=false &",
		"controlplane mail-worker --smtp-host smtp.example.com --smtp-username cp",
	},
	"webhook-worker": {
		"controlplane serve --webhook-dispatcher=false &",
		"controlplane webhook-worker --webhook-timeout 5s",
	},
	"mail-status": {"controlplane mail-status --failed 5"},
	"backup":      {"controlplane backup --data-dir ./data --to backups/controlplane-$(date +%Y%m%dT%H%M%S).db"},
	"restore": {
		"# with every server of ./data stopped",
		"controlplane restore --data-dir ./data --from backups/controlplane-20260101T000000.db",
	},
	"copy": {
		"# with every server of the source stopped",
		"controlplane migrate --db postgres://cp@db:5432/cp?sslmode=require",
		"controlplane copy --from ./data/controlplane.db --to postgres://cp@db:5432/cp?sslmode=require",
	},
	"mail-retry": {
		"controlplane mail-retry --workspace acme",
		"controlplane mail-retry --id 42",
	},
}

// commandPath is c's words after controlplane ("workspace create"), or
// controlplane for the root: the name its flag set was given.
func commandPath(c *ffcli.Command) string { return c.FlagSet.Name() }

// usage is the help of c: what it does, how to call it, examples, its
// subcommands and its flags by group.
func usage(c *ffcli.Command) string {
	var b strings.Builder
	if c.ShortHelp != "" {
		b.WriteString("DESCRIPTION\n")
		b.WriteString(wrap(c.ShortHelp, "  ", helpWidth))
		b.WriteString("\n")
	}
	b.WriteString("USAGE\n")
	b.WriteString(wrap(c.ShortUsage, "  ", helpWidth))
	b.WriteString("\n")
	if c.LongHelp != "" {
		for _, para := range strings.Split(c.LongHelp, "\n\n") {
			b.WriteString(wrap(strings.Join(strings.Fields(para), " "), "", helpWidth))
			b.WriteString("\n")
		}
	}
	if ex := examples[commandPath(c)]; len(ex) > 0 {
		b.WriteString("EXAMPLES\n")
		for _, line := range ex {
			b.WriteString("  " + line + "\n")
		}
		b.WriteString("\n")
	}
	if len(c.Subcommands) > 0 {
		b.WriteString("SUBCOMMANDS\n")
		tw := tabwriter.NewWriter(&b, 0, 2, 2, ' ', 0)
		for _, sub := range c.Subcommands {
			_, _ = fmt.Fprintf(tw, "  %s\t%s\n", sub.Name, sub.ShortHelp)
		}
		_ = tw.Flush() // writes to a strings.Builder, which cannot fail
		b.WriteString("\n")
		if commandPath(c) == "controlplane" {
			b.WriteString("Run controlplane help COMMAND (or controlplane COMMAND --help) for a command's flags.\n\n")
		}
	}
	headings, byHeading := groupedFlags(c.FlagSet)
	for _, h := range headings {
		if h == ownFlags {
			b.WriteString("FLAGS\n")
		} else {
			b.WriteString(h + " FLAGS\n")
		}
		for _, f := range byHeading[h] {
			b.WriteString("  " + flagSpelling(f) + "\n")
			b.WriteString(wrap(flagDescription(f), "      ", helpWidth))
		}
		b.WriteString("\n")
	}
	return strings.TrimRight(b.String(), "\n")
}

// flagSpelling is --name and the kind of value it takes (none for a bool).
func flagSpelling(f *flag.Flag) string {
	if isBool(f) {
		return "--" + f.Name
	}
	kind, _ := flag.UnquoteUsage(f)
	if kind == "" {
		kind = "value"
	}
	return "--" + f.Name + " " + kind
}

// flagDescription is the flag's usage and its default (when it has one
// worth saying: not false, not empty).
func flagDescription(f *flag.Flag) string {
	_, desc := flag.UnquoteUsage(f)
	if d := flagDefault(f); d != "" {
		desc += " (default: " + d + ")"
	}
	return desc
}

// flagDefault is the default as the help and the reference show it; empty
// when there is none to show.
func flagDefault(f *flag.Flag) string {
	if f.DefValue == "" || (isBool(f) && f.DefValue == "false") {
		return ""
	}
	return f.DefValue
}

func isBool(f *flag.Flag) bool {
	b, ok := f.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}

// wrap breaks text into lines of at most width columns, each starting
// with indent, at spaces; a word longer than a line stays whole.
func wrap(text, indent string, width int) string {
	var b strings.Builder
	line := indent
	for _, w := range strings.Fields(text) {
		if line != indent && utf8.RuneCountInString(line)+1+utf8.RuneCountInString(w) > width {
			b.WriteString(line + "\n")
			line = indent
		}
		if line != indent {
			line += " "
		}
		line += w
	}
	b.WriteString(line + "\n")
	return b.String()
}

// helpCommand finds the command controlplane help ARGS describes: the
// root without ARGS, else the (sub)command they name.
func helpCommand(root *ffcli.Command, args []string) (*ffcli.Command, error) {
	c := root
	for _, a := range args {
		i := slices.IndexFunc(c.Subcommands, func(s *ffcli.Command) bool { return s.Name == a })
		if i < 0 {
			return nil, fmt.Errorf("unknown command %q: run controlplane help for the list", strings.Join(args, " "))
		}
		c = c.Subcommands[i]
	}
	return c, nil
}
