package tlsconf

import (
	"crypto/tls"
	"errors"
	"net"
	"sync"
	"time"

	"github.com/wasmgate/wasmgate/proxy/internal/deadline"
)

// tlsRecordHandshake is the first byte of every TLS connection: the
// record type of its ClientHello.
const tlsRecordHandshake = 0x16

// sorted is the result of looking at one accepted connection's first byte.
type sorted struct {
	c   net.Conn
	err error
}

// permissive sorts the connections of a listener whose TLS settings say
// permissive: each accepted connection's first byte is read (under the
// handshake timeout) on a goroutine of its own, so that a silent client
// holds up no other, and the connection is handed to Accept as a *Conn
// when it starts a TLS handshake, as it is otherwise.
type permissive struct {
	once  sync.Once
	ready chan sorted
	done  chan struct{}
}

func (l *Listener) acceptPermissive() (net.Conn, error) {
	p := &l.perm
	p.once.Do(func() {
		p.ready, p.done = make(chan sorted), make(chan struct{})
		go l.sortLoop()
	})
	r, ok := <-p.ready
	if !ok {
		return nil, net.ErrClosed
	}
	return r.c, r.err
}

func (l *Listener) sortLoop() {
	p := &l.perm
	var wg sync.WaitGroup
	defer func() {
		close(p.done)
		wg.Wait()
		close(p.ready)
	}()
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			select {
			case p.ready <- sorted{err: err}:
			case <-time.After(time.Second):
			}
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			sc, ok := l.sort(c)
			if !ok {
				c.Close()
				return
			}
			select {
			case p.ready <- sorted{c: sc}:
			case <-p.done:
				c.Close()
			}
		}()
	}
}

// sort reads the connection's first byte and returns the connection to
// serve, TLS or plain; ok is false for a client that sent nothing in time.
func (l *Listener) sort(c net.Conn) (net.Conn, bool) {
	c.SetReadDeadline(time.Now().Add(l.srv.HandshakeTimeout()))
	var first [1]byte
	if _, err := c.Read(first[:]); err != nil {
		return nil, false
	}
	c.SetReadDeadline(time.Time{})
	pc := &peekedConn{Conn: c, first: first[0], has: true}
	if first[0] == tlsRecordHandshake {
		return &Conn{Conn: tls.Server(pc, l.srv.Config()), srv: l.srv, rd: deadline.Read{Slack: l.ReadSlack}}, true
	}
	return pc, true
}

// peekedConn gives back the byte that was read to sort it.
type peekedConn struct {
	net.Conn
	first byte
	has   bool
}

// NetConn returns the connection that was sorted.
func (c *peekedConn) NetConn() net.Conn { return c.Conn }

func (c *peekedConn) Read(p []byte) (int, error) {
	if c.has && len(p) > 0 {
		p[0], c.has = c.first, false
		return 1, nil
	}
	return c.Conn.Read(p)
}
