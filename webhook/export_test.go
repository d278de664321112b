package webhook

import "net/http"

// NewClientForTest is the delivery client of cfg (newClient), for the
// benchmarks of package webhook_test.
func NewClientForTest(cfg Config) *http.Client {
	cfg.defaults()
	return newClient(cfg)
}
