// Package deadline keeps a connection's deadline when a new one would move
// it only a little.
//
// Go's poller turns every SetDeadline, SetReadDeadline and SetWriteDeadline
// into a timer update, and a proxy sets several per request: fasthttp's
// server sets a read deadline for the idle wait and again for the request's
// header, the upstream exchange one for the route's timeout. When the
// deadline in force is no earlier than the new one and at most a slack
// later, keeping it costs nothing and lets the deadline pass at most that
// slack late, never early; when a deadline must be set, setting the new one
// plus the slack lets the next requests keep it in turn.
package deadline

import (
	"sync/atomic"
	"time"
)

// MaxSlack bounds the slack callers derive from their timeouts.
const MaxSlack = 250 * time.Millisecond

// SlackFor is the slack of a timeout: 1/64 of it, at most MaxSlack.
func SlackFor(timeout time.Duration) time.Duration {
	return min(timeout/64, MaxSlack)
}

// Coarse remembers the deadline in force on one connection, for one
// direction (read, or both). The zero value knows none. It is safe for
// concurrent use, though two goroutines setting one direction's deadline
// at once get no better than the last writer's.
type Coarse struct {
	cur atomic.Int64 // Unix ns of the deadline in force; 0: unknown or none
}

// Next returns the deadline to set for t and true, or false when the
// deadline in force will do: it is no earlier than t and at most slack
// later. A zero t (no deadline) or slack is always set as it is.
func (c *Coarse) Next(t time.Time, slack time.Duration) (time.Time, bool) {
	if t.IsZero() || slack <= 0 {
		c.cur.Store(0)
		return t, true
	}
	want := t.UnixNano()
	if cur := c.cur.Load(); cur != 0 && cur >= want && cur-want <= int64(slack) {
		return t, false
	}
	t = t.Add(slack)
	c.cur.Store(t.UnixNano())
	return t, true
}

// Forget says the connection's deadline was set some other way.
func (c *Coarse) Forget() { c.cur.Store(0) }

// Read is a connection's read deadline with a fixed slack, for a wrapper
// of the connection to keep in its SetReadDeadline (through Set) and
// SetDeadline (through Forget).
type Read struct {
	Coarse
	Slack time.Duration
}

// Set sets conn's read deadline for t, unless the one in force will do.
func (r *Read) Set(conn interface{ SetReadDeadline(time.Time) error }, t time.Time) error {
	if d, set := r.Next(t, r.Slack); set {
		return conn.SetReadDeadline(d)
	}
	return nil
}
