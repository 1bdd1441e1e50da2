package h2

import (
	"errors"
	"net"
	"sync"
	"time"

	"golang.org/x/net/http2"
)

// CleartextListener tells h2c connections with prior knowledge from
// HTTP/1.1 ones by their first bytes. Connections that open with the
// HTTP/2 preface are served by the Server; the others are returned by
// Accept, with the bytes read so far put back, for the HTTP/1.1 server.
//
// The first bytes are read on a goroutine of the connection, so a slow
// client delays no other; a client that sends nothing within the timeout
// is handed to HTTP/1.1, whose own timeouts then apply.
type CleartextListener struct {
	inner   net.Listener
	srv     *Server
	timeout time.Duration

	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
	mu    sync.Mutex
	err   error // the inner listener's error, once it failed
}

// NewCleartextListener starts accepting from inner.
func NewCleartextListener(inner net.Listener, srv *Server, timeout time.Duration) *CleartextListener {
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	l := &CleartextListener{inner: inner, srv: srv, timeout: timeout, conns: make(chan net.Conn), done: make(chan struct{})}
	go l.accept()
	return l
}

func (l *CleartextListener) accept() {
	for {
		c, err := l.inner.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				time.Sleep(5 * time.Millisecond)
				continue
			}
			l.mu.Lock()
			select {
			case <-l.done:
			default:
				l.err = err
			}
			l.mu.Unlock()
			l.Close()
			return
		}
		go l.sniff(c)
	}
}

// sniff reads until the bytes differ from the preface or the whole preface
// has come.
func (l *CleartextListener) sniff(c net.Conn) {
	var buf [len(http2.ClientPreface)]byte
	n := 0
	_ = c.SetReadDeadline(time.Now().Add(l.timeout))
	for n < len(buf) {
		m, err := c.Read(buf[n:])
		n += m
		if string(buf[:n]) != http2.ClientPreface[:n] || err != nil {
			break
		}
	}
	_ = c.SetReadDeadline(time.Time{})
	if n == len(buf) && string(buf[:]) == http2.ClientPreface {
		_ = l.srv.ServeConn(&prefaceConn{Conn: c, pending: buf[:]})
		return
	}
	var hc net.Conn = c
	if n > 0 {
		hc = &prefaceConn{Conn: c, pending: append([]byte(nil), buf[:n]...)}
	}
	select {
	case l.conns <- hc:
	case <-l.done:
		_ = c.Close()
	}
}

// Accept returns the next HTTP/1.1 connection.
func (l *CleartextListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		l.mu.Lock()
		err := l.err
		l.mu.Unlock()
		if err != nil {
			return nil, err
		}
		return nil, net.ErrClosed
	}
}

// Close stops accepting. Connections being sniffed are closed; h2c
// connections already served are not (Server.Shutdown ends those).
func (l *CleartextListener) Close() error {
	var err error
	l.once.Do(func() {
		close(l.done)
		err = l.inner.Close()
	})
	return err
}

// Addr implements net.Listener.
func (l *CleartextListener) Addr() net.Addr { return l.inner.Addr() }

// prefaceConn gives back the bytes read while sniffing before reading on.
type prefaceConn struct {
	net.Conn
	pending []byte
}

func (c *prefaceConn) Read(p []byte) (int, error) {
	if len(c.pending) > 0 {
		n := copy(p, c.pending)
		c.pending = c.pending[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}
