//go:build linux

package sockio

import (
	"io"
	"syscall"
	"unsafe"
)

// A read that returns less than it asked for leaves the socket empty of
// data, but says nothing of a FIN that came with the data: that FIN made
// no readiness of its own, so a Conn that waits before its next read
// would wait for nothing (see emptied). Reading once more to find EAGAIN
// costs a system call per read. Linux can say it with the read instead:
// with the socket option TCP_INQ on, recvmsg(2) returns in a control
// message how many bytes are left to read after it, and counts a
// received FIN as one (tcp_inq_hint). Zero left means the socket is empty
// and the peer has not closed; anything that arrives after the read is
// new readiness the poller keeps. Since Linux 4.18; where setting the
// option fails, a Conn reads as before.

// tcpInq is TCP_INQ, also the type of its control message (TCP_CM_INQ);
// the standard syscall package does not name it.
const tcpInq = 0x24

// oobSize holds one control message of a 32-bit int: CmsgSpace(4) on
// every Linux architecture is at most this.
const oobSize = 32

// watchInq turns TCP_INQ on, and with it Read's use of it.
func (c *Conn) watchInq() {
	var serr error
	if err := c.raw.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, tcpInq, 1)
	}); err != nil || serr != nil {
		return
	}
	c.inq = true
	c.msg.Iov = &c.iov
	c.msg.Iovlen = 1
}

// readInq reads as read does, with recvmsg, and sets drained from what
// the kernel says is left behind the read. It returns false when the
// socket was empty (EAGAIN).
func (c *Conn) readInq(fd uintptr) bool {
	c.iov.Base = &c.rp[0]
	c.iov.SetLen(len(c.rp))
	c.msg.Control = &c.oob[0]
	c.msg.SetControllen(syscall.CmsgSpace(4))
	for {
		n, _, e := syscall.RawSyscall(syscall.SYS_RECVMSG, fd, uintptr(unsafe.Pointer(&c.msg)), 0)
		c.drained = false
		switch {
		case e == syscall.EINTR:
			continue
		case e == syscall.EAGAIN:
			return false
		case e != 0:
			c.rerr = c.opError("read", "recvmsg", e)
		case n == 0:
			c.rerr = io.EOF
		default:
			c.rn = int(n)
			left, ok := c.inqLeft()
			switch {
			case !ok:
				// No answer (it cannot happen with the option on):
				// find out as a Conn without it does.
				if c.rn < len(c.rp) {
					c.drained = c.emptied(fd)
				}
			default:
				c.drained = left == 0
			}
		}
		return true
	}
}

// inqLeft returns what the last recvmsg's control message says is left
// to read, FIN included, and whether there was one.
func (c *Conn) inqLeft() (int32, bool) {
	hdr := syscall.CmsgLen(0)
	if int(c.msg.Controllen) < hdr+4 || c.msg.Flags&syscall.MSG_CTRUNC != 0 {
		return 0, false
	}
	h := (*syscall.Cmsghdr)(unsafe.Pointer(&c.oob[0]))
	if h.Level != syscall.IPPROTO_TCP || h.Type != tcpInq || int(h.Len) < hdr+4 {
		return 0, false
	}
	return *(*int32)(unsafe.Pointer(&c.oob[hdr])), true
}
