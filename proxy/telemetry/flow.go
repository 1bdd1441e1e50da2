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
	f := ConnFlow{Listener: c.listener, Source: c.Conn.RemoteAddr(), Destination: c.Conn.LocalAddr(), Start: c.start,
		BytesIn: c.in.Load(), BytesOut: c.out.Load(), CloseReason: "local_close"}
	if p := c.reason.Load(); p != nil {
		f.CloseReason = *p
	}
	if t := c.tls.Load(); t != nil {
		f.TLSVersion, f.TLSCipher, f.SourceIdentity, f.DestinationIdentity = t.version, t.cipher, t.peer, t.local
	}
	c.p.emitFlow(&f)
}

// ConnFlow is what the flow record of a connection says, for one that is
// not read through a FlowConn: a QUIC connection, whose bytes the QUIC
// stack counts.
type ConnFlow struct {
	Listener            string
	Source, Destination net.Addr
	// Start is when the connection was accepted; it ended now.
	Start             time.Time
	BytesIn, BytesOut int64
	// TLSVersion and TLSCipher are crypto/tls's numbers, zero for clear
	// text; the identities are the SPIFFE IDs of a verified peer and of
	// the proxy's certificate, "" when there is none.
	TLSVersion, TLSCipher               uint16
	SourceIdentity, DestinationIdentity string
	// CloseReason is peer_closed, local_close, timeout or error.
	CloseReason string
}

// EmitFlow emits f's flow record when flows have a sink.
func (p *Pipeline) EmitFlow(f *ConnFlow) {
	if p.Enabled(KindFlow) {
		p.emitFlow(f)
	}
}

func (p *Pipeline) emitFlow(c *ConnFlow) {
	r := p.Acquire(KindFlow)
	f := &r.Flow
	r.Time = c.Start
	f.Listener = c.Listener
	if c.Source != nil {
		f.SourceAddr = append(f.SourceAddr, c.Source.String()...)
	}
	if c.Destination != nil {
		f.DestinationAddr = append(f.DestinationAddr, c.Destination.String()...)
	}
	f.BytesIn, f.BytesOut = c.BytesIn, c.BytesOut
	f.Duration = time.Since(c.Start)
	f.CloseReason = c.CloseReason
	if c.TLSVersion != 0 {
		f.TLSVersion = tls.VersionName(c.TLSVersion)
		f.TLSCipher = tls.CipherSuiteName(c.TLSCipher)
	}
	f.SourceIdentity = append(f.SourceIdentity, c.SourceIdentity...)
	f.DestinationIdentity = append(f.DestinationIdentity, c.DestinationIdentity...)
	p.Emit(r)
}
