package cluster

import (
	"io"
	"net"
	"time"

	"github.com/wasmgate/wasmgate/proxy/internal/deadline"
	"github.com/wasmgate/wasmgate/proxy/internal/sockio"
)

// oneWaitConn is a cleartext TCP upstream connection that sends a request
// and waits for its response in one poller wait.
//
// A plain net.Conn, read right after the request went out, first tries a
// read that fails with EAGAIN (the upstream has not answered yet), then
// parks until the poller says the socket is readable, then reads again:
// three system calls where two do. Go's poller forgets a readiness that
// arrived before a read starts waiting, so simply waiting before the first
// read could miss a response that came quickly. oneWaitConn instead holds
// the request's bytes and writes them from inside the wait (RawConn.Read):
// the wait is registered before the request leaves, so the response's
// readiness cannot be missed, and the first read finds data.
//
// Only Do's exchanges hold writes; every other use of the connection (a
// streamed body, a health check, an upgrade) reads and writes as a
// net.Conn does.
type oneWaitConn struct {
	net.Conn
	tcp  *net.TCPConn
	sock *sockio.Conn // tcp's socket, for SendRecv

	held    []byte // request bytes not yet written
	holding bool   // Write appends to held
	armed   bool   // the next Read sends held and waits

	dl deadline.Coarse // the read and write deadline setDeadline set
}

// maxHeld bounds the bytes a request may hold; a larger request is written
// as it comes.
const maxHeld = 16 << 10

// newOneWaitConn wraps c, whose socket is tcp's. It returns c unchanged
// when the socket cannot be reached.
func newOneWaitConn(c net.Conn, tcp *net.TCPConn) net.Conn {
	sock, ok := sockio.New(tcp)
	if !ok {
		return c
	}
	return &oneWaitConn{Conn: c, tcp: tcp, sock: sock}
}

// holdWrites starts holding the bytes written until awaitResponse.
func (c *oneWaitConn) holdWrites() { c.holding = true }

// awaitResponse stops holding: the next Read writes what was held, then
// waits for the response. Nothing held means nothing changes.
func (c *oneWaitConn) awaitResponse() {
	c.holding = false
	c.armed = len(c.held) > 0
}

func (c *oneWaitConn) Write(p []byte) (int, error) {
	if !c.holding {
		return c.Conn.Write(p)
	}
	if len(c.held)+len(p) <= maxHeld {
		c.held = append(c.held, p...)
		return len(p), nil
	}
	// Too large to hold: write what was held and the rest as it comes.
	c.holding = false
	if err := c.flushHeld(); err != nil {
		return 0, err
	}
	return c.Conn.Write(p)
}

// ReadFrom sends a streamed request body as the socket's own ReadFrom
// does, each read written at once, rather than gathered in fasthttp's
// write buffer until it is full.
func (c *oneWaitConn) ReadFrom(r io.Reader) (int64, error) {
	c.holding = false
	if err := c.flushHeld(); err != nil {
		return 0, err
	}
	return c.tcp.ReadFrom(r)
}

func (c *oneWaitConn) flushHeld() error {
	if len(c.held) == 0 {
		return nil
	}
	_, err := c.Conn.Write(c.held)
	c.held = c.held[:0]
	return err
}

func (c *oneWaitConn) Read(p []byte) (int, error) {
	if !c.armed {
		return c.Conn.Read(p)
	}
	c.armed = false
	n, err := c.sock.SendRecv(c.held, p)
	c.held = c.held[:0]
	return n, err
}

func (c *oneWaitConn) SetDeadline(t time.Time) error {
	c.dl.Forget()
	return c.Conn.SetDeadline(t)
}

func (c *oneWaitConn) SetReadDeadline(t time.Time) error {
	c.dl.Forget()
	return c.Conn.SetReadDeadline(t)
}

func (c *oneWaitConn) SetWriteDeadline(t time.Time) error {
	c.dl.Forget()
	return c.Conn.SetWriteDeadline(t)
}

// setDeadline sets an upstream connection's read and write deadline for a
// request whose timeout ends at d. An oneWaitConn keeps the deadline it
// has when that is at most deadline.SlackFor(timeout) later (see
// RATIONALE).
func setDeadline(conn net.Conn, d time.Time, timeout time.Duration) error {
	x, ok := conn.(*oneWaitConn)
	if !ok {
		return conn.SetDeadline(d)
	}
	if t, set := x.dl.Next(d, deadline.SlackFor(timeout)); set {
		return x.Conn.SetDeadline(t)
	}
	return nil
}

// writeHolder is an upstream connection that can hold a request's bytes
// until its response is awaited.
type writeHolder interface {
	holdWrites()
	awaitResponse()
}
