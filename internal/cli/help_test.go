package cli

import (
	"bytes"
	"context"
	"flag"
	"io"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/peterbourgon/ff/v3/ffcli"
)

// allCommands is every command under root with its words after
// controlplane (nil for the root).
func allCommands(root *ffcli.Command) map[*ffcli.Command][]string {
	out := map[*ffcli.Command][]string{}
	var walk func(c *ffcli.Command, path []string)
	walk = func(c *ffcli.Command, path []string) {
		out[c] = path
		for _, s := range c.Subcommands {
			walk(s, append(append([]string{}, path...), s.Name))
		}
	}
	walk(root, nil)
	return out
}

func runHelp(t *testing.T, args ...string) string {
	t.Helper()
	var stdout, stderr bytes.Buffer
	if code := Run(context.Background(), args, &stdout, &stderr); code != 0 {
		t.Fatalf("controlplane %s: exit %d, stderr %q", strings.Join(args, " "), code, stderr.String())
	}
	return stdout.String()
}

// Every help fits 100 columns, has no Markdown, lists every flag once,
// under a heading, spelled --flag; help CMD prints what CMD --help does.
func TestHelp_EveryCommand(t *testing.T) {
	for c, path := range allCommands(newRootCommand(io.Discard, io.Discard)) {
		name := strings.Join(append([]string{"controlplane"}, path...), " ")
		t.Run(name, func(t *testing.T) {
			out := runHelp(t, append(append([]string{}, path...), "--help")...)
			if viaHelp := runHelp(t, append([]string{"help"}, path...)...); viaHelp != out {
				t.Errorf("help %s differs from %s --help:\n%s\n---\n%s", strings.Join(path, " "), name, viaHelp, out)
			}
			if strings.Contains(out, "`") {
				t.Errorf("help has a backtick (Markdown):\n%s", out)
			}
			heading := ""
			seen := map[string]bool{}
			for _, line := range strings.Split(out, "\n") {
				if n := utf8.RuneCountInString(line); n > helpWidth {
					t.Errorf("line of %d columns: %q", n, line)
				}
				if line != "" && !strings.HasPrefix(line, " ") {
					heading = line
				}
				if flagName, ok := strings.CutPrefix(line, "  --"); ok {
					if !strings.HasSuffix(heading, "FLAGS") {
						t.Errorf("flag line %q under %q, not a FLAGS heading", line, heading)
					}
					seen[strings.Fields(flagName)[0]] = true
				}
				if strings.Contains(line, " -") && strings.Contains(line, " -data-dir") {
					t.Errorf("single-dash flag spelling: %q", line)
				}
			}
			c.FlagSet.VisitAll(func(f *flag.Flag) {
				if !seen[f.Name] {
					t.Errorf("flag --%s not listed in the help", f.Name)
				}
			})
			if !strings.Contains(out, "EXAMPLES\n") {
				t.Errorf("no EXAMPLES section:\n%s", out)
			}
		})
	}
}

// The flags each command offers are those it uses.
func TestHelp_FlagsOnlyWhereUsed(t *testing.T) {
	want := map[string]map[string]bool{ // command → flag → offered
		"apikey revoke":   {"db-max-conns": false, "db-invite-batches": false, "db": true, "data-dir": true},
		"workspace list":  {"db-max-conns": false, "db-invite-batches": false},
		"oauth-keys list": {"db-max-conns": false, "db-invite-batches": false},
		"mail-status":     {"db-max-conns": false, "db-invite-batches": false, "gc-percent": false},
		"mail-retry":      {"db-max-conns": false, "db-invite-batches": false},
		"webhook-worker":  {"webhook-dispatcher": false, "db-max-conns": true, "webhook-timeout": true, "gc-percent": true},
		"mail-worker":     {"mail-dispatcher": false, "db-max-conns": true, "db-invite-batches": false, "gc-percent": true},
		"serve":           {"webhook-dispatcher": true, "mail-dispatcher": true, "db-max-conns": true, "db-invite-batches": true, "gc-percent": true},
	}
	for c := range allCommands(newRootCommand(io.Discard, io.Discard)) {
		for flagName, offered := range want[commandPath(c)] {
			if got := c.FlagSet.Lookup(flagName) != nil; got != offered {
				t.Errorf("%s offers --%s: %v, want %v", commandPath(c), flagName, got, offered)
			}
		}
	}
}

func TestHelp_UnknownHelpTopic(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := Run(context.Background(), []string{"help", "bogus"}, &stdout, &stderr); code != 2 {
		t.Fatalf("exit %d, want 2", code)
	}
	if !strings.Contains(stderr.String(), `unknown command "bogus"`) {
		t.Errorf("stderr %q", stderr.String())
	}
}

// A new flag of the long-running commands must be given a heading in
// flagGroups (their own flags would otherwise gather under FLAGS).
func TestHelp_ServerFlagsHaveAGroup(t *testing.T) {
	for c := range allCommands(newRootCommand(io.Discard, io.Discard)) {
		switch commandPath(c) {
		case "serve", "mail-worker", "webhook-worker":
		default:
			continue
		}
		c.FlagSet.VisitAll(func(f *flag.Flag) {
			if flagGroup(f.Name) == ownFlags && f.Name != "allow-local-email-domains" {
				t.Errorf("%s --%s has no heading: add it to flagGroups in help.go", commandPath(c), f.Name)
			}
		})
	}
}
