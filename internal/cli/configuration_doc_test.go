package cli

import (
	"flag"
	"io"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/peterbourgon/ff/v3/ffcli"
)

const configurationDoc = "../../docs/operations/configuration.md"

// derivedDefaults are flags whose default configuration.md describes by
// what it is derived from (the flag's own default is empty and computed at
// start): only these may document a default the flag definition lacks.
var derivedDefaults = map[string]bool{
	"--db": true, "--secrets-key": true, "--public-url": true, "--mail-dir": true,
}

var backticked = regexp.MustCompile("`([^`]*)`")

// TestConfigurationDocDefaults: the hand-written flag table of
// docs/operations/configuration.md (a guided tour; flags.md is generated)
// states the defaults the flag definitions have. It had drifted: it gave
// --webhook-poll-interval as 2s after the default became 250ms.
func TestConfigurationDocDefaults(t *testing.T) {
	defaults := map[string]map[string]bool{} // flag → its defaults across commands
	var walk func(c *ffcli.Command)
	walk = func(c *ffcli.Command) {
		if c.FlagSet != nil {
			c.FlagSet.VisitAll(func(f *flag.Flag) {
				name := "--" + f.Name
				if defaults[name] == nil {
					defaults[name] = map[string]bool{}
				}
				defaults[name][f.DefValue] = true
			})
		}
		for _, s := range c.Subcommands {
			walk(s)
		}
	}
	walk(newRootCommand(io.Discard, io.Discard))

	doc, err := os.ReadFile(configurationDoc)
	if err != nil {
		t.Fatal(err)
	}
	checked := 0
	for line := range strings.Lines(string(doc)) {
		if !strings.HasPrefix(line, "| `--") {
			continue
		}
		cells := splitRow(line)
		if len(cells) < 3 {
			t.Errorf("configuration.md: a flag row with fewer than 3 cells: %s", line)
			continue
		}
		var flags []string
		for _, m := range backticked.FindAllStringSubmatch(cells[0], -1) {
			if strings.HasPrefix(m[1], "--") {
				flags = append(flags, m[1])
			}
		}
		parts := splitOutsideBackticks(cells[1])
		if strings.Contains(cells[0], "…") || len(parts) != len(flags) {
			// "--smtp-host … --smtp-timeout" or a default told in words
			// for several flags: only that each flag exists is checked.
			for _, f := range flags {
				if defaults[f] == nil {
					t.Errorf("configuration.md names %s, which no command has", f)
				}
			}
			continue
		}
		for i, f := range flags {
			have := defaults[f]
			if have == nil {
				t.Errorf("configuration.md names %s, which no command has", f)
				continue
			}
			want := ""
			if m := backticked.FindStringSubmatch(parts[i]); m != nil {
				want = m[1]
			}
			checked++
			if !sameDefault(have, want) && !derivedDefaults[f] {
				t.Errorf("configuration.md gives %s the default %q; the flag's is %q (flags.md is generated from the definitions)", f, want, keys(have))
			}
		}
	}
	if checked < 40 {
		t.Errorf("checked the defaults of %d flags in configuration.md, want at least 40: has its table changed shape?", checked)
	}
}

// splitRow splits a markdown table row into its cells ("\|" stays in one).
func splitRow(line string) []string {
	line = strings.TrimSpace(line)
	line = strings.TrimPrefix(strings.TrimSuffix(line, "|"), "|")
	var cells []string
	var cur strings.Builder
	for i := 0; i < len(line); i++ {
		switch {
		case line[i] == '\\' && i+1 < len(line) && line[i+1] == '|':
			cur.WriteString(`\|`)
			i++
		case line[i] == '|':
			cells = append(cells, strings.TrimSpace(cur.String()))
			cur.Reset()
		default:
			cur.WriteByte(line[i])
		}
	}
	return append(cells, strings.TrimSpace(cur.String()))
}

// splitOutsideBackticks splits a cell at the commas outside code spans.
func splitOutsideBackticks(cell string) []string {
	var parts []string
	inCode := false
	start := 0
	for i, r := range cell {
		switch {
		case r == '`':
			inCode = !inCode
		case r == ',' && !inCode:
			parts = append(parts, cell[start:i])
			start = i + 1
		}
	}
	return append(parts, cell[start:])
}

// sameDefault: want, as the doc spells it ("168h", "false", empty for
// none), is one of the flag's default values ("168h0m0s", "false", "").
func sameDefault(have map[string]bool, want string) bool {
	for h := range have {
		switch {
		case h == want:
			return true
		case want == "" && h == "false":
			return true
		}
		hd, herr := time.ParseDuration(h)
		wd, werr := time.ParseDuration(want)
		if herr == nil && werr == nil && hd == wd {
			return true
		}
	}
	return false
}

func keys(m map[string]bool) string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	return strings.Join(ks, " or ")
}
