package cli

import (
	"context"
	"flag"
	"log/slog"

	"github.com/membership-api/controlplane/store"
)

// schemaConfig is serve's --migrate flag: whether serve migrates the
// database at start or only checks that someone did (`controlplane
// migrate`, run as a step of its own). Either way serve refuses a database
// a newer release migrated.
type schemaConfig struct {
	migrate bool
}

func (c *schemaConfig) bind(fs *flag.FlagSet) {
	fs.BoolVar(&c.migrate, "migrate", true, "migrate the database at start (on PostgreSQL under a lock, so replicas may start at once); false: only check the schema and refuse to start while migrations are pending (run controlplane migrate first)")
}

// prepare is what serve runs on the store once it is open.
func (c schemaConfig) prepare() func(*store.Store, context.Context) error {
	if c.migrate {
		return (*store.Store).Migrate
	}
	return (*store.Store).CheckSchema
}

// observe logs the schema version serve starts on and sets its gauge.
func (c schemaConfig) observe(ctx context.Context, st *store.Store, mon *metricsServer, log *slog.Logger) error {
	v, err := st.SchemaVersion(ctx)
	if err != nil {
		return err
	}
	log.Info("database schema", "version", v, "dialect", st.Dialect(), "migrated_at_start", c.migrate)
	if m := mon.metrics(); m != nil {
		m.SetSchemaVersion(v)
	}
	return nil
}
