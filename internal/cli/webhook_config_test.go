package cli

import (
	"flag"
	"strings"
	"testing"
	"time"
)

// TestWebhookConfig_ClaimLease: --webhook-claim-lease defaults to the
// dispatcher's 2 minutes and is refused under twice --webhook-timeout (an
// attempt may start with half the lease left and must end within it).
func TestWebhookConfig_ClaimLease(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string // "" accepted, else a part of the error
	}{
		{nil, ""},
		{[]string{"--webhook-claim-lease", "20s"}, ""},
		{[]string{"--webhook-claim-lease", "30s", "--webhook-timeout", "15s"}, ""},
		{[]string{"--webhook-claim-lease", "19s"}, "shorter than twice --webhook-timeout (10s)"},
		{[]string{"--webhook-claim-lease", "2m", "--webhook-timeout", "90s"}, "use at least 3m0s"},
		{[]string{"--webhook-claim-lease", "0s"}, "must be positive"},
		{[]string{"--webhook-claim-lease", "-1m"}, "must be positive"},
	} {
		var c webhookConfig
		fs := flag.NewFlagSet("test", flag.ContinueOnError)
		c.bind(fs)
		if err := fs.Parse(tc.args); err != nil {
			t.Fatal(err)
		}
		if tc.args == nil && c.cfg.Lease != 2*time.Minute {
			t.Errorf("default lease %v, want 2m", c.cfg.Lease)
		}
		err := c.checkLease()
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%q: %v, want accepted", tc.args, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%q: error %v, want one containing %q", tc.args, err, tc.want)
		}
	}
}
