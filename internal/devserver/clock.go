package devserver

import (
	"fmt"
	"sync"
	"time"
)

// Clock is a dev server's clock: real time plus an offset that only grows
// (Advance, Set). Every part of the server that decides by time (the
// store's expiries and due dates, the token verifier and issuer, the
// dispatchers) reads it, so moving it forward expires invitations, keys,
// tokens and idempotency keys and makes retries fall due, as waiting would.
// It runs on from where it was moved, like real time: a test that needs an
// instant reads Now once. It never goes back except on Reset, with the data.
type Clock struct {
	mu     sync.RWMutex
	offset time.Duration
	// moved, if set, hears every move (the dispatchers look for what fell due).
	moved func()
}

// Now is the clock's time: real time plus the offset.
func (c *Clock) Now() time.Time {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return time.Now().Add(c.offset)
}

// Offset is how far the clock is ahead of real time.
func (c *Clock) Offset() time.Duration {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.offset
}

// Advance moves the clock forward by d and returns its new time. A negative
// d is refused: what already happened (an expiry, a retry) cannot be undone.
func (c *Clock) Advance(d time.Duration) (time.Time, error) {
	if d < 0 {
		return time.Time{}, fmt.Errorf("the clock only moves forward (asked to move by %s)", d)
	}
	c.mu.Lock()
	c.offset += d
	now := time.Now().Add(c.offset)
	moved := c.moved
	c.mu.Unlock()
	if moved != nil {
		moved()
	}
	return now, nil
}

// Set moves the clock forward to t; a t before the clock's time is refused.
func (c *Clock) Set(t time.Time) (time.Time, error) {
	c.mu.Lock()
	d := t.Sub(time.Now().Add(c.offset))
	c.mu.Unlock()
	if d < 0 {
		return time.Time{}, fmt.Errorf("the clock only moves forward: %s is %s before its time", t.Format(time.RFC3339), (-d).Round(time.Second))
	}
	return c.Advance(d)
}

// reset puts the clock back to real time (Server.Reset, with the data).
func (c *Clock) reset() {
	c.mu.Lock()
	c.offset = 0
	c.mu.Unlock()
}
