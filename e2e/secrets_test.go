package e2e_test

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/libtnb/sqlite"

	"github.com/membership-api/controlplane/internal/keyring"
)

// deploymentKeys are the secrets keys serve uses on a deployment without
// --secrets-key: on SQLite the data directory's (made here if the test's
// store handle opens before serve has made it), on PostgreSQL none. Tests
// that give serve --secrets-key and use the store handle on secrets would
// need theirs.
func deploymentKeys(tb testing.TB, dialect, dataDir string) *keyring.Keyring {
	if dialect != "sqlite" {
		return nil
	}
	k, err := keyring.LoadOrCreateFile(filepath.Join(dataDir, "secrets.key"))
	if err != nil {
		tb.Fatalf("secrets key: %v", err)
	}
	return k
}

// newSecretsKey is a fresh --secrets-key value.
func newSecretsKey(t *testing.T) string {
	t.Helper()
	k, err := keyring.Generate()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// databaseBytes is everything the deployment's database holds, as bytes a
// thief of a copy would have: the SQLite file with its WAL and shared
// memory, or a pg_dump of the PostgreSQL database.
func (e *env) databaseBytes(t *testing.T) []byte {
	t.Helper()
	if e.dialect == "postgres" {
		pgDump, err := exec.LookPath("pg_dump")
		if err != nil {
			pgDump = "/usr/lib/postgresql/15/bin/pg_dump"
		}
		out, err := exec.CommandContext(context.Background(), pgDump, "--no-owner", e.dsn).Output() //nolint:gosec // G204: the test's own database
		if err != nil {
			var exit *exec.ExitError
			if errors.As(err, &exit) {
				t.Fatalf("pg_dump: %v: %s", err, exit.Stderr)
			}
			t.Fatalf("pg_dump: %v", err)
		}
		if !bytes.Contains(out, []byte("signing_keys")) {
			t.Fatalf("pg_dump holds no signing_keys table: the dump checks nothing")
		}
		return out
	}
	var all []byte
	for _, suffix := range []string{"", "-wal", "-shm"} {
		b, err := os.ReadFile(e.dsn + suffix)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			t.Fatal(err)
		}
		all = append(all, b...)
	}
	return all
}

// checkNoSecretsIn fails if the database carries a PEM private key or a
// webhook secret, or a secret the API returned, as text or in hex (how
// pg_dump writes a bytea column such as signing_keys.private_key).
func checkNoSecretsIn(t *testing.T, db []byte, returned ...string) {
	t.Helper()
	for _, s := range append([]string{"PRIVATE KEY", "whsec_"}, returned...) {
		if holds(db, s) {
			t.Errorf("the database holds %.20q… in the clear", s)
		}
	}
}

// holds tells whether db holds s as text or in hex.
func holds(db []byte, s string) bool {
	return bytes.Contains(db, []byte(s)) || bytes.Contains(bytes.ToLower(db), []byte(hex.EncodeToString([]byte(s))))
}

// TestSecrets_NotInTheDatabase: after tokens are issued and webhooks
// delivered, the database (the SQLite files, a pg_dump) holds no private
// key and no webhook secret, while tokens and deliveries verify with what
// the API returned. SQLite runs with no key given (the data directory's,
// made at start), PostgreSQL with --secrets-key. A wrong key, or none,
// then stops serve at start naming the flag; a malformed key is refused
// without being shown.
func TestSecrets_NotInTheDatabase(t *testing.T) {
	t.Parallel()
	parallelDialects(t, func(t *testing.T, dialect string) {
		args := append([]string{"--webhook-ca-file", testCA(t)}, fastWebhooks...)
		key := ""
		if dialect == "postgres" {
			key = newSecretsKey(t)
			args = append(args, "--secrets-key", key)
		}
		f := newFixture(t, dialect, args...)
		if dialect == "sqlite" {
			fi, err := os.Stat(f.dataDir + "/secrets.key")
			if err != nil || fi.Mode().Perm() != 0o600 {
				t.Fatalf("SQLite with no key: the data directory's key %v %v, want a file of mode 0600", fi, err)
			}
		}

		sa := f.oauthClient(t, "deployer", "admin")
		token := f.mustToken(t, sa, "")
		if got := f.send(t, f.srv, "GET", "/v0/users", saHeaders(token), ""); got.status != 200 {
			t.Fatalf("the issued token: %d %s", got.status, got.message)
		}
		rcv := &receiver{}
		hook := httptest.NewTLSServer(rcv)
		defer hook.Close()
		ep := f.createEndpoint(t, hook.URL+"/hook")
		if resp, b := f.do(t, "POST", fmt.Sprintf("/v0/webhooks/%d/test", ep.Id), f.bearer(f.auditToken(f.adminSub, "")), ""); resp.StatusCode != 202 {
			t.Fatalf("test event: %d %s", resp.StatusCode, b)
		}
		waitUntil(t, "the delivery", func() bool { b, _ := rcv.received(); return len(b) >= 1 })
		bodies, heads := rcv.received()
		verifyDeliveries(t, *ep.Secret, bodies, heads)

		checkNoSecretsIn(t, f.databaseBytes(t), *ep.Secret, strings.TrimPrefix(*ep.Secret, "whsec_"))
		if resp, b := rawDo(t, http.MethodGet, f.srv.URL+"/readyz", nil); resp.StatusCode != 200 || bytes.Contains(b, []byte("clear")) {
			t.Errorf("/readyz with a key: %d %s, want ready without a warning", resp.StatusCode, b)
		}
		f.srv.stop()

		serve := f.args("serve", "--addr", "127.0.0.1:0")
		wrong := newSecretsKey(t)
		for name, extra := range map[string][]string{
			"WrongKey": {"--secrets-key", wrong},
			"NoKey":    {"--data-dir", t.TempDir()}, // SQLite: a new key; PostgreSQL: none
		} {
			if dialect == "sqlite" && name == "NoKey" {
				continue // the SQLite file alone, with no key, is the WrongKey case here
			}
			s, err := startServer(append(append([]string(nil), serve...), extra...))
			if err == nil {
				s.stop()
				t.Errorf("%s: serve started", name)
				continue
			}
			if !strings.Contains(err.Error(), "--secrets-key") || strings.Contains(err.Error(), wrong) {
				t.Errorf("%s: serve failed with %v; want a message naming --secrets-key, never the key", name, err)
			}
		}
		r := runCLI(t, append(serve, "--secrets-key", wrong+",c2hvcnQ")...)
		if r.code == 0 || !strings.Contains(r.stderr, "--secrets-key: key 2") || strings.Contains(r.stderr, wrong) {
			t.Errorf("a malformed key: exit %d, %q; want refused naming the flag and the key's position only", r.code, r.stderr)
		}
	})
}

// TestSecrets_PostgresWithoutKey: PostgreSQL with no key works as before,
// and says at start and in /readyz that secrets are stored in the clear;
// `secrets rotate` then converts them, after which serve needs the key.
func TestSecrets_PostgresWithoutKey(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "postgres")
	if !strings.Contains(f.srv.logs.String(), "stored in the clear") {
		t.Errorf("serve's log does not say the secrets are stored in the clear:\n%s", f.srv.logs.String())
	}
	resp, b := rawDo(t, "GET", f.srv.URL+"/readyz", nil)
	if resp.StatusCode != 200 || !bytes.Contains(b, []byte("stored in the clear")) {
		t.Errorf("/readyz: %d %s, want it to say the secrets are stored in the clear", resp.StatusCode, b)
	}
	sa := f.oauthClient(t, "deployer", "admin")
	f.mustToken(t, sa, "")
	ep := f.createEndpoint(t, "https://hooks.example.com/x")
	db := f.databaseBytes(t)
	if !holds(db, "PRIVATE KEY") || !holds(db, *ep.Secret) {
		t.Fatal("without a key the dump should hold the secrets in the clear: the dump check would check nothing")
	}
	f.srv.stop()

	key := newSecretsKey(t)
	out := mustCLI(t, f.args("secrets", "rotate", "--secrets-key", key)...)
	if !strings.Contains(out, "re-encrypted 2 secrets") || !strings.Contains(out, "2 were stored in the clear") {
		t.Errorf("secrets rotate: %q, want the key and the secret converted", out)
	}
	checkNoSecretsIn(t, f.databaseBytes(t), *ep.Secret)
	if out := mustCLI(t, f.args("secrets", "rotate", "--secrets-key", key)...); !strings.Contains(out, "re-encrypted 0 secrets") {
		t.Errorf("secrets rotate again: %q, want nothing to do", out)
	}
	if _, err := startServer(f.args("serve", "--addr", "127.0.0.1:0")); err == nil || !strings.Contains(err.Error(), "--secrets-key") {
		t.Errorf("serve without the key after conversion: %v, want it refused naming --secrets-key", err)
	}
	srv := f.start("--secrets-key", key)
	f.srv = srv
	f.mustToken(t, sa, "")
}

// TestSecrets_RotationKeepsServing: two replicas, the first given the new
// key second, the other first; `secrets rotate` re-encrypts everything
// under the new key while both serve. A token signed before the rotation
// still verifies on both, new tokens are issued, deliveries go on and
// verify with the secret the API returned; a server given the new key
// alone then starts and serves.
func TestSecrets_RotationKeepsServing(t *testing.T) {
	t.Parallel()
	parallelDialects(t, func(t *testing.T, dialect string) {
		oldKey, newKey := newSecretsKey(t), newSecretsKey(t)
		common := append([]string{"--webhook-ca-file", testCA(t), "--oauth-key-refresh", "100ms"}, fastWebhooks...)
		f := newFixture(t, dialect, append([]string{"--secrets-key", oldKey + "," + newKey}, common...)...)
		replica := f.start(append([]string{"--public-url", f.srv.URL, "--secrets-key", newKey + "," + oldKey}, common...)...)

		sa := f.oauthClient(t, "deployer", "admin")
		before := f.mustToken(t, sa, "")
		rcv := &receiver{}
		hook := httptest.NewTLSServer(rcv)
		defer hook.Close()
		ep := f.createEndpoint(t, hook.URL+"/hook")
		sendTest := func(srv *runningServer, n int) {
			t.Helper()
			if got := f.send(t, srv, "POST", fmt.Sprintf("/v0/webhooks/%d/test", ep.Id), f.bearer(f.auditToken(f.adminSub, "")), ""); got.status != 202 {
				t.Fatalf("test event: %d %s", got.status, got.message)
			}
			waitUntil(t, "the deliveries", func() bool { b, _ := rcv.received(); return len(b) >= n })
		}
		sendTest(f.srv, 1)

		// (On SQLite the replica, given the new key first, has already
		// re-encrypted what was there when it started: serve does on SQLite.)
		out := mustCLI(t, f.args("secrets", "rotate", "--secrets-key", newKey+","+oldKey, "--batch", "1")...)
		if !strings.Contains(out, "re-encrypted") || !strings.Contains(out, "(0 were stored in the clear)") {
			t.Errorf("secrets rotate: %q", out)
		}
		status := mustCLI(t, f.args("secrets", "status", "--secrets-key", newKey)...)
		raw, _ := keyring.Decode(newKey)
		if want := "1 key " + keyring.KeyID(raw); !strings.Contains(status, "signing keys: "+want) || !strings.Contains(status, "webhook secrets: "+want) {
			t.Errorf("secrets status after the rotation:\n%s\nwant everything under the new key %s", status, keyring.KeyID(raw))
		}

		// Both replicas keep serving: tokens from before and after, deliveries.
		after := f.mustToken(t, sa, "")
		for _, srv := range []*runningServer{f.srv, replica} {
			for name, token := range map[string]string{"before": before, "after": after} {
				if got := f.send(t, srv, "GET", "/v0/users", saHeaders(token), ""); got.status != 200 {
					t.Errorf("token signed %s the rotation, on %s: %d %s", name, srv.URL, got.status, got.message)
				}
			}
		}
		sendTest(replica, 2)
		sendTest(f.srv, 3)
		bodies, heads := rcv.received()
		verifyDeliveries(t, *ep.Secret, bodies, heads)

		// The old key can go.
		f.srv.stop()
		replica.stop()
		alone := f.start(append([]string{"--public-url", f.srv.URL, "--secrets-key", newKey}, common...)...)
		if got := f.send(t, alone, "GET", "/v0/users", saHeaders(before), ""); got.status != 200 {
			t.Errorf("token signed before the rotation, on a server with the new key alone: %d %s", got.status, got.message)
		}
		sendTest(alone, 4)
		bodies, heads = rcv.received()
		verifyDeliveries(t, *ep.Secret, bodies, heads)
		checkNoSecretsIn(t, f.databaseBytes(t), *ep.Secret)
	})
}

// TestSecrets_MovedValueRefused: a webhook secret copied into another
// endpoint's row does not decrypt: serve refuses to start on it (the check
// opens one value per key, the lowest id first: the copy is put there).
func TestSecrets_MovedValueRefused(t *testing.T) {
	t.Parallel()
	parallelDialects(t, func(t *testing.T, dialect string) {
		key := newSecretsKey(t)
		f := newFixture(t, dialect, "--secrets-key", key)
		first := f.createEndpoint(t, "https://hooks.example.com/a")
		second := f.createEndpoint(t, "https://hooks.example.com/b")
		f.srv.stop()
		f.exec(t, "UPDATE webhook_endpoints SET secret = (SELECT secret FROM webhook_endpoints WHERE id = $1) WHERE id = $2", second.Id, first.Id)
		_, err := startServer(f.args("serve", "--addr", "127.0.0.1:0", "--secrets-key", key))
		if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("webhook endpoint %d", first.Id)) || !strings.Contains(err.Error(), "moved from another row") {
			t.Errorf("serve over a moved secret: %v, want refused naming endpoint %d", err, first.Id)
		}
	})
}

// exec runs one statement on the deployment's database, as someone with
// write access to it (not the server) would.
func (e *env) exec(t *testing.T, query string, args ...any) {
	t.Helper()
	driver, dsn := sqlite.DriverName, e.dsn
	if e.dialect == "postgres" {
		driver = "pgx"
	}
	db, err := sql.Open(driver, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.ExecContext(context.Background(), query, args...); err != nil {
		t.Fatal(err)
	}
}
