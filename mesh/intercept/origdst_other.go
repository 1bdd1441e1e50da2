//go:build !linux

package intercept

import (
	"errors"
	"net"
	"net/netip"
)

// OriginalDst needs Linux's connection tracking; elsewhere it returns
// errors.ErrUnsupported.
func OriginalDst(c net.Conn) (netip.AddrPort, error) {
	return netip.AddrPort{}, errors.ErrUnsupported
}
