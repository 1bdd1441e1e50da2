//go:build linux && !(go1.26 && !go1.27)

package sockio

import "net"

// With a Go release other than the one poller.go was checked against, a
// Conn waits through syscall.RawConn.

func pollDescOf(*net.TCPConn) uintptr { return 0 }

func pollWait(uintptr, int) error { return errNotPollable }
