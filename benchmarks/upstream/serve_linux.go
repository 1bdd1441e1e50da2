package main

import (
	"fmt"
	"net"
	"syscall"
	"time"
)

// conn is one accepted connection of the event loop.
type conn struct {
	fd      int
	in      []byte // read and not yet answered
	pending []byte // answered and not yet written, when the socket was full
	closing bool   // close once pending is written
}

// loop is the origin's one thread: an epoll set of the listener and every
// connection, level-triggered, so that each readiness costs one read.
type loop struct {
	ep, ln int
	conns  []*conn // by descriptor
	r      *responses
	out    []*response
}

// serve answers on addr from one epoll loop. It returns only when the
// loop fails, with the error: never nil.
func serve(addr string, r *responses) error {
	ln, err := listen(addr)
	if err != nil {
		return err
	}
	ep, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return fmt.Errorf("epoll_create1: %w", err)
	}
	l := &loop{ep: ep, ln: ln, r: r}
	if err := l.watch(ln, syscall.EPOLLIN, syscall.EPOLL_CTL_ADD); err != nil {
		return err
	}
	events := make([]syscall.EpollEvent, 256)
	for {
		n, err := syscall.EpollWait(ep, events, -1)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("epoll_wait: %w", err)
		}
		r.tick(time.Now())
		for _, ev := range events[:n] {
			fd := int(ev.Fd)
			if fd == ln {
				l.accept()
				continue
			}
			c := l.conns[fd]
			if c == nil {
				continue
			}
			if ev.Events&syscall.EPOLLOUT != 0 {
				l.flush(c)
			} else {
				l.read(c)
			}
		}
	}
}

// listen opens a non-blocking listening socket on addr. net opens it (its
// address parsing, SO_REUSEADDR and backlog); the loop keeps a duplicate of
// its descriptor, out of the runtime's poller.
func listen(addr string) (int, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return -1, err
	}
	defer ln.Close()
	f, err := ln.(*net.TCPListener).File()
	if err != nil {
		return -1, err
	}
	fd, err := syscall.Dup(int(f.Fd()))
	f.Close()
	if err != nil {
		return -1, fmt.Errorf("dup: %w", err)
	}
	syscall.CloseOnExec(fd)
	if err := syscall.SetNonblock(fd, true); err != nil {
		syscall.Close(fd)
		return -1, fmt.Errorf("non-blocking listener: %w", err)
	}
	return fd, nil
}

func (l *loop) watch(fd int, events uint32, op int) error {
	ev := syscall.EpollEvent{Events: events, Fd: int32(fd)}
	if err := syscall.EpollCtl(l.ep, op, fd, &ev); err != nil {
		return fmt.Errorf("epoll_ctl: %w", err)
	}
	return nil
}

// accept takes every connection waiting on the listener.
func (l *loop) accept() {
	for {
		fd, _, err := syscall.Accept4(l.ln, syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC)
		if err != nil {
			return // EAGAIN, or an aborted connection: the listener stays ready
		}
		_ = syscall.SetsockoptInt(fd, syscall.IPPROTO_TCP, syscall.TCP_NODELAY, 1)
		if err := l.watch(fd, syscall.EPOLLIN, syscall.EPOLL_CTL_ADD); err != nil {
			syscall.Close(fd)
			continue
		}
		for fd >= len(l.conns) {
			l.conns = append(l.conns, nil)
		}
		l.conns[fd] = &conn{fd: fd, in: make([]byte, 0, 4<<10)}
	}
}

// read takes what the connection has, answers every complete request in
// it, and writes the answers.
func (l *loop) read(c *conn) {
	if len(c.in) == cap(c.in) {
		c.in = append(c.in, 0)[:len(c.in)]
	}
	m, err := syscall.Read(c.fd, c.in[len(c.in):cap(c.in)])
	if err == syscall.EAGAIN || err == syscall.EINTR {
		return
	}
	if err != nil || m <= 0 {
		l.close(c)
		return
	}
	c.in = c.in[:len(c.in)+m]
	var consumed int
	l.out, consumed, c.closing = l.r.answers(c.in, l.out[:0])
	c.in = c.in[:copy(c.in, c.in[consumed:])]
	for _, resp := range l.out {
		if len(c.pending) > 0 {
			c.pending = append(c.pending, resp.buf...)
			continue
		}
		w, err := syscall.Write(c.fd, resp.buf)
		if err != nil && err != syscall.EAGAIN {
			l.close(c)
			return
		}
		if w < 0 {
			w = 0
		}
		if w < len(resp.buf) {
			c.pending = append(c.pending, resp.buf[w:]...)
		}
	}
	switch {
	case len(c.pending) > 0:
		// Stop reading until the client takes what it was sent.
		if l.watch(c.fd, syscall.EPOLLOUT, syscall.EPOLL_CTL_MOD) != nil {
			l.close(c)
		}
	case c.closing:
		l.close(c)
	}
}

// flush writes what a full socket left pending, and reads again once it is
// all written.
func (l *loop) flush(c *conn) {
	w, err := syscall.Write(c.fd, c.pending)
	if err == syscall.EAGAIN || err == syscall.EINTR {
		return
	}
	if err != nil {
		l.close(c)
		return
	}
	c.pending = c.pending[:copy(c.pending, c.pending[w:])]
	if len(c.pending) > 0 {
		return
	}
	if c.closing {
		l.close(c)
		return
	}
	if l.watch(c.fd, syscall.EPOLLIN, syscall.EPOLL_CTL_MOD) != nil {
		l.close(c)
	}
}

func (l *loop) close(c *conn) {
	syscall.Close(c.fd)
	l.conns[c.fd] = nil
}
