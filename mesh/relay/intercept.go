package relay

import (
	"net"
	"net/netip"

	"github.com/wasmgate/wasmgate/mesh/intercept"
)

// Intercept wraps the socket of the sidecar's outbound listener, where
// iptables sends every connection the app makes (transparent mode). Each
// accepted connection's original destination is read (SO_ORIGINAL_DST):
// a connection to an endpoint of a TCP service is relayed here and never
// reaches the HTTP listener; any other is returned with that destination
// as its local address, which is where the app believes it is connected,
// so that the proxy can route a request whose Host names no service by
// it. A connection that was not redirected is returned as it is.
func (o *Outbound) Intercept(ln net.Listener) net.Listener {
	return &interceptListener{Listener: ln, o: o}
}

type interceptListener struct {
	net.Listener
	o *Outbound
}

func (l *interceptListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		dst, err := intercept.OriginalDst(c)
		local, _ := c.LocalAddr().(*net.TCPAddr)
		if err != nil || local == nil || local.AddrPort() == dst {
			return c, nil
		}
		if name, ok := l.o.Lookup(dst); ok {
			l.o.Handle(c, name)
			continue
		}
		return &redirected{Conn: c, dst: net.TCPAddrFromAddrPort(netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port()))}, nil
	}
}

// redirected is an intercepted connection whose local address is its
// original destination.
type redirected struct {
	net.Conn
	dst *net.TCPAddr
}

func (c *redirected) LocalAddr() net.Addr { return c.dst }

// CloseWrite passes a half close on to the socket.
func (c *redirected) CloseWrite() error {
	if hc, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return hc.CloseWrite()
	}
	return c.Conn.Close()
}
