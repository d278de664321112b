// Command webhook-receiver is the smallest receiver worth copying: it checks
// every delivery's Standard Webhooks signature before it believes a word of
// it, answers 204 to a valid delivery and 400 to anything else, and prints
// one line per delivery:
//
//	verified invitation.created msg_…
//	REJECTED no matching signature found
//
// The walk in docs/api/audit-and-webhooks.md runs it:
//
//	go run ./docs/examples/webhook-receiver --addr 127.0.0.1:9000 --secret-file whsec.txt
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"strings"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:9000", "address to listen on")
	secretFile := flag.String("secret-file", "whsec.txt", "file holding the endpoint's secret (whsec_…)")
	flag.Parse()

	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		// Deliveries are small JSON events; a megabyte is plenty.
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err != nil {
			reject(w, "reading the body: "+err.Error())
			return
		}
		// Read the secret at each request rather than once at start, so the
		// receiver can run before the endpoint (and its secret) exists.
		secret, err := os.ReadFile(*secretFile) //nolint:gosec // G304: the file is the one its operator names
		if err != nil {
			reject(w, "no secret yet: "+err.Error())
			return
		}
		wh, err := standardwebhooks.NewWebhook(strings.TrimSpace(string(secret)))
		if err != nil {
			reject(w, "bad secret: "+err.Error())
			return
		}
		// Verify checks the HMAC over id.timestamp.body and that the
		// timestamp is within 5 minutes, which stops replays of old captures.
		if err := wh.Verify(body, r.Header); err != nil {
			reject(w, err.Error())
			return
		}
		// Only now is the body trusted. A real receiver would deduplicate on
		// webhook-id (the same on every retry) and queue the work, answering
		// quickly: a slow answer counts as a failure and is retried.
		var event struct {
			Type string `json:"type"`
		}
		if err := json.Unmarshal(body, &event); err != nil {
			reject(w, "not a JSON event: "+err.Error())
			return
		}
		fmt.Println("verified", event.Type, r.Header.Get("webhook-id"))
		w.WriteHeader(http.StatusNoContent)
	})

	// Timeouts keep a slow or stalled client from holding a connection open.
	srv := &http.Server{Addr: *addr, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 30 * time.Second}
	log.Fatal(srv.ListenAndServe())
}

// reject answers 400, so the sender retries later, and says why on stdout.
func reject(w http.ResponseWriter, reason string) {
	fmt.Println("REJECTED", reason)
	http.Error(w, reason, http.StatusBadRequest)
}
