package cluster

import (
	"io"
	"net"
	"os"
	"syscall"
	"time"

	"github.com/wasmgate/wasmgate/proxy/internal/deadline"
	"github.com/wasmgate/wasmgate/proxy/internal/sockio"
)

// exchangeConn is a cleartext TCP upstream connection that sends a request
// and waits for its response in one poller wait.
//
// A plain net.Conn, read right after the request went out, first tries a
// read that fails with EAGAIN (the upstream has not answered yet), then
// parks until the poller says the socket is readable, then reads again:
// three system calls where two do. Go's poller forgets a readiness that
// arrived before a read starts waiting, so simply waiting before the first
// read could miss a response that came quickly. exchangeConn instead holds
// the request's bytes and writes them from inside the wait (RawConn.Read):
// the wait is registered before the request leaves, so the response's
// readiness cannot be missed, and the first read finds data.
//
// Only Do's exchanges hold writes; every other use of the connection (a
// streamed body, a health check, an upgrade) reads and writes as a
// net.Conn does.
type exchangeConn struct {
	net.Conn
	tcp    *net.TCPConn
	raw    syscall.RawConn
	waitFn func(fd uintptr) bool // c.wait, bound once

	held    []byte // request bytes not yet written
	holding bool   // Write appends to held
	armed   bool   // the next Read sends held and waits

	// The read in flight inside raw.Read.
	p    []byte
	sent bool
	n    int
	err  error

	dl deadline.Coarse // the read and write deadline setDeadline set
}

// maxHeld bounds the bytes a request may hold; a larger request is written
// as it comes.
const maxHeld = 16 << 10

// newExchangeConn wraps c, whose socket is tcp's. It returns c unchanged
// when the socket cannot be reached.
func newExchangeConn(c net.Conn, tcp *net.TCPConn) net.Conn {
	raw, err := tcp.SyscallConn()
	if err != nil {
		return c
	}
	x := &exchangeConn{Conn: c, tcp: tcp, raw: raw}
	x.waitFn = x.wait
	return x
}

// holdWrites starts holding the bytes written until awaitResponse.
func (c *exchangeConn) holdWrites() { c.holding = true }

// awaitResponse stops holding: the next Read writes what was held, then
// waits for the response. Nothing held means nothing changes.
func (c *exchangeConn) awaitResponse() {
	c.holding = false
	c.armed = len(c.held) > 0
}

func (c *exchangeConn) Write(p []byte) (int, error) {
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
func (c *exchangeConn) ReadFrom(r io.Reader) (int64, error) {
	c.holding = false
	if err := c.flushHeld(); err != nil {
		return 0, err
	}
	return c.tcp.ReadFrom(r)
}

func (c *exchangeConn) flushHeld() error {
	if len(c.held) == 0 {
		return nil
	}
	_, err := c.Conn.Write(c.held)
	c.held = c.held[:0]
	return err
}

func (c *exchangeConn) Read(p []byte) (int, error) {
	if !c.armed {
		return c.Conn.Read(p)
	}
	c.armed = false
	c.p, c.sent, c.n, c.err = p, false, 0, nil
	err := c.raw.Read(c.waitFn)
	n, rerr := c.n, c.err
	c.p, c.err = nil, nil
	c.held = c.held[:0]
	if err != nil { // the deadline passed or the connection was closed
		return 0, err
	}
	return n, rerr
}

// wait runs inside raw.Read, which calls it until it returns true and
// parks on the poller between calls. The first call sends the held
// request: the response cannot be there yet, so it asks to wait.
func (c *exchangeConn) wait(fd uintptr) bool {
	if !c.sent {
		c.sent = true
		for off := 0; off < len(c.held); {
			n, err := sockio.Send(fd, c.held[off:])
			switch {
			case err == syscall.EINTR:
				continue
			case err == syscall.EAGAIN:
				// The send buffer is full (it is not, for a request this
				// small, on a connection at rest): block as Write does.
				if _, err := c.Conn.Write(c.held[off:]); err != nil {
					c.err = err
					return true
				}
				off = len(c.held)
			case err != 0:
				c.err = &net.OpError{Op: "write", Net: "tcp", Addr: c.RemoteAddr(), Err: os.NewSyscallError("sendto", err)}
				return true
			default:
				off += n
			}
		}
		return false
	}
	if len(c.p) == 0 {
		return true
	}
	for {
		n, err := sockio.Recv(fd, c.p)
		switch {
		case err == syscall.EINTR:
			continue
		case err == syscall.EAGAIN:
			return false
		case err != 0:
			c.err = &net.OpError{Op: "read", Net: "tcp", Addr: c.RemoteAddr(), Err: os.NewSyscallError("recvfrom", err)}
		case n == 0:
			c.err = io.EOF
		default:
			c.n = n
		}
		return true
	}
}

func (c *exchangeConn) SetDeadline(t time.Time) error {
	c.dl.Forget()
	return c.Conn.SetDeadline(t)
}

func (c *exchangeConn) SetReadDeadline(t time.Time) error {
	c.dl.Forget()
	return c.Conn.SetReadDeadline(t)
}

func (c *exchangeConn) SetWriteDeadline(t time.Time) error {
	c.dl.Forget()
	return c.Conn.SetWriteDeadline(t)
}

// setDeadline sets an upstream connection's read and write deadline for a
// request whose timeout ends at d. An exchangeConn keeps the deadline it
// has when that is at most deadline.SlackFor(timeout) later (see
// RATIONALE).
func setDeadline(conn net.Conn, d time.Time, timeout time.Duration) error {
	x, ok := conn.(*exchangeConn)
	if !ok {
		return conn.SetDeadline(d)
	}
	if t, set := x.dl.Next(d, deadline.SlackFor(timeout)); set {
		return x.Conn.SetDeadline(t)
	}
	return nil
}

// exchanger is an upstream connection that can hold a request's bytes
// until its response is awaited.
type exchanger interface {
	holdWrites()
	awaitResponse()
}
