package cli

// serve --dev: the server for other people's tests (internal/devserver),
// with its flags in devConfig.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"

	"github.com/membership-api/controlplane/auth"
	"github.com/membership-api/controlplane/internal/devserver"
	"github.com/membership-api/controlplane/server"
	"github.com/membership-api/controlplane/store"
)

// devConfig is serve's dev-mode flags.
type devConfig struct {
	on       bool
	public   bool
	fixtures string
	// fs is serve's flag set, to tell a --data-dir given from its default.
	fs *flag.FlagSet
}

func (d *devConfig) bind(fs *flag.FlagSet) {
	d.fs = fs
	fs.BoolVar(&d.on, "dev", false, "development and tests only: a temporary data directory (unless --data-dir), SQLite emptied at start and loaded with the fixtures, "+
		"emails kept in a mailbox, a test clock and reset under "+server.DevBasePath+" (openapi/dev.yml); prints the URL, an admin token and an API key")
	fs.BoolVar(&d.public, "dev-listen-public", false, "let --dev listen on a non-loopback --addr (its dev routes need no credentials: anyone who reaches it can reset it)")
	fs.StringVar(&d.fixtures, "fixtures", "", "with --dev: a YAML file of workspaces, members, invitations, service accounts and API keys loaded at start and on reset (default: workspace \"dev\" and its admin)")
}

// devWorkspace is the workspace a dev server without --fixtures starts with.
const devWorkspace = "dev"

// serveDev runs serve --dev until ctx ends.
func serveDev(ctx context.Context, cfg serveConfig, stdout, stderr io.Writer) error {
	if !cfg.dev.on {
		return errors.New("--fixtures needs --dev")
	}
	if err := checkDevAddr(cfg.addr, cfg.dev.public); err != nil {
		return err
	}
	if store.IsPostgresDSN(cfg.data.db) || strings.HasPrefix(strings.ToLower(cfg.data.db), "postgres") {
		return errors.New("serve --dev runs on SQLite only (its reset deletes every workspace): drop --db, or give it a SQLite file; run serve without --dev against PostgreSQL")
	}
	if err := checkDB(cfg.data.db); err != nil {
		return err
	}
	log, err := cfg.log.logger(stderr)
	if err != nil {
		return err
	}
	given := false
	cfg.dev.fs.Visit(func(f *flag.Flag) { given = given || f.Name == "data-dir" })
	if !given {
		dir, err := os.MkdirTemp("", "controlplane-dev-")
		if err != nil {
			return err
		}
		defer func() {
			if err := os.RemoveAll(dir); err != nil {
				log.Warn("remove the dev data directory", "dir", dir, "err", err)
			}
		}()
		cfg.data.dataDir = dir
	}
	emails := store.EmailOptions{AllowLocalDomains: cfg.api.AllowLocalEmailDomains}
	fixtures, adminSub, adminEmail, key, err := devFixtures(cfg.dev.fixtures, emails)
	if err != nil {
		return err
	}
	ln, err := cfg.http.listen(ctx, cfg.addr)
	if err != nil {
		return err
	}
	api := cfg.api
	api.Auth = auth.VerifierConfig{}
	dev, err := devserver.Build(ctx, devserver.Options{DataDir: cfg.data.dataDir, DSN: cfg.data.db, Listener: ln, API: api,
		Mail: cfg.mail.dispatch, Webhooks: cfg.hooks.cfg, Fixtures: fixtures, Log: log})
	if err != nil {
		return errors.Join(err, ln.Close())
	}
	defer closeLogged(log, "dev server", dev.Close)
	token, err := dev.Issuer.Sign(auth.TokenRequest{Sub: adminSub, Email: adminEmail, Scopes: []string{"admin"}, TTL: 24 * time.Hour}, dev.Clock.Now())
	if err != nil {
		return err
	}
	log.Warn("dev mode: not for production (no credentials on " + server.DevBasePath + ", emails kept in memory, a test clock)")
	where := cfg.data.dataDir + " (removed at exit)"
	if given {
		where = cfg.data.dataDir
	}
	_, err = fmt.Fprintf(stdout, "# controlplane serve --dev: data in %s\n# the admin's token lasts 24h of the server's clock; the API key until a reset without fixtures\n"+
		"BL_API_URL=%s%s\nBL_WORKSPACE=%s\nBL_API_KEY=%s\nCONTROLPLANE_ADMIN_TOKEN=%s\nCONTROLPLANE_DEV_URL=%s%s\n",
		where, dev.URL, server.APIBasePath, fixtures.Workspaces[0].Name, key, token, dev.URL, server.DevBasePath)
	if err != nil {
		return err
	}
	return cfg.serveOn(ctx, ln, dev.Handler, dev.Store.Dialect(), log)
}

// checkDevAddr refuses an address other machines can reach, unless allowed:
// a dev server's routes need no credentials.
func checkDevAddr(addr string, public bool) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil || public {
		return nil // serve's listen says what is wrong with a malformed one
	}
	if ip := net.ParseIP(host); strings.EqualFold(host, "localhost") || ip != nil && ip.IsLoopback() {
		return nil
	}
	shown := host
	if shown == "" {
		shown = "every interface"
	}
	return fmt.Errorf("serve --dev listens on loopback only (--addr 127.0.0.1:PORT), not on %s: its dev routes (reset, clock) need no credentials; add --dev-listen-public to allow it", shown)
}

// devFixtures reads --fixtures, or makes the default one (workspace "dev"
// and its admin), and makes sure the first workspace's admin has an API
// key to print: the fixtures' own, or one added with a random secret (so a
// reset keeps it).
func devFixtures(path string, emails store.EmailOptions) (f *store.Fixtures, adminSub, adminEmail, key string, err error) {
	if path != "" {
		if f, err = devserver.LoadFixtures(path, emails); err != nil {
			return nil, "", "", "", err
		}
	}
	if f == nil || len(f.Workspaces) == 0 {
		f = &store.Fixtures{Workspaces: []store.FixtureWorkspace{{Name: devWorkspace, DisplayName: "Dev",
			Admin: store.FixtureMember{Sub: "dev-admin", Email: "admin@dev.test"}}}}
	}
	w := &f.Workspaces[0]
	for _, k := range w.APIKeys {
		if k.Sub == w.Admin.Sub && k.ExpiresIn == "" {
			return f, w.Admin.Sub, w.Admin.Email, k.Key, nil
		}
	}
	b := make([]byte, 20)
	if _, err := rand.Read(b); err != nil {
		return nil, "", "", "", err
	}
	key = store.APIKeyPrefix + "dev_" + hex.EncodeToString(b)
	w.APIKeys = append(w.APIKeys, store.FixtureAPIKey{Sub: w.Admin.Sub, Name: "serve --dev", Key: key})
	return f, w.Admin.Sub, w.Admin.Email, key, nil
}
