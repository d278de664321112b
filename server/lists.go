package server

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"runtime"

	"github.com/membership-api/controlplane/store"
)

// listResponse writes a list as a JSON array while the store reads it, so
// a list of any length costs one entry of memory rather than the whole
// body (10,000 users were 8–9 MB per request in flight). The bytes are
// those the generated response would have written ("[a,b]\n").
//
// A page (with limit) is held until it is complete, because its Link
// header, which must precede the body, depends on whether an entry follows
// it; a page is at most 1,000 entries. The whole list is sent as it comes:
// the status and "[" go out with the first entry, so a failure before it
// (the query refused) is still an ordinary error answer. A failure after it
// cannot change the 200 any more: the connection is then aborted (no final
// chunk), so the client sees a broken body, never a shorter list that looks
// complete.
type listResponse struct {
	ctx    context.Context
	log    *slog.Logger
	paging paging
	// each walks the list, handing every entry to add, and returns the
	// position of the last one when a page is full and more follow.
	each func(add func(any) error) (*store.ListPosition, error)
}

// wholeListSlots bounds the unpaged lists read at once (the others wait
// their turn): one per core. Reading rows and encoding them is CPU work, so
// more at once only adds memory: each one in flight holds a database
// connection and, on SQLite, fills that connection's page cache with the
// whole list. 64 unpaged 10,000-entry lists from 64 connections (SQLite,
// pool of 32, 2 cores): all at once peaked at 193 MB RSS and 4 lists/s,
// 8 at once at 112 MB and 9/s, 4 at once at 96 MB and 24/s; later, with
// more held by the invite path before it (make bench, GC target 400), 4 at
// once peaked at 104 MB, so one per core. A page (at most 1,000 entries)
// needs no slot.
var wholeListSlots = make(chan struct{}, runtime.GOMAXPROCS(0))

func (l listResponse) write(w http.ResponseWriter) error {
	if l.paging.limit == 0 {
		select {
		case wholeListSlots <- struct{}{}:
			defer func() { <-wholeListSlots }()
		case <-l.ctx.Done():
			return l.ctx.Err() // the client left while waiting: a 499
		}
	}
	out := listWriter{w: w, paged: l.paging.limit > 0}
	out.enc = json.NewEncoder(&out.entry)
	next, err := l.each(out.add)
	if err != nil {
		if !out.started {
			return err // nothing sent: Echo's error handler answers
		}
		if l.ctx.Err() != nil || out.writeFailed {
			l.log.DebugContext(l.ctx, "client went away during a list", "err", err)
		} else {
			l.log.ErrorContext(l.ctx, "list failed after its first entries were sent: connection aborted", "err", err)
		}
		// net/http closes the connection without ending the body and
		// without logging a stack; Echo's recover middleware re-panics it.
		panic(http.ErrAbortHandler)
	}
	link := ""
	if next != nil {
		link = l.paging.nextLink(*next)
	}
	return out.finish(link)
}

type listWriter struct {
	w       http.ResponseWriter
	paged   bool
	started bool         // the status and "[" were written
	page    bytes.Buffer // paged: the entries so far, "[a,b"
	entry   bytes.Buffer // one entry, reused
	enc     *json.Encoder
	n       int
	// writeFailed: the client stopped taking the list (gone, or too slow
	// for the server's write timeout), not a server failure.
	writeFailed bool
}

func (o *listWriter) add(v any) error {
	o.entry.Reset()
	if err := o.enc.Encode(v); err != nil {
		return err
	}
	b := o.entry.Bytes()
	b = b[:len(b)-1] // Encode's newline
	sep := byte(',')
	if o.n == 0 {
		sep = '['
	}
	o.n++
	if o.paged {
		o.page.WriteByte(sep)
		o.page.Write(b)
		return nil
	}
	if !o.started {
		o.header("")
		o.started = true
	}
	if _, err := o.w.Write([]byte{sep}); err != nil {
		o.writeFailed = true
		return err
	}
	if _, err := o.w.Write(b); err != nil {
		o.writeFailed = true
		return err
	}
	return nil
}

func (o *listWriter) header(link string) {
	o.w.Header().Set("Content-Type", "application/json")
	if link != "" {
		o.w.Header().Set("Link", link)
	}
	o.w.WriteHeader(http.StatusOK)
}

func (o *listWriter) finish(link string) error {
	if o.n == 0 {
		o.header(link)
		_, err := o.w.Write([]byte("[]\n"))
		return err
	}
	if o.paged {
		o.header(link)
		o.page.WriteString("]\n")
		_, err := o.page.WriteTo(o.w)
		return err
	}
	_, err := o.w.Write([]byte("]\n"))
	return err
}

// The generated response interfaces, answered by the streaming writer.
type usersListResponse struct{ listResponse }

func (r usersListResponse) VisitListWorkspaceUsersResponse(w http.ResponseWriter) error {
	return r.write(w)
}

type invitationsListResponse struct{ listResponse }

func (r invitationsListResponse) VisitListAllPendingInvitationsResponse(w http.ResponseWriter) error {
	return r.write(w)
}
