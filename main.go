// Command controlplane serves the Blaxel control plane's workspace-invitation
// API (openapi/controlplane.yml) and administers its data.
//
// Every flag can also be set through an environment variable: the flag name
// upper-cased with '-' as '_' and a CONTROLPLANE_ prefix (--data-dir is
// CONTROLPLANE_DATA_DIR). Flags win over the environment.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	"github.com/peterbourgon/ff/v3"
	"github.com/peterbourgon/ff/v3/ffcli"

	"controlplane/server"
	"controlplane/store"
)

const envPrefix = "CONTROLPLANE"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run executes one CLI command and returns the exit code. Errors are one
// line on stderr; output meant for scripts (keys, tokens) is stdout alone.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	root := newRootCommand(stdout, stderr)
	err := root.Parse(args)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(stdout, ffcli.DefaultUsageFunc(helpTarget(root, args)))
		return 0
	}
	if err == nil {
		err = root.Run(ctx)
	}
	switch {
	case err == nil:
		return 0
	case errors.Is(err, errNoCommand):
		fmt.Fprintln(stderr, ffcli.DefaultUsageFunc(root))
		return 2
	}
	// One line, whatever the cause (driver errors can span several).
	msg := strings.Join(strings.Fields(err.Error()), " ")
	fmt.Fprintf(stderr, "error: %s\n", msg)
	return 1
}

var errNoCommand = errors.New("no command given")

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

// dataFlags are the flags every command that touches the database shares.
type dataFlags struct {
	dataDir       string
	db            string
	maxConns      int
	inviteWorkers int
	hooks         store.Hooks // set by serve for metrics
}

func (d *dataFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&d.dataDir, "data-dir", "./data", "directory for the SQLite database and the development issuer key")
	fs.StringVar(&d.db, "db", "", "database: "+store.DSNForms+" (default: <data-dir>/controlplane.db)")
	fs.IntVar(&d.maxConns, "db-max-conns", 32, "PostgreSQL pool size (keep replicas × pool under max_connections) / SQLite reader pool size")
	fs.IntVar(&d.inviteWorkers, "db-invite-batches", 2, "PostgreSQL: invite batch statements in flight at once (each batches the invites waiting for it; SQLite batches in its single writer)")
}

func (d *dataFlags) dsn() string {
	if d.db != "" {
		return d.db
	}
	return filepath.Join(d.dataDir, "controlplane.db")
}

// open opens the store and runs the migrations (idempotent and cheap).
func (d *dataFlags) open(ctx context.Context) (*store.Store, error) {
	st, err := store.Open(ctx, d.dsn(), store.Options{MaxOpenConns: d.maxConns, InviteWorkers: d.inviteWorkers, Hooks: d.hooks})
	if err != nil {
		return nil, err
	}
	if err := st.Migrate(ctx); err != nil {
		st.Close()
		return nil, err
	}
	return st, nil
}

// withStore opens the store, runs fn with it and closes it.
func (d *dataFlags) withStore(ctx context.Context, fn func(*store.Store) error) error {
	st, err := d.open(ctx)
	if err != nil {
		return err
	}
	defer st.Close()
	return fn(st)
}

func newFlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return fs
}

func envOptions() []ff.Option { return []ff.Option{ff.WithEnvVarPrefix(envPrefix)} }

func newRootCommand(stdout, stderr io.Writer) *ffcli.Command {
	fs := newFlagSet("controlplane")
	version := fs.Bool("version", false, "print the version and exit (as `controlplane version`)")
	return &ffcli.Command{
		Name:       "controlplane",
		ShortUsage: "controlplane <command> [flags]",
		LongHelp:   "Every flag can also be set as CONTROLPLANE_<FLAG_NAME> (e.g. CONTROLPLANE_DATA_DIR).",
		FlagSet:    fs,
		Subcommands: []*ffcli.Command{
			versionCommand(stdout),
			serveCommand(stderr),
			migrateCommand(stderr),
			workspaceCommand(stdout, stderr),
			apikeyCommand(stdout, stderr),
			tokenCommand(stdout, stderr),
			mailWorkerCommand(stderr),
			mailStatusCommand(stdout),
			mailRetryCommand(stdout),
		},
		Exec: func(_ context.Context, args []string) error {
			if *version {
				fmt.Fprintln(stdout, readBuildInfo())
				return nil
			}
			if len(args) == 0 {
				return errNoCommand
			}
			return fmt.Errorf("unknown command %q: run controlplane --help", args[0])
		},
	}
}

func newLogger(w io.Writer, level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: use debug, info, warn or error", level)
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l})), nil
}

func serveCommand(stderr io.Writer) *ffcli.Command {
	fs := newFlagSet("serve")
	var data dataFlags
	data.register(fs)
	addr := fs.String("addr", "127.0.0.1:8080", "listen address (port 0 picks a free port, logged at start)")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	logFormat := fs.String("log-format", "text", "text (key=value) or json (one object per line)")
	var metricsCfg metricsFlags
	metricsCfg.register(fs)
	inviteTTL := fs.Duration("invite-ttl", 7*24*time.Hour, "how long an invitation stays acceptable")
	bodyLimit := fs.Int64("body-limit", 64<<10, "largest accepted request body, in bytes")
	jwksURL := fs.String("jwks-url", "", "trust JWTs signed by the keys at this JWKS URL")
	jwksFile := fs.String("jwks-file", "", "trust JWTs signed by the keys in this JWKS file")
	pubKey := fs.String("jwt-public-key", "", "trust JWTs signed by this PEM public key (Ed25519, P-256 or RSA)")
	issuer := fs.String("jwt-issuer", "", "required iss claim of external tokens (empty: not checked)")
	audience := fs.String("jwt-audience", "", "required aud claim (empty: not checked)")
	requireEmailVerified := fs.Bool("jwt-require-email-verified", false, `trust a token's email for my-invitations/accept/decline only with "email_verified": true (default: a token without the claim is trusted; false is always refused)`)
	allowLocalEmails := fs.Bool("allow-local-email-domains", false, "development: accept emails at localhost, single-label or all-numeric domains (user@localhost, user@127.0.0.1)")
	shutdown := fs.Duration("shutdown-timeout", 15*time.Second, "how long in-flight requests may finish on SIGTERM")
	corsOrigins := fs.String("cors-allowed-origins", "", `comma-separated origins (https://app.example.com) whose pages may call the API from a browser, or "*" for any (default: none, no CORS headers)`)
	var mailCfg mailFlags
	mailCfg.register(fs)
	dispatch := fs.Bool("mail-dispatcher", true, "deliver invitation emails from this process (false: run `mail-worker` separately)")
	cpuProfile := fs.String("cpu-profile", "", "write a CPU profile (pprof) to this file until shutdown, for performance work")
	gcPercent := fs.Int("gc-percent", 400, "Go garbage collector target (GOGC); the GOGC environment variable, when set, wins")
	var httpCfg httpFlags
	httpCfg.register(fs)
	var limitCfg limitFlags
	limitCfg.register(fs)
	return &ffcli.Command{
		Name: "serve", ShortUsage: "controlplane serve [flags]", ShortHelp: "migrate the database and serve the API",
		FlagSet: fs, Options: envOptions(),
		Exec: func(ctx context.Context, _ []string) error {
			log, err := newLoggerFormat(stderr, *logLevel, *logFormat)
			if err != nil {
				return err
			}
			build := readBuildInfo()
			log.Info("starting", "version", build.version, "revision", build.revisionLabel(), "go", build.goVersion)
			mon, err := metricsCfg.start(build)
			if err != nil {
				return err
			}
			defer mon.close()
			data.hooks = mon.hooks()
			// The live heap of a server is a few MB; collecting at 5x
			// instead of 2x of it costs little memory and measured ~10%
			// more throughput (README, Performance).
			if _, set := os.LookupEnv("GOGC"); !set {
				debug.SetGCPercent(*gcPercent)
			}
			if *cpuProfile != "" {
				f, err := os.Create(*cpuProfile)
				if err != nil {
					return fmt.Errorf("--cpu-profile: %w", err)
				}
				defer f.Close()
				if err := pprof.StartCPUProfile(f); err != nil {
					return fmt.Errorf("--cpu-profile: %w", err)
				}
				defer pprof.StopCPUProfile()
			}
			auth := server.AuthConfig{JWKSURL: *jwksURL, JWKSFile: *jwksFile, PublicKeyFile: *pubKey, Issuer: *issuer, Audience: *audience,
				RequireEmailVerified: *requireEmailVerified}
			if n := countSet(*jwksURL, *jwksFile, *pubKey); n > 1 {
				return errors.New("set only one of --jwks-url, --jwks-file, --jwt-public-key")
			}
			if !auth.External() {
				dev, err := server.LoadDevIssuer(data.dataDir)
				if err != nil {
					return err
				}
				auth.DevIssuer = dev
				log.Warn("no external JWT issuer configured: trusting the built-in development issuer (tokens from `controlplane token`); set --jwks-url, --jwks-file or --jwt-public-key in production")
			}
			st, err := data.open(ctx)
			if err != nil {
				return err
			}
			defer st.Close()
			mon.serve(st, log)
			limits, proxies, closeLimits, err := limitCfg.build(ctx, log)
			if err != nil {
				return err
			}
			defer closeLimits()
			cfg := server.Config{InviteTTL: *inviteTTL, BodyLimit: *bodyLimit, Auth: auth, RateLimits: limits, TrustedProxies: proxies,
				AllowLocalEmailDomains: *allowLocalEmails, Metrics: mon.metrics()}
			if cfg.CORSAllowedOrigins, err = server.ParseOrigins(*corsOrigins); err != nil {
				return err
			}
			var dispatcherDone chan struct{}
			dctx, stopDispatcher := context.WithCancel(context.WithoutCancel(ctx))
			defer stopDispatcher()
			if *dispatch {
				d, err := mailCfg.dispatcher(st, data.dataDir, log)
				if err != nil {
					return err
				}
				cfg.MailQueued = d.Wake
				if m := mon.metrics(); m != nil {
					d.OnOutcome(m.MailOutcome)
				}
				dispatcherDone = make(chan struct{})
				go func() { d.Run(dctx); close(dispatcherDone) }()
			} else {
				log.Info("mail: dispatcher off in this process (--mail-dispatcher=false); run `controlplane mail-worker`")
			}
			e, closeServer, err := server.New(ctx, cfg, st, log)
			if err != nil {
				return err
			}
			defer closeServer()
			ln, err := httpCfg.listen(*addr)
			if err != nil {
				return err
			}
			srv := httpCfg.server(e, log)
			log.Info("listening", "addr", "http://"+ln.Addr().String(), "api", "http://"+ln.Addr().String()+server.APIBasePath,
				"database", st.Dialect(), "dsn", store.RedactDSN(data.dsn()))
			errc := make(chan error, 1)
			go func() { errc <- srv.Serve(ln) }()
			select {
			case err := <-errc:
				return err
			case <-ctx.Done():
			}
			log.Info("shutting down")
			sctx, cancel := context.WithTimeout(context.Background(), *shutdown)
			defer cancel()
			err = srv.Shutdown(sctx)
			// The dispatcher stops after the HTTP server: it finishes the
			// message in flight and releases what it had claimed.
			stopDispatcher()
			if dispatcherDone != nil {
				<-dispatcherDone
			}
			return err
		},
	}
}

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

func countSet(values ...string) int {
	n := 0
	for _, v := range values {
		if v != "" {
			n++
		}
	}
	return n
}

func migrateCommand(stderr io.Writer) *ffcli.Command {
	fs := newFlagSet("migrate")
	var data dataFlags
	data.register(fs)
	return &ffcli.Command{
		Name: "migrate", ShortUsage: "controlplane migrate [flags]", ShortHelp: "create or upgrade the database schema",
		FlagSet: fs, Options: envOptions(),
		Exec: func(ctx context.Context, _ []string) error {
			return data.withStore(ctx, func(st *store.Store) error {
				fmt.Fprintf(stderr, "schema up to date (%s)\n", st.Dialect())
				return nil
			})
		},
	}
}

func workspaceCommand(stdout, stderr io.Writer) *ffcli.Command {
	fs := newFlagSet("workspace create")
	var data dataFlags
	data.register(fs)
	adminSub := fs.String("admin-sub", "", "sub of the workspace's first admin (required)")
	adminEmail := fs.String("admin-email", "", "email of the first admin (required)")
	display := fs.String("display-name", "", "display name (default: the name)")
	allowLocal := fs.Bool("allow-local-email-domains", false, "development: accept an admin email at localhost, a single-label or an all-numeric domain")
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
			if *adminSub == "" || *adminEmail == "" {
				return errors.New("--admin-sub and --admin-email are required")
			}
			return data.withStore(ctx, func(st *store.Store) error {
				ws, err := st.CreateWorkspace(ctx, args[0], *display, *adminSub, *adminEmail, store.EmailOptions{AllowLocalDomains: *allowLocal})
				if err != nil {
					return err
				}
				fmt.Fprintln(stdout, ws.Name)
				fmt.Fprintf(stderr, "created workspace %q with admin %s\n", ws.Name, *adminSub)
				return nil
			})
		},
	}
	return &ffcli.Command{Name: "workspace", ShortUsage: "controlplane workspace create ...", ShortHelp: "manage workspaces",
		FlagSet: newFlagSet("workspace"), Subcommands: []*ffcli.Command{create},
		Exec: groupExec(create.ShortUsage)}
}

func apikeyCommand(stdout, stderr io.Writer) *ffcli.Command {
	createFS := newFlagSet("apikey create")
	var createData dataFlags
	createData.register(createFS)
	workspace := createFS.String("workspace", "", "workspace the key is bound to (required)")
	sub := createFS.String("sub", "", "member the key acts as (required)")
	create := &ffcli.Command{
		Name: "create", ShortUsage: "controlplane apikey create --workspace NAME --sub SUB",
		ShortHelp: "issue an API key (printed once on stdout)", FlagSet: createFS, Options: envOptions(),
		Exec: func(ctx context.Context, _ []string) error {
			if *workspace == "" || *sub == "" {
				return errors.New("--workspace and --sub are required")
			}
			return createData.withStore(ctx, func(st *store.Store) error {
				key, _, err := st.CreateAPIKey(ctx, *workspace, *sub)
				if err != nil {
					return err
				}
				fmt.Fprintln(stdout, key)
				fmt.Fprintln(stderr, "API key created; it is shown only this once")
				return nil
			})
		},
	}
	revokeFS := newFlagSet("apikey revoke")
	var revokeData dataFlags
	revokeData.register(revokeFS)
	revoke := &ffcli.Command{
		Name: "revoke", ShortUsage: "controlplane apikey revoke KEY", ShortHelp: "revoke an API key at once",
		FlagSet: revokeFS, Options: envOptions(),
		Exec: func(ctx context.Context, args []string) error {
			args, err := interspersed(revokeFS, args)
			if err != nil {
				return err
			}
			if len(args) != 1 {
				return errors.New("apikey revoke needs exactly one KEY")
			}
			return revokeData.withStore(ctx, func(st *store.Store) error {
				if err := st.RevokeAPIKey(ctx, args[0], "cli"); err != nil {
					return err
				}
				fmt.Fprintln(stderr, "API key revoked")
				return nil
			})
		},
	}
	return &ffcli.Command{Name: "apikey", ShortUsage: "controlplane apikey create|revoke ...", ShortHelp: "manage API keys",
		FlagSet: newFlagSet("apikey"), Subcommands: []*ffcli.Command{create, revoke},
		Exec: groupExec("controlplane apikey create|revoke ...")}
}

func tokenCommand(stdout, _ io.Writer) *ffcli.Command {
	fs := newFlagSet("token")
	dataDir := fs.String("data-dir", "./data", "directory holding the development issuer key")
	sub := fs.String("sub", "", "subject (required)")
	email := fs.String("email", "", "email claim")
	scope := fs.String("scope", "", "space-separated scopes, e.g. \"workspaces:invite\"")
	ttl := fs.Duration("ttl", time.Hour, "lifetime")
	return &ffcli.Command{
		Name: "token", ShortUsage: "controlplane token --sub SUB --email EMAIL --scope \"workspaces:invite ...\" [--ttl 1h]",
		ShortHelp: "print a JWT from the built-in development issuer", FlagSet: fs, Options: envOptions(),
		Exec: func(ctx context.Context, _ []string) error {
			if *sub == "" {
				return errors.New("--sub is required")
			}
			dev, err := server.LoadDevIssuer(*dataDir)
			if err != nil {
				return err
			}
			tok, err := dev.Sign(server.TokenRequest{Sub: *sub, Email: *email, Scopes: strings.Fields(*scope), TTL: *ttl}, time.Now())
			if err != nil {
				return err
			}
			fmt.Fprintln(stdout, tok)
			return nil
		},
	}
}
