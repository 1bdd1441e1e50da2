package telemetry

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// FlowListener wraps l so that every connection it accepts emits one flow
// record when it is closed: addresses, bytes each way, duration, the TLS
// version and cipher and the peer's SPIFFE ID when the connection is a
// *tls.Conn (wrap the listener after TLS to see them), and why it closed.
// listener names the listener in the records. When flows have no sink, l
// is returned as it is.
func (p *Pipeline) FlowListener(l net.Listener, listener string) net.Listener {
	if !p.Enabled(KindFlow) {
		return l
	}
	return &flowListener{Listener: l, p: p, name: listener}
}

type flowListener struct {
	net.Listener
	p    *Pipeline
	name string
}

func (l *flowListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &FlowConn{Conn: c, p: l.p, listener: l.name, start: time.Now()}, nil
}

// FlowConn is a connection that counts its bytes and emits a flow record
// when closed. Read and Write may be called from different goroutines.
type FlowConn struct {
	net.Conn
	p        *Pipeline
	listener string
	start    time.Time
	in, out  atomic.Int64
	// reason is why the connection ended, when the peer or an error
	// ended it; empty means closed by the proxy.
	reason atomic.Pointer[string]
	once   sync.Once
}

var (
	reasonPeerClosed = "peer_closed"
	reasonTimeout    = "timeout"
	reasonError      = "error"
)

func (c *FlowConn) noteErr(err error) {
	if err == nil {
		return
	}
	var ne net.Error
	switch {
	case errors.Is(err, io.EOF):
		c.reason.CompareAndSwap(nil, &reasonPeerClosed)
	case errors.As(err, &ne) && ne.Timeout():
		c.reason.CompareAndSwap(nil, &reasonTimeout)
	case errors.Is(err, net.ErrClosed):
	default:
		c.reason.CompareAndSwap(nil, &reasonError)
	}
}

func (c *FlowConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.in.Add(int64(n))
	c.noteErr(err)
	return n, err
}

func (c *FlowConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	c.out.Add(int64(n))
	c.noteErr(err)
	return n, err
}

// Close closes the connection and, the first time, emits its flow record.
func (c *FlowConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.emit)
	return err
}

func (c *FlowConn) emit() {
	r := c.p.Acquire(KindFlow)
	f := &r.Flow
	r.Time = c.start
	f.Listener = c.listener
	if a := c.Conn.RemoteAddr(); a != nil {
		f.SourceAddr = append(f.SourceAddr, a.String()...)
	}
	if a := c.Conn.LocalAddr(); a != nil {
		f.DestinationAddr = append(f.DestinationAddr, a.String()...)
	}
	f.BytesIn, f.BytesOut = c.in.Load(), c.out.Load()
	f.Duration = time.Since(c.start)
	f.CloseReason = "local_close"
	if p := c.reason.Load(); p != nil {
		f.CloseReason = *p
	}
	if tc, ok := c.Conn.(*tls.Conn); ok {
		st := tc.ConnectionState()
		if st.HandshakeComplete {
			f.TLSVersion = tls.VersionName(st.Version)
			f.TLSCipher = tls.CipherSuiteName(st.CipherSuite)
			if len(st.PeerCertificates) > 0 {
				for _, u := range st.PeerCertificates[0].URIs {
					if s := u.String(); strings.HasPrefix(s, "spiffe://") {
						f.SourceIdentity = append(f.SourceIdentity, s...)
						break
					}
				}
			}
		}
	}
	c.p.Emit(r)
}
