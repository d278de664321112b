package e2e_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/membership-api/controlplane/internal/cli"
)

// TestWebhookWorker_ClaimLeaseUnderTwiceTimeout: a claim lease an attempt
// could outlast is refused at start, naming both flags, by serve and the
// worker alike.
func TestWebhookWorker_ClaimLeaseUnderTwiceTimeout(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "sqlite")
	for _, cmd := range [][]string{{"webhook-worker"}, {"serve", "--addr", "127.0.0.1:0"}} {
		// Bounded: a command that accepted the flags would run until ctx ends.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		var out, errOut strings.Builder
		code := cli.Run(ctx, append(e.args(cmd...), "--webhook-timeout", "10s", "--webhook-claim-lease", "15s"), &out, &errOut)
		cancel()
		if code == 0 || !strings.Contains(errOut.String(), "--webhook-claim-lease") || !strings.Contains(errOut.String(), "--webhook-timeout") {
			t.Errorf("%s --webhook-claim-lease 15s: exit %d, stderr %q; want an error naming both flags", cmd[0], code, errOut.String())
		}
	}
}
