package cli

// The flag reference, docs/operations/flags.md, rendered from the
// commands' own flag definitions so that it cannot drift from them.
// TestFlagReference compares the committed file with it; regenerate with
// UPDATE_DOCS=1 go test ./internal/cli -run TestFlagReference.

import (
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/peterbourgon/ff/v3/ffcli"
)

// flagReferenceRegenerate is how to regenerate the reference, said at its
// top and by the test that finds it stale.
const flagReferenceRegenerate = "UPDATE_DOCS=1 go test ./internal/cli -run TestFlagReference"

// flagReference renders every command's flags as Markdown: per command,
// per group, a table of flag, environment variable, default and meaning.
func flagReference() string {
	var b strings.Builder
	b.WriteString("<!-- Generated from the flag definitions in internal/cli; do not edit.\n")
	b.WriteString("     Regenerate with: " + flagReferenceRegenerate + " -->\n\n")
	b.WriteString("# Flag reference\n\n")
	b.WriteString("Every flag of every command, as `controlplane COMMAND --help` lists them. Each flag can also\n")
	b.WriteString("be set through the environment variable shown (flags win over the environment). What the\n")
	b.WriteString("commands do: [Commands and configuration](configuration.md).\n")
	var walk func(c *ffcli.Command)
	walk = func(c *ffcli.Command) {
		if c.FlagSet != nil && hasFlags(c.FlagSet) {
			writeCommandFlags(&b, c)
		}
		for _, s := range c.Subcommands {
			walk(s)
		}
	}
	walk(newRootCommand(io.Discard, io.Discard))
	return b.String()
}

func hasFlags(fs *flag.FlagSet) bool {
	n := 0
	fs.VisitAll(func(*flag.Flag) { n++ })
	return n > 0
}

func writeCommandFlags(b *strings.Builder, c *ffcli.Command) {
	title := "controlplane"
	if p := commandPath(c); p != "controlplane" {
		title += " " + p
	}
	fmt.Fprintf(b, "\n## %s\n", title)
	if c.ShortHelp != "" {
		fmt.Fprintf(b, "\n%s\n", markdownCell(c.ShortHelp))
	}
	// Only commands parsed with envOptions read the environment (the
	// root's --version does not).
	fromEnv := len(c.Options) > 0
	headings, byHeading := groupedFlags(c.FlagSet)
	for _, h := range headings {
		name := "Command flags"
		if h != ownFlags {
			name = strings.ToUpper(h[:1]) + strings.ToLower(h[1:])
		}
		fmt.Fprintf(b, "\n### %s: %s\n\n", title, name)
		b.WriteString("| flag | environment | default | meaning |\n|---|---|---|---|\n")
		for _, f := range byHeading[h] {
			def := ""
			if d := flagDefault(f); d != "" {
				def = "`" + d + "`"
			}
			_, desc := flag.UnquoteUsage(f)
			env := "none"
			if fromEnv {
				env = "`" + envVar(f.Name) + "`"
			}
			fmt.Fprintf(b, "| `%s` | %s | %s | %s |\n", flagSpelling(f), env, def, markdownCell(desc))
		}
	}
}

// envVar is the environment variable that sets the flag name (ff's rule:
// the prefix, then the name upper-cased with '_' for '-').
func envVar(name string) string {
	return envPrefix + "_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// markdownCell keeps text inside one table cell and shows what Markdown
// would otherwise interpret (a pipe, an angle bracket, an asterisk) as is.
func markdownCell(s string) string {
	return strings.NewReplacer("|", `\|`, "<", "&lt;", ">", "&gt;", "*", `\*`, "_", `\_`, "\n", " ").Replace(s)
}
