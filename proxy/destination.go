package proxy

import (
	"net/netip"

	"github.com/wasmgate/wasmgate/proxy/route"
)

// byDestination returns the virtual host that has the address a client
// connected to as a domain, or vh when none has. It does not allocate.
func byDestination(t *route.Table, vh *route.VirtualHost, local netip.AddrPort) *route.VirtualHost {
	a := local.Addr()
	if !a.IsValid() {
		return vh
	}
	var buf [64]byte
	b := buf[:0]
	if a = a.Unmap(); a.Is6() {
		// As a Host header spells it, so that the port is not cut off.
		b = append(a.AppendTo(append(b, '[')), ']')
	} else {
		b = a.AppendTo(b)
	}
	if d := t.Find(b); d != nil && d != t.CatchAll() {
		return d
	}
	return vh
}
