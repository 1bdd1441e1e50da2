package h1

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
)

// Listener hands out its connections wrapped in a Conn, so that the
// HTTP/1.1 server that serves them reads only well-framed requests. It
// must be the last wrapper before the server: each Conn reads what the
// server reads, no more and no less.
type Listener struct {
	net.Listener
}

// NewListener wraps ln.
func NewListener(ln net.Listener) Listener { return Listener{ln} }

// Accept implements net.Listener. A connection that speaks TLS (it has
// Handshake and ConnectionState, as *tls.Conn) keeps both, so the server
// still sees it as TLS; one that can ReadFrom keeps that.
func (l Listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return Wrap(c), nil
}

// Wrap returns c wrapped in a Conn.
func Wrap(c net.Conn) net.Conn {
	switch inner := c.(type) {
	case tlsConn:
		return &TLSConn{Conn: Conn{Conn: c}, tls: inner}
	case io.ReaderFrom:
		return &readFromConn{Conn: Conn{Conn: c}, rf: inner}
	}
	return &Conn{Conn: c}
}

type tlsConn interface {
	Handshake() error
	ConnectionState() tls.ConnectionState
}

// Conn is a connection whose reads pass a Framer. It is used as the
// HTTP/1.1 server uses a connection: one goroutine reads and writes at a
// time, except after a switch of protocols, when one reads while another
// writes.
type Conn struct {
	net.Conn
	f Framer
	// pending are bytes read past the end of a request that asked to
	// upgrade, kept until its answer says what they are.
	pending []byte
	// held are the trailers of a chunked body read so far, kept from the
	// server until they are whole; ready are bytes released, waiting for
	// the next Read.
	held, ready []byte
	// checked is whether the protocol was looked at (ALPN, for TLS).
	checked bool
}

// NetConn returns the wrapped connection.
func (c *Conn) NetConn() net.Conn { return c.Conn }

// Err returns the framing violation that stopped the connection's reads,
// or nil.
func (c *Conn) Err() *Error { return c.f.Err() }

// Read reads the next well-framed bytes; after a violation, it returns
// the *Error. A connection that ends inside a request ends with
// io.ErrUnexpectedEOF.
func (c *Conn) Read(p []byte) (int, error) {
	if len(c.ready) > 0 {
		n := copy(p, c.ready)
		c.ready = c.ready[n:]
		return n, nil
	}
	if err := c.f.Err(); err != nil {
		return 0, err
	}
	if c.f.Tunneling() && len(c.pending) == 0 {
		return c.Conn.Read(p)
	}
	if c.f.Awaiting() {
		// Read before the answer: the request path did not switch
		// protocols.
		c.f.Answered(nil)
	}
	for {
		var n int
		var err error
		if len(c.pending) > 0 {
			n = copy(p, c.pending)
			c.pending = c.pending[n:]
		} else {
			n, err = c.Conn.Read(p)
		}
		k := 0
		if n > 0 {
			k = c.f.Feed(p[:n])
		}
		if err == io.EOF && !c.f.Between() {
			// The connection ended inside a request. fasthttp takes an
			// end in a chunked body's trailers for the end of the body,
			// and would send upstream a request the client never
			// finished.
			err = io.ErrUnexpectedEOF
		}
		holding, began := c.f.Holding()
		began = began && n > 0 // as of this read's Feed, if there was one
		fe := c.f.Err()
		if fe != nil && holding {
			c.held = nil // the refused request's trailers
		}
		if len(c.held) == 0 && !holding {
			// The common case: nothing held before, nothing now.
			if k < n && fe == nil {
				// The bytes after a request to upgrade wait for its
				// answer.
				rest := make([]byte, 0, n-k+len(c.pending))
				rest = append(rest, p[k:n]...)
				c.pending = append(rest, c.pending...)
			}
			if k == 0 && fe != nil {
				return 0, fe
			}
			if k == 0 && n > 0 && err == nil {
				continue
			}
			if k < n {
				return k, nil
			}
			return k, err
		}
		if holding && !began && fe == nil {
			// The same trailers go on: hold these bytes too.
			c.held = append(c.held, p[:n]...)
			if err != nil {
				c.held = nil
				return 0, err
			}
			continue
		}
		// The held bytes are released, followed by what this read hands
		// on; what follows may be held anew, or wait for an answer.
		out := append(c.held, p[:k]...)
		c.held = nil
		if fe == nil && k < n {
			rest := append([]byte(nil), p[k:n]...)
			if holding {
				c.held = rest
			} else {
				c.pending = append(rest, c.pending...)
			}
		}
		m := copy(p, out)
		c.ready = out[m:]
		if m == 0 {
			if fe != nil {
				return 0, fe
			}
			if err != nil {
				return 0, err
			}
			continue
		}
		if len(c.ready) > 0 || holding {
			return m, nil
		}
		return m, err
	}
}

// Write writes p. The first write after a request to upgrade is the
// answer, which says whether the connection switches protocols.
func (c *Conn) Write(p []byte) (int, error) {
	if c.f.Awaiting() {
		c.f.Answered(p)
	}
	return c.Conn.Write(p)
}

// readFromConn keeps the wrapped connection's ReadFrom.
type readFromConn struct {
	Conn
	rf io.ReaderFrom
}

func (c *readFromConn) ReadFrom(r io.Reader) (int64, error) { return c.rf.ReadFrom(r) }

// TLSConn is a Conn over TLS. It keeps Handshake and ConnectionState, and
// lets a connection that chose HTTP/2 by ALPN pass unread.
type TLSConn struct {
	Conn
	tls tlsConn
}

// Handshake runs the wrapped connection's handshake. A connection that
// chose HTTP/2 by ALPN passes unread from then on: the HTTP/1.1 server
// hands it over right after its handshake, before any read or write.
func (c *TLSConn) Handshake() error {
	if err := c.tls.Handshake(); err != nil {
		return err
	}
	if !c.checked {
		c.checked = true
		if c.tls.ConnectionState().NegotiatedProtocol == "h2" {
			c.f.Tunnel()
		}
	}
	return nil
}

// ConnectionState returns the wrapped connection's state.
func (c *TLSConn) ConnectionState() tls.ConnectionState { return c.tls.ConnectionState() }

func (c *TLSConn) Read(p []byte) (int, error) {
	if !c.checked {
		if err := c.Handshake(); err != nil {
			return 0, err
		}
	}
	return c.Conn.Read(p)
}

// Unwrap returns the connection a Conn wraps, or c itself when it is not
// a Conn.
func Unwrap(c net.Conn) net.Conn {
	if w, ok := c.(interface{ framed() *Conn }); ok {
		return w.framed().Conn
	}
	return c
}

// Refused returns the violation that stopped c's reads, when c is a Conn
// and one did. A request body that fails to read for this reason is the
// client's fault: the proxy answers its Status.
func Refused(c net.Conn) *Error {
	if w, ok := c.(interface{ framed() *Conn }); ok {
		return w.framed().Err()
	}
	return nil
}

// ErrorOf returns the *Error in err's chain, or nil.
func ErrorOf(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return nil
}

func (c *Conn) framed() *Conn { return c }
