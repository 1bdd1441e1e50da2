//go:build linux && !(go1.26 && !go1.27)

package sockio

import "net"

// With a Go release other than the one poller.go was checked against, a
// Conn waits through syscall.RawConn.

// checkedRelease is the Go release poller.go was checked against.
const checkedRelease = "go1.26"

// PollerWait reports whether a Conn waits on the runtime's poller
// directly: with this Go release it does not.
func PollerWait() bool { return false }

func pollDescOf(*net.TCPConn) uintptr { return 0 }

func pollWait(uintptr, int) error { return errNotPollable }
