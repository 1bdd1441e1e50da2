package relay

import (
	"net"
	"net/netip"
)

// InterceptWith is Intercept with the original destination of each
// connection told by dst, for tests without iptables.
func (o *Outbound) InterceptWith(ln net.Listener, dst func(net.Conn) (netip.AddrPort, error)) net.Listener {
	return o.intercept(ln, dst)
}

// LooksHTTP is looksHTTP's verdict: "http", "other" or "more".
func LooksHTTP(b []byte) string {
	return [...]string{verdictMore: "more", verdictHTTP: "http", verdictOther: "other"}[looksHTTP(b)]
}
