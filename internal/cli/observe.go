package cli

// Observability of `serve` and the worker commands (`mail-worker`,
// `webhook-worker`): the version, the log level and format, and the
// Prometheus metrics listener (docs/operations/monitoring.md).

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime/debug"
	"time"

	"github.com/peterbourgon/ff/v3/ffcli"

	"github.com/membership-api/controlplane/mail"
	"github.com/membership-api/controlplane/metrics"
	"github.com/membership-api/controlplane/server"
	"github.com/membership-api/controlplane/store"
)

// buildInfo is what the binary knows of its own build.
type buildInfo struct {
	version   string // the module version: a tag, a pseudo-version, or (devel)
	revision  string // the VCS commit, or "unknown" (built with -buildvcs=false)
	modified  bool   // built from a working tree with uncommitted changes
	goVersion string
}

// readBuildInfo reads the build from the binary (runtime/debug), so it is
// right however the binary was built, with nothing to pass at link time.
func readBuildInfo() buildInfo {
	b := buildInfo{version: "unknown", revision: "unknown", goVersion: "unknown"}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return b
	}
	b.goVersion = info.GoVersion
	if info.Main.Version != "" {
		b.version = info.Main.Version
	}
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			b.revision = s.Value
		case "vcs.modified":
			b.modified = s.Value == "true"
		}
	}
	return b
}

func (b buildInfo) String() string {
	rev := b.revision
	if b.modified {
		rev += " (modified)"
	}
	return fmt.Sprintf("controlplane %s revision %s %s", b.version, rev, b.goVersion)
}

// revisionLabel is the revision as one token, for logs and the build_info metric.
func (b buildInfo) revisionLabel() string {
	if b.modified {
		return b.revision + "-modified"
	}
	return b.revision
}

func versionCommand(stdout io.Writer) *ffcli.Command {
	return &ffcli.Command{
		Name: "version", ShortUsage: "controlplane version", ShortHelp: "print the module version, VCS revision and Go version",
		FlagSet: newFlagSet("version"),
		Exec: func(context.Context, []string) error {
			_, err := fmt.Fprintln(stdout, readBuildInfo())
			return err
		},
	}
}

// logConfig is how a long-running command logs.
type logConfig struct {
	level  string
	format string
}

func (c *logConfig) bind(fs *flag.FlagSet) {
	fs.StringVar(&c.level, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&c.format, "log-format", "text", "text (key=value) or json (one object per line)")
}

// logger returns the logger writing to w, or an error naming the flag that
// is wrong.
func (c *logConfig) logger(w io.Writer) (*slog.Logger, error) {
	return newLogger(w, c.level, c.format)
}

// newLogger returns a logger at level in format: text (logfmt-like
// key=value) or json (one object per line, for log collectors).
func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: use debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: l}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: use text or json", format)
}

// startObserved is how both long-running commands (serve, mail-worker)
// begin: their logger, a start line naming the build, and the metrics
// listener (nil when --metrics-addr is empty; the caller closes it).
func startObserved(ctx context.Context, lc logConfig, mc metricsConfig, stderr io.Writer) (*slog.Logger, *metricsServer, error) {
	log, err := lc.logger(stderr)
	if err != nil {
		return nil, nil, err
	}
	build := readBuildInfo()
	log.Info("starting", "version", build.version, "revision", build.revisionLabel(), "go", build.goVersion)
	mon, err := mc.start(ctx, build)
	if err != nil {
		return nil, nil, err
	}
	return log, mon, nil
}

// metricsConfig places the Prometheus metrics.
type metricsConfig struct {
	addr string
}

func (m *metricsConfig) bind(fs *flag.FlagSet) {
	fs.StringVar(&m.addr, "metrics-addr", "", "serve Prometheus metrics at http://ADDR/metrics, on a listener of their own (e.g. :9464); empty: no metrics")
}

// outboxEvery is how often the outbox gauges are read at most: every
// replica is scraped, every replica's figures are the same database's.
const outboxEvery = 15 * time.Second

// metricsServer is the running metrics listener of serve or mail-worker.
// Its methods do nothing on a nil *metricsServer (metrics off), so callers
// need no branch.
type metricsServer struct {
	m   *metrics.Metrics
	srv *http.Server
	ln  net.Listener
}

// start makes the metrics and opens their listener (nil, nil when
// --metrics-addr is empty). The store's hooks are in hooks(), its pools
// and outbox are added by serve once it is open.
func (m *metricsConfig) start(ctx context.Context, build buildInfo) (*metricsServer, error) {
	if m.addr == "" {
		return nil, nil
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", m.addr)
	if err != nil {
		return nil, fmt.Errorf("--metrics-addr: listen on %s: %w", m.addr, err)
	}
	quotas := []string{server.QuotaCaller, server.QuotaWorkspaceWrites, server.QuotaWorkspaceInvites, server.QuotaFailedAuth}
	return &metricsServer{m: metrics.New(metrics.Build{Version: build.version, Revision: build.revisionLabel(), GoVersion: build.goVersion}, quotas), ln: ln}, nil
}

// hooks are the store's observations, recorded as metrics.
func (s *metricsServer) hooks() store.Hooks {
	if s == nil {
		return store.Hooks{}
	}
	return store.Hooks{InviteBatch: s.m.InviteBatch, SQLiteCommit: s.m.SQLiteCommit, SQLiteFsync: s.m.SQLiteFsync}
}

// metrics returns the recorder for the server's Config (nil: off).
func (s *metricsServer) metrics() *metrics.Metrics {
	if s == nil {
		return nil
	}
	return s.m
}

// watchMail counts the dispatcher's delivery outcomes.
func (s *metricsServer) watchMail(d *mail.Dispatcher) {
	if s == nil {
		return
	}
	d.OnOutcome(s.m.MailOutcome)
}

// serve adds the store's pools and outbox, then serves /metrics until close.
func (s *metricsServer) serve(st *store.Store, log *slog.Logger) {
	if s == nil {
		return
	}
	for name, db := range st.DBs() {
		s.m.RegisterDB(name, db)
	}
	s.m.RegisterOutbox(func(ctx context.Context) (metrics.OutboxStats, error) {
		o, err := st.OutboxStats(ctx)
		return metrics.OutboxStats{Pending: o.Pending, Failed: o.Failed, OldestPending: o.OldestPending}, err
	}, outboxEvery)
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", s.m.Handler(log))
	s.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second,
		WriteTimeout: 30 * time.Second, IdleTimeout: time.Minute, MaxHeaderBytes: 16 << 10,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
	log.Info("metrics listening", "addr", "http://"+s.ln.Addr().String()+"/metrics")
	go func() {
		if err := s.srv.Serve(s.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics listener stopped", "err", err)
		}
	}()
}

// close stops the metrics listener (scrapes in flight get a moment, also
// when ctx, the command's, is done: that is when close runs).
func (s *metricsServer) close(ctx context.Context, log *slog.Logger) {
	if s == nil {
		return
	}
	if s.srv == nil {
		closeLogged(log, "metrics listener", s.ln.Close)
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	if err := s.srv.Shutdown(ctx); err != nil {
		log.Warn("metrics listener: shutdown", "err", err)
	}
}
