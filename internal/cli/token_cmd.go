package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/peterbourgon/ff/v3/ffcli"

	"github.com/membership-api/controlplane/auth"
)

// tokenConfig is every flag of `token`. It reads only the issuer key, so it
// has --data-dir but none of the database flags.
type tokenConfig struct {
	dataDir string
	sub     string
	email   string
	scope   string
	ttl     time.Duration
}

func (c *tokenConfig) bind(fs *flag.FlagSet) {
	fs.StringVar(&c.dataDir, "data-dir", defaultDataDir, "directory holding the development issuer key")
	fs.StringVar(&c.sub, "sub", "", "subject (required)")
	fs.StringVar(&c.email, "email", "", "email claim")
	fs.StringVar(&c.scope, "scope", "", "space-separated scopes (required), e.g. \"workspaces:get workspaces:invite\" or admin")
	fs.DurationVar(&c.ttl, "ttl", time.Hour, "lifetime")
}

func tokenCommand(stdout io.Writer) *ffcli.Command {
	fs := newFlagSet("token")
	var cfg tokenConfig
	cfg.bind(fs)
	return &ffcli.Command{
		Name: "token", ShortUsage: "controlplane token --sub SUB --scope \"workspaces:invite ...\" [--email EMAIL] [--ttl 1h]",
		ShortHelp: "print a JWT from the built-in development issuer", FlagSet: fs, Options: envOptions(),
		Exec: func(context.Context, []string) error { return printToken(cfg, stdout) },
	}
}

// printToken prints a development-issuer token alone on stdout (for
// TOKEN=$(controlplane token …)).
func printToken(cfg tokenConfig, stdout io.Writer) error {
	if cfg.sub == "" {
		return errors.New("--sub is required")
	}
	// A token without scopes is refused by every operation: better said
	// now than as a 403 later.
	if strings.TrimSpace(cfg.scope) == "" {
		return errors.New(`--scope is required: the token may call only the operations its scopes name, e.g. --scope "workspaces:get workspaces:invite" (or --scope admin)`)
	}
	dev, err := auth.LoadDevIssuer(cfg.dataDir)
	if err != nil {
		return err
	}
	tok, err := dev.Sign(auth.TokenRequest{Sub: cfg.sub, Email: cfg.email, Scopes: strings.Fields(cfg.scope), TTL: cfg.ttl}, time.Now())
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(stdout, tok)
	return err
}
