package telemetry

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wasmgate/wasmgate/proxy/internal/sockio"
)

// FlowListener wraps l, a listener's socket beneath any TLS, so that
// every connection it accepts emits one flow record when it is closed:
// addresses, bytes each way on the wire, duration, why it closed, and,
// when TLS is spoken over it, the version, cipher suite and both sides'
// SPIFFE IDs that the TLS layer reports through ObserveHandshake.
// listener names the listener in the records.
//
// Whether flows have a sink is looked at for each accepted connection,
// so that a reconfigured pipeline starts or stops recording the flows of
// a running listener; a connection accepted while flows have no sink is
// returned as it is.
func (p *Pipeline) FlowListener(l net.Listener, listener string) net.Listener {
	return &flowListener{Listener: l, p: p, name: listener}
}

type flowListener struct {
	net.Listener
	p    *Pipeline
	name string
}

func (l *flowListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil || !l.p.Enabled(KindFlow) {
		return c, err
	}
	// The socket is read and written as the listener's own layers would
	// have (package sockio): they see a FlowConn, not the socket.
	return &FlowConn{Conn: sockio.Wrap(c), p: l.p, listener: l.name, start: time.Now()}, nil
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
	tls    atomic.Pointer[flowTLS]
	once   sync.Once
}

// flowTLS is what the handshake over a FlowConn taught it.
type flowTLS struct {
	version, cipher uint16
	peer, local     string
}

// ObserveHandshake records the TLS handshake made over the connection
// (tlsconf.HandshakeObserver): its flow record will carry the version,
// the cipher suite and the SPIFFE IDs.
func (c *FlowConn) ObserveHandshake(version, cipher uint16, peer, local string) {
	c.tls.Store(&flowTLS{version: version, cipher: cipher, peer: peer, local: local})
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

// ReadFrom writes what r holds to the socket by the socket's own ReadFrom
// (splice from another socket), counting the bytes.
func (c *FlowConn) ReadFrom(r io.Reader) (int64, error) {
	var n int64
	var err error
	if rf, ok := c.Conn.(io.ReaderFrom); ok {
		n, err = rf.ReadFrom(r)
	} else {
		n, err = io.Copy(struct{ io.Writer }{c.Conn}, r)
	}
	c.out.Add(n)
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
	if t := c.tls.Load(); t != nil {
		f.TLSVersion = tls.VersionName(t.version)
		f.TLSCipher = tls.CipherSuiteName(t.cipher)
		f.SourceIdentity = append(f.SourceIdentity, t.peer...)
		f.DestinationIdentity = append(f.DestinationIdentity, t.local...)
	}
	c.p.Emit(r)
}
