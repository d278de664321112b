package cli

import (
	"flag"
	"os"
	"runtime/debug"
)

// gcConfig is --gc-percent, the Go garbage collector target of the
// long-running commands: serve and the delivery workers (mail-worker,
// webhook-worker).
type gcConfig struct{ percent int }

func (c *gcConfig) bind(fs *flag.FlagSet) {
	fs.IntVar(&c.percent, "gc-percent", 400, "Go garbage collector target (GOGC); the GOGC environment variable, when set, wins")
}

// apply sets the target unless GOGC does. The live heap of these processes
// is a few MB: collecting at 5x instead of 2x of it costs little memory,
// and measured ~10% more requests per second of serve and 15-25% more
// deliveries per second of a webhook dispatcher on SQLite, 6-14% on
// PostgreSQL (docs/contributing/benchmarks.md).
func (c gcConfig) apply() {
	if _, set := os.LookupEnv("GOGC"); !set {
		debug.SetGCPercent(c.percent)
	}
}
