package e2e_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Clients that go away: a client that sends a whole request and
// then half-closes or closes its connection cancels the request's context.
// That is the client's doing: never a 5xx or an ERROR log, the access log
// says 499, and a write either happened whole or not at all.

// leaveMode is how a raw client leaves after sending its request.
type leaveMode int

const (
	halfClose   leaveMode = iota // CloseWrite, then read whatever answer comes
	closeAtOnce                  // Close right after the request
)

// sendAndLeave sends req over its own TCP connection and leaves as mode
// says. A half-closed client reads the answer, if the server sends one, and
// checks it against the spec like every other response; it returns the
// status, or 0 when the server closed without answering.
func sendAndLeave(t *testing.T, addr string, req *http.Request, mode leaveMode) int {
	t.Helper()
	conn, err := (&net.Dialer{}).DialContext(context.Background(), "tcp", addr)
	if err != nil {
		t.Error(err)
		return 0
	}
	defer conn.Close()
	if err := req.Write(conn); err != nil {
		t.Error(err)
		return 0
	}
	if mode == closeAtOnce {
		return 0
	}
	if err := conn.(*net.TCPConn).CloseWrite(); err != nil {
		t.Error(err)
		return 0
	}
	conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), req)
	if err != nil {
		return 0 // closed without an answer: the server saw the client leave
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Error(err)
		return 0
	}
	checkResponse(t, req, resp, body)
	return resp.StatusCode
}

// rawRequest builds a request for sendAndLeave (req.Write sends it as HTTP/1.1
// with Host and Content-Length).
func rawRequest(t *testing.T, baseURL, method, path string, header http.Header, body string) *http.Request {
	t.Helper()
	req, err := http.NewRequestWithContext(context.Background(), method, baseURL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header = header.Clone()
	return req
}

// accessStatuses returns the statuses of the access-log lines of method and
// path, in order.
func accessStatuses(logs, method, path string) []int {
	re := regexp.MustCompile(`msg=request request_id=\S+ operation=\S+ method=` + method + ` route=` + regexp.QuoteMeta(path) + ` status=(\d+)`)
	var statuses []int
	for _, m := range re.FindAllStringSubmatch(logs, -1) {
		n, _ := strconv.Atoi(m[1])
		statuses = append(statuses, n)
	}
	return statuses
}

// waitForAccessLines waits until the server logged n requests of method and
// path (a client that left does not wait for its request to finish).
func (f *fixture) waitForAccessLines(t *testing.T, method, path string, n int) []int {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		statuses := accessStatuses(f.srv.logs.String(), method, path)
		if len(statuses) >= n {
			return statuses
		}
		if time.Now().After(deadline) {
			t.Fatalf("the server logged %d of %d %s %s requests:\n%s", len(statuses), n, method, path, f.srv.logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

var serverErrorLine = regexp.MustCompile(`(?m)^.*(level=ERROR|status=5\d\d).*$`)

// TestAbort_ClientGoesAway sends invites (by token and by API key) and
// lists over raw TCP, all in parallel, from clients that half-close or close
// at once. Before they were handled, about half of them were answered 500 with an
// ERROR line ("context canceled").
func TestAbort_ClientGoesAway(t *testing.T) {
	t.Parallel()
	parallelDialects(t, func(t *testing.T, dialect string) {
		// Limits off: every request must reach the code that meets the
		// cancellation (a 429 is answered before it).
		f := newFixture(t, dialect, "--rate-limits=false")
		before := f.countRows(t)
		addr := strings.TrimPrefix(f.srv.URL, "http://")
		credentials := []http.Header{
			f.bearer(f.token(f.adminSub, f.adminEmail, "workspaces:invite")), // no database read before the write
			f.bearer(f.adminKey), // the key is looked up with the request's context
		}
		// n invites and n lists (reads: a list's client leaving before it
		// is read saves the work, and is logged 499).
		const n = 160
		var wg sync.WaitGroup
		answered := make([]int, 2*n)
		for i := range 2 * n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				req := rawRequest(t, f.srv.URL, "POST", "/v0/users", credentials[i%2], fmt.Sprintf(`{"email":"gone-%d@example.com"}`, i))
				if i >= n {
					req = rawRequest(t, f.srv.URL, "GET", "/v0/users", credentials[1], "")
				}
				answered[i] = sendAndLeave(t, addr, req, leaveMode(i/2%2))
			}()
		}
		wg.Wait()
		posts := f.waitForAccessLines(t, "POST", "/v0/users", n)
		statuses := append(posts, f.waitForAccessLines(t, "GET", "/v0/users", n)...)

		if bad := serverErrorLine.FindAllString(f.srv.logs.String(), -1); len(bad) > 0 {
			t.Errorf("clients that went away caused %d server errors, e.g.:\n%s", len(bad), strings.Join(bad[:min(len(bad), 5)], "\n"))
		}
		count := map[int]int{}
		for _, s := range statuses {
			count[s]++
		}
		for s := range count {
			if s != 200 && s != 499 {
				t.Errorf("access log: %d × status %d, want only 200 (done) or 499 (client gone)", count[s], s)
			}
		}
		if count[499] == 0 {
			t.Errorf("access log has no 499 for %d clients that went away (statuses %v)", 2*n, count)
		}
		for i, s := range answered {
			if s != 0 && s != 200 {
				t.Errorf("half-closed client %d was answered %d", i, s)
			}
		}

		// Whole or nothing: each invite wrote its invitation and its
		// email, or neither. Equal counts say so for each invite, as an
		// email row needs its invitation and an invitation has one email.
		after := f.countRows(t)
		postOK := 0
		for _, s := range posts {
			if s == 200 {
				postOK++
			}
		}
		invites := after["invitations"] - before["invitations"]
		emails := after["outbox_messages"] - before["outbox_messages"]
		if invites != emails || invites < int64(postOK) || invites > n {
			t.Errorf("%d invitations and %d emails written for %d invites (%d answered 200): want as many of each, one per 200 at least",
				invites, emails, n, postOK)
		}
		t.Logf("%s: %d invites and %d lists by clients that left: access log %v; %d invites written whole, the rest not at all",
			dialect, n, n, count, invites)

		// The server is still fine for a client that stays.
		f.invite(t, "stays@example.com")
	})
}
