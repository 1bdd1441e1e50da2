package relay

import (
	"errors"
	"net"
	"net/netip"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/wasmgate/wasmgate/mesh/intercept"
)

// Intercept wraps the socket of the sidecar's outbound listener, where
// iptables sends every connection the app makes (transparent mode). Each
// accepted connection's original destination is read (SO_ORIGINAL_DST):
//
//   - a connection to an endpoint of a TCP service is relayed here and
//     never reaches the HTTP listener;
//   - a connection to an address of an HTTP service (an endpoint's IP,
//     or one its name resolves to: SetAliases) goes to the HTTP listener,
//     as below, without waiting for its first bytes, so that a client
//     that connects ahead of its first request is served;
//   - any other redirected connection is sniffed (see sniff): one that
//     speaks HTTP is returned with its original destination as its local
//     address, which is where the app believes it is connected, so that
//     the proxy can route a request whose Host names no service by it;
//     one that does not (TLS to a host outside the mesh, a database's
//     protocol, a server that speaks first) is outside the mesh: passed
//     on in plain TCP to its original destination with allow_any, closed
//     with registry_only (SetOutside);
//   - a connection that was not redirected is returned as it is.
//
// Every generation of the listener (one per configuration the proxy
// applies) takes its connections from one queue of the Outbound, so that
// a connection accepted or sniffed while a generation retires is served
// by the next.
func (o *Outbound) Intercept(ln net.Listener) net.Listener {
	return o.intercept(ln, intercept.OriginalDst)
}

func (o *Outbound) intercept(ln net.Listener, dst func(net.Conn) (netip.AddrPort, error)) net.Listener {
	return &interceptListener{Listener: ln, o: o, dst: dst, errs: make(chan error), done: make(chan struct{})}
}

type interceptListener struct {
	net.Listener
	o   *Outbound
	dst func(net.Conn) (netip.AddrPort, error)

	once sync.Once
	errs chan error    // an error of the socket's Accept, for Accept
	done chan struct{} // closed when the socket is closed
}

// Accept returns the next connection for the HTTP listener, from this
// generation's socket or another's.
func (l *interceptListener) Accept() (net.Conn, error) {
	l.once.Do(func() { go l.accept() })
	select {
	case <-l.done:
		return nil, net.ErrClosed
	default:
	}
	select {
	case c := <-l.o.queue:
		return c, nil
	case err := <-l.errs:
		return nil, err
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// accept takes the socket's connections until it is closed. An error
// other than the socket's closing goes to Accept, whose server decides
// whether to go on.
func (l *interceptListener) accept() {
	defer close(l.done)
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			select {
			case l.errs <- err:
				continue
			case <-l.o.closed:
				return
			}
		}
		l.o.route(c, l.dst)
	}
}

// route sends c where its original destination says.
func (o *Outbound) route(c net.Conn, dstOf func(net.Conn) (netip.AddrPort, error)) {
	dst, err := dstOf(c)
	local, _ := c.LocalAddr().(*net.TCPAddr)
	if err != nil || local == nil || local.AddrPort() == dst {
		o.serveHTTP(c)
		return
	}
	dst = netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())
	if name, ok := o.Lookup(dst); ok {
		o.Handle(c, name)
		return
	}
	if o.isHTTP(dst.Addr()) {
		o.serveHTTP(&redirected{Conn: c, dst: net.TCPAddrFromAddrPort(dst)})
		return
	}
	if !o.cs.Add(c) {
		return
	}
	go func() {
		defer o.cs.Done(c)
		o.sniffed(c, dst)
	}()
}

// serveHTTP hands c to whichever generation of the HTTP listener accepts
// next, or closes it when the Outbound closes first.
func (o *Outbound) serveHTTP(c net.Conn) {
	select {
	case o.queue <- c:
	case <-o.closed:
		_ = c.Close()
	}
}

// sniffed decides what an intercepted connection bound for dst, which is
// not an endpoint of a TCP service, speaks, and carries it.
func (o *Outbound) sniffed(c net.Conn, dst netip.AddrPort) {
	first, isHTTP, err := sniff(c, o.o.DetectTimeout)
	if err != nil {
		// Closed before it said anything.
		_ = c.Close()
		return
	}
	down := &redirected{Conn: c, dst: net.TCPAddrFromAddrPort(dst), first: first}
	if isHTTP && !o.entryAddress(dst) {
		o.serveHTTP(down)
		return
	}
	// Checked once the first bytes came (or the silence ended): the
	// passthrough records its connection's address before it sends them.
	if o.ownDial(c) {
		o.log.Error("a connection of the sidecar to a host outside the mesh was intercepted and sent back to it: "+
			"exclude the sidecar's user from the interception (wasmgate sidecar iptables --uid)", zapAddr("destination", dst))
		_ = c.Close()
		return
	}
	pass := Outside(o.outside.Load()) == OutsidePass
	if !pass {
		var ok bool
		var name string
		if ok, down.first, name = o.admitted(c, dst, first); ok {
			o.log.Debug("a TLS connection outside the mesh let out by a service entry", zapAddr("destination", dst), zap.String("server_name", name))
			pass = true
		}
	}
	if !pass {
		f := flow{listener: "outbound", start: time.Now(), source: addrString(c.RemoteAddr()), destination: dst.String(),
			sourceID: o.identity(), reason: reasonOutside}
		o.log.Debug("a connection to a host outside the mesh refused (outbound_policy: registry_only)", zapAddr("destination", dst))
		o.met.stats(listenerOutbound, clusterBlackhole).open()()
		_ = c.Close()
		f.emit(o.tel.Load())
		return
	}
	o.passthrough(down, dst)
}

// redirected is an intercepted connection whose local address is its
// original destination, and whose first reads return the bytes the
// sniffing took.
type redirected struct {
	net.Conn
	dst   *net.TCPAddr
	first []byte
}

func (c *redirected) LocalAddr() net.Addr { return c.dst }

func (c *redirected) Read(p []byte) (int, error) {
	if len(c.first) > 0 {
		n := copy(p, c.first)
		c.first = c.first[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// CloseWrite passes a half close on to the socket.
func (c *redirected) CloseWrite() error {
	if hc, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return hc.CloseWrite()
	}
	return c.Conn.Close()
}
