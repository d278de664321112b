package cli

// The webhook-worker command: delivers the webhook outbox in a process of
// its own (for serve --webhook-dispatcher=false), as mail-worker does the
// email outbox.

import (
	"context"
	"flag"
	"io"
	"log/slog"

	"github.com/peterbourgon/ff/v3/ffcli"

	"github.com/membership-api/controlplane/store"
)

// webhookWorkerConfig is every flag of webhook-worker.
type webhookWorkerConfig struct {
	data    dataConfig
	log     logConfig
	metrics metricsConfig
	hooks   webhookConfig
	gc      gcConfig
}

func (c *webhookWorkerConfig) bind(fs *flag.FlagSet) {
	c.data.bind(fs)
	c.data.bindPool(fs)
	c.log.bind(fs)
	c.metrics.bind(fs)
	c.hooks.bind(fs)
	c.gc.bind(fs)
}

func webhookWorkerCommand(stderr io.Writer) *ffcli.Command {
	fs := newFlagSet("webhook-worker")
	var cfg webhookWorkerConfig
	cfg.bind(fs)
	return &ffcli.Command{
		Name: "webhook-worker", ShortUsage: "controlplane webhook-worker [flags]",
		ShortHelp: "deliver webhook events from the outbox (for serve --webhook-dispatcher=false)",
		FlagSet:   fs, Options: envOptions(),
		Exec: func(ctx context.Context, _ []string) error { return webhookWorker(ctx, cfg, stderr) },
	}
}

// webhookWorker delivers the webhook outbox (and applies --audit-retention)
// until ctx ends, observed as serve is.
func webhookWorker(ctx context.Context, cfg webhookWorkerConfig, stderr io.Writer) error {
	return runWorker(ctx, cfg.data, cfg.log, cfg.metrics, cfg.gc, stderr, func(st *store.Store, mon *metricsServer, log *slog.Logger) error {
		if _, err := st.CheckSecrets(ctx); err != nil { // a wrong --secrets-key stops it now, as it does serve
			return err
		}
		mon.serve(st, log)
		cfg.hooks.dispatch = true // the worker's one job, whatever --webhook-dispatcher says
		_, stop, err := cfg.hooks.start(ctx, st, mon, log)
		if err != nil {
			return err
		}
		<-ctx.Done()
		stop()
		return nil
	})
}
