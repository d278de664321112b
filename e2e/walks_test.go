package e2e_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The docs' walks run as written. A walk is a fenced block opened with
// "```sh walk" in README.md or docs/**/*.md. Every page's walks run in order
// in one bash (variables carry over from block to block), against a fresh
// `make run`: `serve` with its defaults on a new data directory, except that
// it listens on a free port, and the literal http://127.0.0.1:8080 in the
// blocks is rewritten to that server's URL. `go run . ARGS` calls a binary
// built once from the module, with the page's data directory in
// CONTROLPLANE_DATA_DIR. A comment line "# {…}" or "# [...]" right after a
// command is that command's expected JSON, "# => text" its expected text;
// see matchShown for how loosely they are compared.
//
// A block may name serve flags its page needs, after "serve:" on the fence
// ("```sh walk serve: --metrics-addr 127.0.0.1:9464"): the page's server
// starts with the flags of all its blocks. A --metrics-addr there listens on
// a free port instead, and its http://ADDR in the blocks is rewritten too.
// A page that mentions http://127.0.0.1:9000 (a webhook receiver) gets one
// there (on a free port, rewritten the same way) that answers 204 to every
// request, unless it starts the docs' own receiver (`go run
// ./docs/examples/webhook-receiver`, a binary built once too): then only its
// 127.0.0.1:9000 is moved to a free port, --addr included.

// docsRoot is the module root, where README.md and docs/ live.
const docsRoot = ".."

// docsURL is the address `make run` serves, as the docs spell it.
const docsURL = "http://127.0.0.1:8080"

// docsReceiverAddr is where the docs' walks send webhooks.
const docsReceiverAddr = "127.0.0.1:9000"

// docsReceiverURL is docsReceiverAddr as the webhook URLs spell it.
const docsReceiverURL = "http://" + docsReceiverAddr

// docsReceiverPackage is the example receiver a walk may start itself.
const docsReceiverPackage = "./docs/examples/webhook-receiver"

func TestWalks(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs every docs walk: skipped under -short")
	}
	for _, tool := range []string{"bash", "curl"} {
		if _, err := exec.LookPath(tool); err != nil {
			// As for Chromium and npm: CI must have it, a laptop may skip.
			if os.Getenv("CI") == "true" {
				t.Fatalf("the docs' walks need %s: %v", tool, err)
			}
			t.Skipf("the docs' walks need %s, not found: %v", tool, err)
		}
	}
	pages, err := walkPages()
	if err != nil {
		t.Fatal(err)
	}
	if len(pages) == 0 {
		t.Fatal("no page has a walk: the marker or the page list is wrong")
	}
	// The parent's TempDir outlives its parallel subtests.
	bins, err := buildWalkBinaries(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pages {
		t.Run(p.name, func(t *testing.T) {
			t.Parallel()
			runWalkPage(t, bins, p)
		})
	}
}

// walkPage is one page's walk blocks, in order.
type walkPage struct {
	name      string // path relative to the module root
	blocks    []walkBlock
	serveArgs []string // from the blocks' "serve:" markers
}

// walkBlock is one marked block, split into commands.
type walkBlock struct {
	line     int // 1-based line of the opening fence
	commands []walkCommand
}

// walkCommand is one shell command (continuation lines joined as written)
// with the outputs the doc shows for it, if any.
type walkCommand struct {
	line  int
	text  string
	shown []string // "# " stripped: "{…}" JSON or "=> text"
}

func walkPages() ([]walkPage, error) {
	files := []string{filepath.Join(docsRoot, "README.md")}
	err := filepath.WalkDir(filepath.Join(docsRoot, "docs"), func(path string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(path, ".md") {
			files = append(files, path)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	var pages []walkPage
	for _, f := range files {
		src, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		rel, _ := filepath.Rel(docsRoot, f)
		blocks, serveArgs, err := parseWalks(string(src))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", rel, err)
		}
		if len(blocks) > 0 {
			pages = append(pages, walkPage{name: filepath.ToSlash(rel), blocks: blocks, serveArgs: serveArgs})
		}
	}
	return pages, nil
}

// parseWalks finds the "```sh walk" blocks of a Markdown page and the serve
// flags their markers name.
func parseWalks(src string) ([]walkBlock, []string, error) {
	var blocks []walkBlock
	var serveArgs []string
	var cur *walkBlock
	var pending []string // lines of a command ending in a backslash
	for i, line := range strings.Split(src, "\n") {
		trimmed := strings.TrimSpace(line)
		if cur == nil {
			if info, ok := strings.CutPrefix(trimmed, "```sh walk"); ok && (info == "" || info[0] == ' ') {
				cur = &walkBlock{line: i + 1}
				if flags, ok := strings.CutPrefix(strings.TrimSpace(info), "serve:"); ok {
					serveArgs = append(serveArgs, strings.Fields(flags)...)
				}
			}
			continue
		}
		switch {
		case trimmed == "```":
			blocks = append(blocks, *cur)
			cur, pending = nil, nil
		case len(pending) > 0:
			pending = append(pending, line)
			if !strings.HasSuffix(line, `\`) {
				cur.commands[len(cur.commands)-1].text = strings.Join(pending, "\n")
				pending = nil
			}
		case isShownOutput(trimmed):
			n := len(cur.commands)
			if n == 0 {
				return nil, nil, fmt.Errorf("line %d: a shown output before any command of its block", i+1)
			}
			cur.commands[n-1].shown = append(cur.commands[n-1].shown, strings.TrimPrefix(trimmed, "# "))
		case trimmed == "" || strings.HasPrefix(trimmed, "#"):
			// prose for the reader
		default:
			cur.commands = append(cur.commands, walkCommand{line: i + 1, text: line})
			if strings.HasSuffix(line, `\`) {
				pending = []string{line}
			}
		}
	}
	if cur != nil {
		return nil, nil, fmt.Errorf("line %d: the walk block is never closed", cur.line)
	}
	return blocks, serveArgs, nil
}

func isShownOutput(line string) bool {
	return strings.HasPrefix(line, "# {") || strings.HasPrefix(line, "# [") || strings.HasPrefix(line, "# => ")
}

// walkBinaries are the programs the walks' `go run` calls.
type walkBinaries struct {
	controlplane string
	receiver     string // docsReceiverPackage
}

// buildWalkBinaries builds the controlplane binary and the example receiver
// into dir, once for every page: a go run per command would compile each
// time. One go build names them after their packages' last path element.
func buildWalkBinaries(dir string) (walkBinaries, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", dir+string(filepath.Separator), ".", docsReceiverPackage)
	cmd.Dir = docsRoot
	if out, err := cmd.CombinedOutput(); err != nil {
		return walkBinaries{}, fmt.Errorf("go build: %w\n%s", err, out)
	}
	return walkBinaries{
		controlplane: filepath.Join(dir, "controlplane"),
		receiver:     filepath.Join(dir, filepath.Base(docsReceiverPackage)),
	}, nil
}

// walkPrelude makes `go run . ARGS` and `go run ./docs/examples/…` run the
// built binaries, as `make run`'s checkout would run the sources. Started in
// the background (`… &`), the function runs in a subshell, which execs the
// receiver so that the job is the receiver itself and `kill %1` stops it: a
// reader's interactive shell signals the job's process group, go run's child
// included, a script's shell only the job's own process.
const walkPrelude = `go() {
  local -; set +x
  if [ "$#" -ge 2 ] && [ "$1" = run ] && [ "$2" = . ]; then shift 2; "$CP" "$@"
  elif [ "$#" -ge 2 ] && [ "$1" = run ] && [ "$2" = ` + docsReceiverPackage + ` ]; then
    shift 2
    if [ "$BASHPID" != "$$" ]; then exec "$RECEIVER" "$@"; else "$RECEIVER" "$@"; fi
  else command go "$@"; fi
}
`

func runWalkPage(t *testing.T, bins walkBinaries, p walkPage) {
	// The data directory is ./data of the walk's directory, as make run's
	// is of the checkout, so a walk may look into ./data as a reader would.
	workDir, outDir := t.TempDir(), t.TempDir()
	dataDir := filepath.Join(workDir, "data")
	serveArgs, urls := freePortFlags(p.serveArgs)
	srv, err := startServer(append([]string{"serve", "--addr", "127.0.0.1:0", "--data-dir", dataDir}, serveArgs...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.stop)
	urls[docsURL] = srv.URL
	switch {
	case p.mentions(docsReceiverPackage):
		addr, err := freeLoopbackAddr(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		urls[docsReceiverAddr] = addr
	case p.mentions(docsReceiverURL):
		receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.Copy(io.Discard, r.Body)
			w.WriteHeader(http.StatusNoContent)
		}))
		t.Cleanup(receiver.Close)
		urls[docsReceiverURL] = receiver.URL
	}
	if docsMetricsURL, ok := urls[metricsURLKey]; ok {
		delete(urls, metricsURLKey)
		metrics, err := waitMetricsURL(srv)
		if err != nil {
			t.Fatal(err)
		}
		urls[docsMetricsURL] = metrics
	}

	script, checks := walkScript(p, urls, outDir)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-euo", "pipefail", "-x")
	cmd.Dir = workDir
	cmd.Stdin = strings.NewReader(script)
	cmd.Env = append(os.Environ(), "CP="+bins.controlplane, "RECEIVER="+bins.receiver, "CONTROLPLANE_DATA_DIR="+dataDir, "PS4=+ walk: ")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s: the walk failed: %v\n%s\nserver log:\n%s", p.name, err, out.String(), srv.logs.String())
	}
	t.Logf("%s: the walk's output:\n%s", p.name, out.String())
	for _, c := range checks {
		got, err := os.ReadFile(filepath.Join(outDir, c.file))
		if err != nil {
			t.Fatal(err)
		}
		shown := make([]string, len(c.cmd.shown))
		for i, line := range c.cmd.shown {
			shown[i] = rewriteURLs(line, urls)
		}
		for _, msg := range matchShown(shown, string(got)) {
			t.Errorf("%s:%d: %s\ncommand:\n%s\noutput:\n%s", p.name, c.cmd.line, msg, c.cmd.text, got)
		}
	}
}

// mentions reports whether some command of the page contains s.
func (p walkPage) mentions(s string) bool {
	for _, b := range p.blocks {
		for _, c := range b.commands {
			if strings.Contains(c.text, s) {
				return true
			}
		}
	}
	return false
}

// freeLoopbackAddr finds a loopback port nothing listens on, for a process
// the walk starts itself; the port is free again once this returns.
func freeLoopbackAddr(ctx context.Context) (string, error) {
	var lc net.ListenConfig
	l, err := lc.Listen(ctx, "tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// rewriteURLs replaces the addresses the docs show with the test's.
func rewriteURLs(s string, urls map[string]string) string {
	for docs, real := range urls {
		s = strings.ReplaceAll(s, docs, real)
	}
	return s
}

// walkCheck names the file a command's output went to.
type walkCheck struct {
	cmd  walkCommand
	file string
}

// walkScript joins a page's blocks into one script. A command with shown
// outputs runs in a brace group (so its assignments stay in the shell) with
// its output kept in a file of outDir, then echoed for the log.
func walkScript(p walkPage, urls map[string]string, outDir string) (string, []walkCheck) {
	var b strings.Builder
	var checks []walkCheck
	b.WriteString(walkPrelude)
	for _, blk := range p.blocks {
		fmt.Fprintf(&b, "# %s:%d\n", p.name, blk.line)
		for _, c := range blk.commands {
			text := rewriteURLs(c.text, urls)
			if len(c.shown) == 0 {
				b.WriteString(text + "\n")
				continue
			}
			file := "out." + strconv.Itoa(len(checks))
			path := filepath.Join(outDir, file)
			fmt.Fprintf(&b, "{\n%s\n} >%q\ncat %q; echo\n", text, path, path)
			checks = append(checks, walkCheck{cmd: c, file: file})
		}
	}
	return b.String(), checks
}

// metricsURLKey marks, in freePortFlags' answer, the metrics URL the docs
// show, whose real value is known only once the server listens.
const metricsURLKey = "metrics"

// freePortFlags moves a --metrics-addr of the docs to a free port, and
// returns the URL the docs use for it under metricsURLKey.
func freePortFlags(args []string) ([]string, map[string]string) {
	urls := map[string]string{}
	out := slices.Clone(args)
	for i, a := range out {
		if a == "--metrics-addr" && i+1 < len(out) {
			urls[metricsURLKey] = "http://" + out[i+1]
			out[i+1] = "127.0.0.1:0"
		}
	}
	return out, urls
}

var metricsListeningLine = regexp.MustCompile(`msg="metrics listening" addr=(http://[^/\s]+)`)

// waitMetricsURL reads the metrics listener's address from the server's log.
func waitMetricsURL(srv *runningServer) (string, error) {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if m := metricsListeningLine.FindStringSubmatch(srv.logs.String()); m != nil {
			return m[1], nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return "", fmt.Errorf("no metrics listening line in the server's log:\n%s", srv.logs.String())
}

// ellipsis stands for "anything" in a shown output.
const ellipsis = "…"

// matchShown compares a command's output with what the doc shows, and says
// what differs. Shown JSON values match the output's JSON values in order;
// in them "…" as a whole value matches any value, inside a string any run of
// characters ("sa_…"), and as an object member or array element further
// members or elements. Objects match when every shown member does (extra
// members are fine). "=> text" matches when some output line matches text,
// with "…" again matching anything and runs of spaces taken as one.
func matchShown(shown []string, output string) []string {
	var msgs []string
	dec := json.NewDecoder(strings.NewReader(output))
	dec.UseNumber()
	for _, s := range shown {
		if text, ok := strings.CutPrefix(s, "=> "); ok {
			if !anyLineMatches(output, strings.TrimSpace(text)) {
				msgs = append(msgs, fmt.Sprintf("no output line matches %q", text))
			}
			continue
		}
		want, err := parseShownJSON(s)
		if err != nil {
			msgs = append(msgs, fmt.Sprintf("the doc's output %q is not JSON with ellipses: %v", s, err))
			continue
		}
		var got any
		if err := dec.Decode(&got); err != nil {
			msgs = append(msgs, fmt.Sprintf("want JSON like %s, output has none: %v", s, err))
			continue
		}
		if why := matchJSON("$", want, got); why != "" {
			msgs = append(msgs, fmt.Sprintf("shown %s: %s", s, why))
		}
	}
	return msgs
}

// anyLineMatches compares with runs of spaces taken as one, so that a doc
// need not copy a table's column padding.
func anyLineMatches(output, pattern string) bool {
	pattern = strings.Join(strings.Fields(pattern), " ")
	for line := range strings.SplitSeq(output, "\n") {
		if globMatch(pattern, strings.Join(strings.Fields(line), " ")) {
			return true
		}
	}
	return false
}

// globMatch reports whether s matches pattern, where "…" matches any run of
// characters.
func globMatch(pattern, s string) bool {
	parts := strings.Split(pattern, ellipsis)
	if len(parts) == 1 {
		return pattern == s
	}
	if !strings.HasPrefix(s, parts[0]) {
		return false
	}
	s = s[len(parts[0]):]
	for _, mid := range parts[1 : len(parts)-1] {
		i := strings.Index(s, mid)
		if i < 0 {
			return false
		}
		s = s[i+len(mid):]
	}
	return strings.HasSuffix(s, parts[len(parts)-1])
}

// parseShownJSON parses a shown JSON value, turning bare "…" into JSON: the
// string "…" where a value or element goes, the member "…":"…" where an
// object member goes. Text after the value (a remark) is ignored.
func parseShownJSON(s string) (any, error) {
	var b strings.Builder
	var stack []byte // '{' or '['
	inString, escaped, afterColon := false, false, false
	for i := 0; i < len(s); i++ {
		c := s[i]
		if inString {
			b.WriteByte(c)
			switch {
			case escaped:
				escaped = false
			case c == '\\':
				escaped = true
			case c == '"':
				inString = false
			}
			continue
		}
		if strings.HasPrefix(s[i:], ellipsis) {
			if len(stack) > 0 && stack[len(stack)-1] == '{' && !afterColon {
				b.WriteString(`"…":"…"`)
			} else {
				b.WriteString(`"…"`)
			}
			i += len(ellipsis) - 1
			afterColon = false
			continue
		}
		switch c {
		case '"':
			inString = true
		case '{', '[':
			stack = append(stack, c)
			afterColon = false
		case '}', ']':
			if len(stack) > 0 {
				stack = stack[:len(stack)-1]
			}
		case ':':
			afterColon = true
		case ',':
			afterColon = false
		}
		b.WriteByte(c)
	}
	dec := json.NewDecoder(strings.NewReader(b.String()))
	dec.UseNumber()
	var v any
	err := dec.Decode(&v)
	return v, err
}

// matchJSON says how got differs from the shown want, or "" when it matches.
func matchJSON(path string, want, got any) string {
	switch w := want.(type) {
	case string:
		if w == ellipsis {
			return ""
		}
		g, ok := got.(string)
		if !ok || !globMatch(w, g) {
			return fmt.Sprintf("%s: got %s, want %q", path, compactJSON(got), w)
		}
	case map[string]any:
		g, ok := got.(map[string]any)
		if !ok {
			return fmt.Sprintf("%s: got %s, want an object", path, compactJSON(got))
		}
		for k, wv := range w {
			if k == ellipsis {
				continue
			}
			gv, ok := g[k]
			if !ok {
				return fmt.Sprintf("%s: no member %q in %s", path, k, compactJSON(got))
			}
			if why := matchJSON(path+"."+k, wv, gv); why != "" {
				return why
			}
		}
	case []any:
		g, ok := got.([]any)
		if !ok {
			return fmt.Sprintf("%s: got %s, want an array", path, compactJSON(got))
		}
		return matchArray(path, w, g)
	default: // json.Number, bool, nil
		if !reflect.DeepEqual(want, got) {
			return fmt.Sprintf("%s: got %s, want %s", path, compactJSON(got), compactJSON(want))
		}
	}
	return ""
}

// matchArray matches shown elements in order against the output's; a "…"
// element lets any number of output elements pass before the next shown one
// and at the end.
func matchArray(path string, want, got []any) string {
	j := 0
	open := false
	for i, w := range want {
		if w == ellipsis {
			open = true
			continue
		}
		for {
			if j >= len(got) {
				return fmt.Sprintf("%s[%d]: no element matching %s in %s", path, i, compactJSON(w), compactJSON(got))
			}
			why := matchJSON(fmt.Sprintf("%s[%d]", path, j), w, got[j])
			j++
			if why == "" {
				break
			}
			if !open {
				return why
			}
		}
		open = false
	}
	if !open && j != len(got) {
		return fmt.Sprintf("%s: %d elements, the doc shows %d", path, len(got), j)
	}
	return ""
}

func compactJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}

// TestWalks_Matcher pins the loose comparison the walks rely on.
func TestWalks_Matcher(t *testing.T) {
	cases := []struct {
		shown, output string
		ok            bool
	}{
		{`{"a":"…","b":1,…}`, `{"a":"x","b":1,"c":true}`, true},
		{`{"a":"sa_…"}`, `{"a":"sa_123"}`, true},
		{`{"a":"sa_…"}`, `{"a":"sb_123"}`, false},
		{`{"a":1}`, `{"a":2}`, false},
		{`{"a":1}`, `{"b":1}`, false},
		{`{"a":…}`, `{"a":[1,2]}`, true},
		{`[{"email":"x@y.test",…}]`, `[{"email":"x@y.test","role":"admin"}]`, true},
		{`[{"email":"x@y.test"}]`, `[{"email":"x@y.test"},{"email":"z@y.test"}]`, false},
		{`[…,{"email":"z@y.test"},…]`, `[{"email":"x@y.test"},{"email":"z@y.test"},{}]`, true},
		{`[]`, `[]`, true},
		{`{"a":1}   (a remark)`, `{"a":1}`, true},
		{`=> Idempotency-Replayed: true`, "HTTP/1.1 201\r\nIdempotency-Replayed: true\r\n", true},
		{`=> kid …`, "generation 1\n", false},
		{`=> 1 … serve`, "GENERATION  KID\n1           abc  EdDSA  serve\n", true},
	}
	for _, c := range cases {
		msgs := matchShown([]string{c.shown}, c.output)
		if (len(msgs) == 0) != c.ok {
			t.Errorf("shown %s, output %s: got %v, want match=%v", c.shown, c.output, msgs, c.ok)
		}
	}
}

// TestWalks_Parse pins how a page is cut into commands and shown outputs.
func TestWalks_Parse(t *testing.T) {
	page := "text\n```sh walk serve: --metrics-addr 127.0.0.1:9464\nA=1 # set\ncurl -s x \\\n  -H y\n# {\"a\":1}\n# prose\n# => ok\n```\n```sh\nnot run\n```\n"
	blocks, serveArgs, err := parseWalks(page)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"--metrics-addr", "127.0.0.1:9464"}; !slices.Equal(serveArgs, want) {
		t.Errorf("serve args: got %q, want %q", serveArgs, want)
	}
	if len(blocks) != 1 || len(blocks[0].commands) != 2 {
		t.Fatalf("got %+v, want one block of two commands", blocks)
	}
	c := blocks[0].commands[1]
	if c.text != "curl -s x \\\n  -H y" || !slices.Equal(c.shown, []string{`{"a":1}`, "=> ok"}) || c.line != 4 {
		t.Errorf("got %+v", c)
	}
	for _, bad := range []string{"```sh walk\n# => x\n```\n", "```sh walk\necho\n"} {
		if _, _, err := parseWalks(bad); err == nil {
			t.Errorf("%q: parsed, want an error", bad)
		}
	}
}
