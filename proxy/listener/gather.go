package listener

import (
	"io"
	"net"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/wasmgate/wasmgate/proxy/internal/deadline"
	"github.com/wasmgate/wasmgate/proxy/internal/h1"
	"github.com/wasmgate/wasmgate/proxy/internal/sockio"
)

// A response larger than fasthttp's write buffer leaves the server in two
// writes: the buffer, filled with the header and the body's first bytes,
// then the rest of the body, written straight from the response. On a
// cleartext connection the handler asks its gatherConn to send such a
// response in one writev instead: the first write is held (copied: the
// buffer is reused at once) and goes out with the next.

// gatherMin is the smallest response body worth gathering: smaller ones
// fit fasthttp's 4 KiB write buffer with their header and leave in one
// write anyway.
const gatherMin = 3 << 10

// gatherMax bounds the bytes a connection holds.
const gatherMax = 8 << 10

// gatherListener hands out gatherConns, whose read deadlines may pass up
// to slack late.
type gatherListener struct {
	net.Listener
	slack   time.Duration
	write   time.Duration // the write progress timeout
	stalled func()
}

func (l gatherListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	// A TCP socket is read with recvfrom and written with sendto (see
	// package sockio).
	return &gatherConn{Conn: sockio.Wrap(c), rd: deadline.Read{Slack: l.slack},
		wp: writeProgress{timeout: l.write, stalled: l.stalled}}, nil
}

// gatherConn is a downstream connection that can send a response's writes
// as one. It is used by one goroutine at a time, as fasthttp uses a
// connection.
type gatherConn struct {
	net.Conn
	armed bool
	held  []byte
	// holding is whether held has bytes, for Close: fasthttp closes an
	// idle connection from another goroutine at shutdown.
	holding atomic.Bool
	arr     [2][]byte
	bufs    net.Buffers // the writev in flight, kept to spare an allocation

	// The read deadline in force, kept while a new one is at most the
	// listener's slack earlier: fasthttp sets one for the idle wait and
	// another for the header of each request (see package deadline).
	rd deadline.Read
	wp writeProgress
}

func (c *gatherConn) SetReadDeadline(t time.Time) error { return c.rd.Set(c.Conn, t) }

func (c *gatherConn) SetDeadline(t time.Time) error {
	c.rd.Forget()
	c.wp.disabled = !t.IsZero() // a hijacked connection's own
	return c.Conn.SetDeadline(t)
}

// gather asks that the writes of the response about to be written leave
// together: the first is held, and goes out with the second, or alone when
// the connection is next read or closed.
func (c *gatherConn) gather() { c.armed = true }

func (c *gatherConn) Write(p []byte) (int, error) {
	c.wp.before(c.Conn)
	n, err := c.write(p)
	c.wp.after(err)
	return n, err
}

func (c *gatherConn) write(p []byte) (int, error) {
	if !c.armed {
		return c.Conn.Write(p)
	}
	if len(c.held) == 0 && len(p) <= gatherMax {
		c.held = append(c.held, p...)
		c.holding.Store(true)
		return len(p), nil
	}
	c.armed = false
	if len(c.held) == 0 {
		return c.Conn.Write(p)
	}
	c.arr[0], c.arr[1] = c.held, p
	c.bufs = c.arr[:]
	n, err := c.bufs.WriteTo(c.Conn)
	c.arr[0], c.arr[1], c.bufs = nil, nil, nil
	n -= int64(len(c.held))
	c.held = c.held[:0]
	c.holding.Store(false)
	if err != nil {
		return int(max(n, 0)), err
	}
	return len(p), nil
}

// flush writes what is held.
func (c *gatherConn) flush() error {
	c.armed = false
	_, err := c.Conn.Write(c.held)
	c.held = c.held[:0]
	c.holding.Store(false)
	return err
}

func (c *gatherConn) Read(p []byte) (int, error) {
	if c.holding.Load() {
		if err := c.flush(); err != nil {
			return 0, err
		}
	}
	return c.Conn.Read(p)
}

// ReadFrom lets a streamed body reach the socket as the socket's own
// ReadFrom does: each read written at once (bufio.Writer hands a body to
// its writer's ReadFrom), rather than gathered into fasthttp's buffer
// until it is full.
func (c *gatherConn) ReadFrom(r io.Reader) (int64, error) {
	if c.holding.Load() {
		if err := c.flush(); err != nil {
			return 0, err
		}
	}
	if c.wp.timeout > 0 && !c.wp.disabled {
		r = progressReader{r: r, c: c.Conn, w: &c.wp}
	}
	var n int64
	var err error
	if rf, ok := c.Conn.(io.ReaderFrom); ok {
		n, err = rf.ReadFrom(r)
	} else {
		n, err = io.Copy(writerOnly{c.Conn}, r)
	}
	c.wp.after(err)
	return n, err
}

// writerOnly hides every method of a writer but Write, so io.Copy does
// not call back into ReadFrom.
type writerOnly struct{ io.Writer }

// Close sends what is held first: fasthttp closes a connection right after
// a response that ends it.
func (c *gatherConn) Close() error {
	if c.holding.Load() {
		_ = c.flush()
	}
	return c.Conn.Close()
}

// GatherResponse asks a cleartext connection to send ctx's response in one
// write when it is large enough to need two. The handler calls it last,
// once the response is complete.
func GatherResponse(ctx *fasthttp.RequestCtx) {
	if c, ok := h1.Unwrap(ctx.Conn()).(*gatherConn); ok && !ctx.Response.IsBodyStream() && len(ctx.Response.Body()) >= gatherMin {
		c.gather()
	}
}
