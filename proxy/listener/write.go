package listener

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wasmgate/wasmgate/proxy/internal/sockio"
)

// DefaultWriteTimeout bounds how long a write to a client may make no
// progress when the listener sets no write_timeout: a client that stops
// reading its response gives back, within it, the upstream connection
// and the circuit breaker's slot that its request holds.
const DefaultWriteTimeout = 60 * time.Second

// writeProgress bounds the time a connection's writes may make no
// progress: before a write it moves the write deadline to now plus the
// timeout, at most every quarter of the timeout (a deadline costs a call
// into the runtime's poller), so a write that stalls fails between ¾ of
// the timeout and the timeout after the last progress.
type writeProgress struct {
	timeout time.Duration
	set     int64 // when the deadline was last moved, in coarse clock time
	// stalled counts a connection whose write timed out, once.
	stalled  func()
	counted  atomic.Bool
	disabled bool // the connection set a deadline of its own
}

func (w *writeProgress) before(c net.Conn) {
	if w.timeout <= 0 || w.disabled {
		return
	}
	now := coarseNow()
	if time.Duration(now-w.set) < w.timeout/4 {
		return
	}
	w.set = now
	_ = c.SetWriteDeadline(time.Unix(0, now).Add(w.timeout))
}

// coarseTick is the resolution of coarseNow.
const coarseTick = 50 * time.Millisecond

// coarse is a clock read by every write: time.Now costs about 100ns on a
// virtual machine's clock source, as much as a small response's whole
// write path, and a write deadline needs no finer time than this.
var coarse struct {
	once sync.Once
	now  atomic.Int64
}

// coarseNow returns the time in Unix nanoseconds, at most coarseTick old.
// The first call starts the goroutine that keeps it, for the life of the
// process, as fasthttp keeps its Date header.
func coarseNow() int64 {
	coarse.once.Do(func() {
		coarse.now.Store(time.Now().UnixNano())
		go func() {
			for t := range time.Tick(coarseTick) {
				coarse.now.Store(t.UnixNano())
			}
		}()
	})
	return coarse.now.Load()
}

func (w *writeProgress) after(err error) {
	if err != nil && errors.Is(err, os.ErrDeadlineExceeded) && w.stalled != nil && w.counted.CompareAndSwap(false, true) {
		w.stalled()
	}
}

// progressReader moves a connection's write deadline as a streamed body
// is read for it: each read follows the write of the one before.
type progressReader struct {
	r io.Reader
	c net.Conn
	w *writeProgress
}

func (p progressReader) Read(b []byte) (int, error) {
	p.w.before(p.c)
	return p.r.Read(b)
}

// progressConn is a TLS connection's socket, its writes bounded by
// writeProgress.
type progressConn struct {
	net.Conn
	w writeProgress
}

// NetConn returns the socket.
func (c *progressConn) NetConn() net.Conn { return c.Conn }

func (c *progressConn) Write(b []byte) (int, error) {
	c.w.before(c.Conn)
	n, err := c.Conn.Write(b)
	c.w.after(err)
	return n, err
}

func (c *progressConn) SetDeadline(t time.Time) error {
	c.w.disabled = !t.IsZero()
	return c.Conn.SetDeadline(t)
}

// progressListener hands out progressConns.
type progressListener struct {
	net.Listener
	timeout time.Duration
	stalled func()
}

func (l progressListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	// TLS reads the socket with recvmsg and TCP_INQ, as a clear-text
	// listener's connections are read (package sockio): a read that
	// empties the socket says so, and the next waits without first
	// finding nothing.
	return &progressConn{Conn: sockio.Wrap(c), w: writeProgress{timeout: l.timeout, stalled: l.stalled}}, nil
}
