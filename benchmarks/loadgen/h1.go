package loadgen

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
)

// h1Client drives HTTP/1.1 connections for one worker, one per endpoint,
// with fasthttp's codec. Requests are serialized once, before the run
// (target.h1), so a request is one Write of prepared bytes and one
// Response.Read into a reused Response: no allocation per request.
//
// An h1Client belongs to one worker goroutine; only interrupt may be
// called from another goroutine.
type h1Client struct {
	r     *runner
	st    *stats
	conns []h1Conn // by endpoint index
	resp  fasthttp.Response

	mu     sync.Mutex // guards the net.Conn fields against interrupt
	closed bool       // set by interrupt: no more dials
}

var _ requester = (*h1Client)(nil)

// h1Conn is one connection to one endpoint, with its buffered reader.
type h1Conn struct {
	ep   *endpoint
	conn net.Conn // nil when not connected
	br   *bufio.Reader
}

func newH1Client(r *runner, st *stats) *h1Client {
	c := &h1Client{r: r, st: st, conns: make([]h1Conn, len(r.endpoints))}
	for i := range c.conns {
		c.conns[i].ep = r.endpoints[i]
	}
	c.resp.Header.DisableNormalizing()
	c.resp.SkipBody = r.cfg.method() == fasthttp.MethodHead
	return c
}

func (c *h1Client) connect(ctx context.Context) error {
	if c.r.cfg.NewConnPerRequest {
		return c.probe(ctx)
	}
	for i := range c.conns {
		if err := c.dial(ctx, &c.conns[i], time.Now().Add(c.r.cfg.timeout())); err != nil {
			return err
		}
	}
	return nil
}

// probe dials every endpoint once and hangs up, to fail fast on a target
// that refuses.
func (c *h1Client) probe(ctx context.Context) error {
	for i := range c.conns {
		conn, err := c.r.dialTCP(ctx, c.conns[i].ep, c.st, time.Now().Add(c.r.cfg.timeout()))
		if err != nil {
			return err
		}
		_ = conn.Close()
	}
	return nil
}

func (c *h1Client) dial(ctx context.Context, hc *h1Conn, deadline time.Time) error {
	conn, err := c.r.dialTCP(ctx, hc.ep, c.st, deadline)
	if err != nil {
		return err
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		_ = conn.Close()
		return net.ErrClosed
	}
	hc.conn = conn
	c.mu.Unlock()
	if hc.br == nil {
		hc.br = bufio.NewReaderSize(conn, 16<<10)
	} else {
		hc.br.Reset(conn)
	}
	return nil
}

func (c *h1Client) drop(hc *h1Conn) {
	c.mu.Lock()
	conn := hc.conn
	hc.conn = nil
	c.mu.Unlock()
	if conn != nil {
		_ = conn.Close()
	}
}

func (c *h1Client) do(ctx context.Context, t *target, deadline time.Time) (int, error) {
	hc := &c.conns[t.endpoint]
	if hc.conn == nil {
		if err := c.dial(ctx, hc, deadline); err != nil {
			return 0, err
		}
	}
	conn := hc.conn
	if err := conn.SetDeadline(deadline); err != nil {
		c.drop(hc)
		return 0, fmt.Errorf("setting deadline: %w", err)
	}
	req := t.h1
	if c.r.cfg.NewConnPerRequest {
		req = t.h1Close
	}
	if _, err := conn.Write(req); err != nil {
		c.drop(hc)
		return 0, fmt.Errorf("writing request: %w", err)
	}
	if err := c.resp.Read(hc.br); err != nil {
		c.drop(hc)
		return 0, fmt.Errorf("reading response: %w", err)
	}
	if c.r.cfg.NewConnPerRequest || c.resp.ConnectionClose() {
		c.drop(hc)
	}
	return c.resp.StatusCode(), nil
}

func (c *h1Client) interrupt() {
	c.mu.Lock()
	c.closed = true
	for i := range c.conns {
		if conn := c.conns[i].conn; conn != nil {
			_ = conn.SetDeadline(time.Unix(1, 0))
		}
	}
	c.mu.Unlock()
}

func (c *h1Client) close() {
	for i := range c.conns {
		c.drop(&c.conns[i])
	}
}

// dialError marks a failure to connect, after which a worker backs off.
type dialError struct{ err error }

func (e *dialError) Error() string { return e.err.Error() }
func (e *dialError) Unwrap() error { return e.err }

// dialTCP connects to ep, counting the bytes on the wire into st, and
// completes the TLS handshake for TLS endpoints (with the ALPN of the
// run's protocol).
func (r *runner) dialTCP(ctx context.Context, ep *endpoint, st *stats, deadline time.Time) (net.Conn, error) {
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	raw, err := r.dialer.DialContext(ctx, "tcp", ep.addr)
	if err != nil {
		return nil, &dialError{fmt.Errorf("connecting to %s: %w", ep.addr, err)}
	}
	var conn net.Conn = &countingConn{Conn: raw, in: &st.bytesIn, out: &st.bytesOut}
	if ep.tls == nil {
		return conn, nil
	}
	tc := tls.Client(conn, ep.tls)
	if err := tc.HandshakeContext(ctx); err != nil {
		_ = raw.Close()
		return nil, &dialError{fmt.Errorf("TLS handshake with %s: %w", ep.addr, err)}
	}
	return tc, nil
}

// countingConn counts the bytes read and written through it.
type countingConn struct {
	net.Conn
	in, out *atomic.Int64
}

func (c *countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.in.Add(int64(n))
	return n, err
}

func (c *countingConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.out.Add(int64(n))
	return n, err
}
