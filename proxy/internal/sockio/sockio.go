//go:build linux

// Package sockio reads and writes a connected TCP socket with recvfrom(2)
// and sendto(2), made as raw system calls from inside the Go poller's
// wait.
//
// net.TCPConn reads and writes with read(2) and write(2). Those reach the
// socket through the file layer (fdget_pos, vfs_read or vfs_write,
// sock_read_iter or sock_write_iter), and Go makes them through the
// runtime's entersyscall and exitsyscall, which let another thread take
// the processor should the call block. On a socket, recvfrom and sendto go
// to the socket layer directly, and on a non-blocking socket, which every
// socket of package net is, no call blocks: the hand-off is never needed.
// nginx, for one, uses recv and send (or writev) for the same reason.
//
// A Conn also waits on the poller without resetting its readiness (see
// poller.go), and a server's Conn learns from each read whether it left
// the socket empty (inq.go), so that a read does not follow a wait, nor
// a wait a read that finds nothing.
// That wait reaches into the runtime's internals, so it is built only with
// the Go release it was checked against, the release of go.mod; with any
// other a Conn waits through syscall.RawConn, correct but slower.
// PollerWait reports which wait this build has.
//
// The fast wait is on by default, not behind a build tag: a tag that is
// off by default would leave every ordinary build, and every figure
// measured with one, on the slow wait. Instead TestWaitsOnThePoller fails
// (it does not skip) when the toolchain's release is not go.mod's or when
// the fast wait is not active on it, so moving to a new Go release cannot
// fall back silently: poller.go must be checked against the new release
// and its build constraint moved with go.mod.
//
// On systems other than Linux the package steps aside: New reports false
// and Wrap returns its argument, so connections read and write as
// net.TCPConn does.
//
// Under wrk through the proxy on one core (64 connections, 64 B bodies),
// the file layer and the hand-off showed in perf as about 0.6 µs of the
// proxy's CPU per request (five socket calls) that nginx's profile of the
// same load does not have. With this package on both sides, four paired
// runs went from 16.71, 16.81, 17.09 and 16.14 µs per request to 15.87,
// 16.12, 15.72 and 15.28 µs.
package sockio

import (
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"unsafe"
)

var (
	errDeadline    error = os.ErrDeadlineExceeded
	errNotPollable       = errors.New("sockio: socket not pollable")
)

// Recv reads from the socket fd into p with recvfrom(2), without the
// runtime's system call bookkeeping: fd must be non-blocking. p must not be
// empty.
func Recv(fd uintptr, p []byte) (int, syscall.Errno) {
	n, _, e := syscall.RawSyscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)), 0, 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), 0
}

// Send writes p to the socket fd with sendto(2) and MSG_NOSIGNAL, without
// the runtime's system call bookkeeping: fd must be non-blocking. It may
// write less than p. p must not be empty.
func Send(fd uintptr, p []byte) (int, syscall.Errno) {
	n, _, e := syscall.RawSyscall6(syscall.SYS_SENDTO, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)), syscall.MSG_NOSIGNAL, 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), 0
}

// Conn reads and writes a TCP connection with Recv and Send, waiting on
// Go's poller (deadlines included) as net.TCPConn does. One goroutine may
// read while another writes; two must not read, or write, at once.
type Conn struct {
	raw          syscall.RawConn
	laddr, raddr net.Addr
	// pd is the poller's descriptor of the socket, waited on directly
	// (poller.go), or 0: the Conn waits through raw.
	pd          uintptr
	readFn      func(fd uintptr) bool // c.read, bound once
	writeFn     func(fd uintptr) bool // c.write, bound once
	sendRecvFn  func(fd uintptr) bool // c.sendRecv, bound once
	pollReadFn  func(fd uintptr)      // c.pollRead, bound once
	pollWriteFn func(fd uintptr)      // c.pollWrite, bound once

	// drained says the last read left the socket empty, a read that
	// found nothing (EAGAIN) included: with pd the next read waits first.
	drained bool

	// With inq, Read reads with recvmsg(2) and the socket's TCP_INQ
	// option on: the kernel says with each read how much is left behind
	// it, a FIN counting as something (inq.go). msg, iov and oob are that
	// read's arguments, kept here so that it allocates nothing.
	inq bool
	msg syscall.Msghdr
	iov syscall.Iovec
	oob [oobSize]byte

	// The read in flight, and for a SendRecv the request it sends first.
	rp    []byte
	rn    int
	rerr  error
	req   []byte
	reqOK bool // req has been sent

	// The write in flight.
	wp   []byte
	wn   int
	werr error
}

// New returns a Conn on c's socket, or false when the socket cannot be
// reached.
func New(c *net.TCPConn) (*Conn, bool) {
	raw, err := c.SyscallConn()
	if err != nil {
		return nil, false
	}
	s := &Conn{raw: raw, laddr: c.LocalAddr(), raddr: c.RemoteAddr(), pd: pollDescOf(c)}
	s.readFn, s.writeFn, s.sendRecvFn = s.read, s.write, s.sendRecv
	s.pollReadFn, s.pollWriteFn = s.pollRead, s.pollWrite
	return s, true
}

// Read reads as net.TCPConn's Read does: what is there, waiting for
// something when nothing is, io.EOF once the peer has closed.
func (c *Conn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if c.pd == 0 {
		return c.readWith(c.readFn, p)
	}
	c.rp, c.rn, c.rerr = p, 0, nil
	err := c.raw.Control(c.pollReadFn)
	return c.readDone(err)
}

// pollRead runs inside raw.Control, which keeps the socket open while it
// waits on the poller.
func (c *Conn) pollRead(fd uintptr) {
	for {
		if c.drained {
			if err := pollWait(c.pd, 'r'); err != nil {
				c.rerr = c.waitError("read", err)
				return
			}
			c.drained = false
		}
		if c.inq {
			if c.readInq(fd) {
				return
			}
		} else if c.read(fd) {
			if c.rerr == nil && c.rn < len(c.rp) {
				c.drained = c.emptied(fd)
			}
			return
		}
		c.drained = true
	}
}

// readWith reads into p with f inside raw's wait.
func (c *Conn) readWith(f func(fd uintptr) bool, p []byte) (int, error) {
	c.rp, c.rn, c.rerr = p, 0, nil
	return c.readDone(c.raw.Read(f))
}

// readDone returns the read's outcome, err being raw's.
func (c *Conn) readDone(err error) (int, error) {
	n, rerr := c.rn, c.rerr
	c.rp, c.rerr = nil, nil
	if err != nil { // the deadline passed or the connection was closed
		return 0, rename(err, "read")
	}
	return n, rerr
}

func (c *Conn) read(fd uintptr) bool {
	for {
		n, e := Recv(fd, c.rp)
		c.drained = false
		switch {
		case e == syscall.EINTR:
			continue
		case e == syscall.EAGAIN:
			return false
		case e != 0:
			c.rerr = c.opError("read", "recvfrom", e)
		case n == 0:
			c.rerr = io.EOF
		default:
			c.rn = n
		}
		return true
	}
}

// emptied reports whether the socket is empty after a read of Read that
// returned less than it asked for, reading on into the rest of rp what
// came since. A short read says no data was left, not that no FIN was: a FIN that
// came with the data (a client that writes its request and half-closes)
// made no edge of its own, and the poller's readiness for both may be
// spent already. Only a read that finds nothing (EAGAIN) says that
// whatever comes next, byte or FIN, is an edge the poller keeps. The
// peer's FIN or an error leaves the socket not drained: the next read
// returns it at once. A SendRecv's read needs none of this, and pays for
// no such read: the next SendRecv forgets readiness and sends first, and
// a Read after a SendRecv reads before it waits.
func (c *Conn) emptied(fd uintptr) bool {
	for c.rn < len(c.rp) {
		n, e := Recv(fd, c.rp[c.rn:])
		switch {
		case e == syscall.EINTR:
			continue
		case e == syscall.EAGAIN:
			return true
		case e != 0 || n == 0:
			return false
		}
		c.rn += n
	}
	return false
}

// SendRecv sends req, then reads its answer into p as Read does, in one
// wait of the poller: the wait is registered before req leaves, so the
// answer's readiness cannot be missed, and the first read finds it. A
// plain Write then Read would first make a read that finds nothing. It is
// only for a peer that sends nothing unasked: readiness from before the
// call is forgotten.
func (c *Conn) SendRecv(req, p []byte) (int, error) {
	if len(p) == 0 {
		_, err := c.Write(req)
		return 0, err
	}
	c.req, c.reqOK = req, false
	n, err := c.readWith(c.sendRecvFn, p)
	c.req = nil
	return n, err
}

// sendRecv runs inside raw.Read, which calls it until it returns true
// and parks on the poller between calls. The first call sends the
// request: its answer cannot be there yet, so it asks to wait.
func (c *Conn) sendRecv(fd uintptr) bool {
	if c.reqOK {
		return c.read(fd)
	}
	c.reqOK = true
	off := 0
	done, err := c.send(fd, c.req, &off)
	if err == nil && !done {
		// The send buffer is full (it is not, for a request on a
		// connection at rest): wait for room as Write does.
		_, err = c.Write(c.req[off:])
	}
	if err != nil {
		c.rerr = err
		return true
	}
	return false
}

// Write writes all of p, waiting for room in the socket's buffer as
// net.TCPConn's Write does.
func (c *Conn) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	c.wp, c.wn, c.werr = p, 0, nil
	var err error
	if c.pd != 0 {
		err = c.raw.Control(c.pollWriteFn)
	} else {
		err = c.raw.Write(c.writeFn)
	}
	n, werr := c.wn, c.werr
	c.wp, c.werr = nil, nil
	if err != nil {
		return n, rename(err, "write")
	}
	return n, werr
}

func (c *Conn) write(fd uintptr) bool {
	done, err := c.send(fd, c.wp, &c.wn)
	c.werr = err
	return done || err != nil
}

// pollWrite runs inside raw.Control, as pollRead does.
func (c *Conn) pollWrite(fd uintptr) {
	for {
		done, err := c.send(fd, c.wp, &c.wn)
		if done || err != nil {
			c.werr = err
			return
		}
		if err := pollWait(c.pd, 'w'); err != nil {
			c.werr = c.waitError("write", err)
			return
		}
	}
}

// send writes p[*off:] with Send, advancing *off, until all of it is
// written (done), the socket's buffer is full (not done), or it fails.
func (c *Conn) send(fd uintptr, p []byte, off *int) (done bool, err error) {
	for *off < len(p) {
		n, e := Send(fd, p[*off:])
		switch {
		case e == syscall.EINTR:
			continue
		case e == syscall.EAGAIN:
			return false, nil
		case e != 0:
			return false, c.opError("write", "sendto", e)
		}
		*off += n
	}
	return true, nil
}

func (c *Conn) opError(op, call string, e syscall.Errno) error {
	return &net.OpError{Op: op, Net: "tcp", Source: c.laddr, Addr: c.raddr, Err: os.NewSyscallError(call, e)}
}

// waitError is the error of a wait on the poller, as net.TCPConn's.
func (c *Conn) waitError(op string, err error) error {
	return &net.OpError{Op: op, Net: "tcp", Source: c.laddr, Addr: c.raddr, Err: err}
}

// rename gives an error of raw the operation net.TCPConn's would name
// ("read", not "raw-read" or "raw-control").
func rename(err error, op string) error {
	if oe, ok := err.(*net.OpError); ok {
		oe.Op = op
	}
	return err
}

// TCPConn is a *net.TCPConn whose Read and Write are a Conn's; everything
// else (deadlines, addresses, ReadFrom, writev) is the TCPConn's own.
type TCPConn struct {
	*net.TCPConn
	s *Conn
}

func (c *TCPConn) Read(p []byte) (int, error)  { return c.s.Read(p) }
func (c *TCPConn) Write(p []byte) (int, error) { return c.s.Write(p) }

// Wrap returns c as a TCPConn when it is a *net.TCPConn, and c itself
// otherwise. Its Reads learn from each read whether the socket is left
// empty (see inq.go), as a server's reads of its clients want to: a
// client's next request comes after a wait, rarely before.
func Wrap(c net.Conn) net.Conn {
	tcp, ok := c.(*net.TCPConn)
	if !ok {
		return c
	}
	s, ok := New(tcp)
	if !ok {
		return c
	}
	s.watchInq()
	return &TCPConn{TCPConn: tcp, s: s}
}
