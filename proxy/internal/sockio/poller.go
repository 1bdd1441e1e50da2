//go:build linux && go1.26 && !go1.27

package sockio

import (
	"net"
	"reflect"
	"unsafe"
)

// Waiting on the poller without forgetting readiness.
//
// syscall.RawConn's Read and Write begin by resetting the socket's
// readiness in Go's poller (internal/poll's prepareRead): an edge that
// arrived since the last wait is dropped, so a caller must try the
// socket before it waits, or it could wait for data that is already
// there. A proxy's client connection pays for that once per request: after
// the response leaves, the next read finds nothing (EAGAIN) and only then
// waits.
//
// Here a Conn waits with the poller's own wait (runtime_pollWait), which
// consumes readiness but never drops it. When a read found the socket
// empty (EAGAIN), every byte or FIN that arrives afterwards is an edge the
// poller keeps until the next wait, so that wait cannot miss it. A read
// that returns less than it asked for does not say as much: a FIN that
// came with the data made no edge of its own, and the readiness for both
// may be spent, so the Conn must learn whether the socket is empty: the
// kernel says so with the read itself where TCP_INQ is on (inq.go), and
// otherwise the Conn reads once more at once (Conn.emptied). The wait
// itself resets nothing. A wait that wakes for data already read costs
// one read that finds nothing, as before.
//
// Both pieces reach into the standard library's internals, the wait by
// linkname (the runtime provides it to internal/poll under that name) and
// the poller's descriptor of a socket through net.TCPConn's unexported
// fields, found by name with reflect when the package starts. So this
// file builds only with the Go release it was checked against; with
// another one pollDescOf reports nothing and a Conn waits through
// syscall.RawConn (poller_other.go). A field that is missing or of
// another kind has the same effect.

// checkedRelease is the Go release this file was checked against: the
// release of go.mod and of its build constraint.
const checkedRelease = "go1.26"

// PollerWait reports whether a Conn waits on the runtime's poller
// directly (this file), rather than through syscall.RawConn.
func PollerWait() bool { return found }

//go:linkname runtimePollWait internal/poll.runtime_pollWait
func runtimePollWait(ctx uintptr, mode int) int

// The runtime's answers (runtime/netpoll.go).
const (
	pollNoError    = 0
	pollErrClosing = 1
	pollErrTimeout = 2
)

// pollWait parks until the socket whose descriptor is pd is ready for
// mode ('r' or 'w'), its deadline for mode passes (os.ErrDeadlineExceeded)
// or it is closed (net.ErrClosed).
func pollWait(pd uintptr, mode int) error {
	switch runtimePollWait(pd, mode) {
	case pollNoError:
		return nil
	case pollErrTimeout:
		return errDeadline
	case pollErrClosing:
		return net.ErrClosed
	default:
		return errNotPollable
	}
}

// Where a *net.TCPConn keeps its poller descriptor: the *netFD at
// fdOffset in the TCPConn, and the descriptor at ctxOffset in the netFD
// (net.TCPConn.conn.fd.pfd.pd.runtimeCtx); found says they were.
var (
	fdOffset, ctxOffset uintptr
	found               bool
)

func init() {
	conn, ok := reflect.TypeFor[net.TCPConn]().FieldByName("conn")
	if !ok || conn.Type.Kind() != reflect.Struct {
		return
	}
	fd, ok := conn.Type.FieldByName("fd")
	if !ok || fd.Type.Kind() != reflect.Pointer || fd.Type.Elem().Kind() != reflect.Struct {
		return
	}
	pfd, ok := fd.Type.Elem().FieldByName("pfd")
	if !ok || pfd.Type.Kind() != reflect.Struct {
		return
	}
	pd, ok := pfd.Type.FieldByName("pd")
	if !ok || pd.Type.Kind() != reflect.Struct {
		return
	}
	ctx, ok := pd.Type.FieldByName("runtimeCtx")
	if !ok || ctx.Type.Kind() != reflect.Uintptr {
		return
	}
	fdOffset = conn.Offset + fd.Offset
	ctxOffset = pfd.Offset + pd.Offset + ctx.Offset
	found = true
}

// pollDescOf returns the poller's descriptor of c's socket, or 0 when it
// cannot be found. The descriptor lives as long as the socket and is
// never moved; callers must hold a reference to the socket (inside
// syscall.RawConn's Control) while they wait on it.
func pollDescOf(c *net.TCPConn) uintptr {
	if !found {
		return 0
	}
	fd := *(*unsafe.Pointer)(unsafe.Add(unsafe.Pointer(c), fdOffset))
	if fd == nil {
		return 0
	}
	return *(*uintptr)(unsafe.Add(fd, ctxOffset))
}
