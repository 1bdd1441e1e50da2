package netnstest

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Capture records the frames that cross one interface of a namespace,
// with a raw packet socket (no tcpdump needed), so a test can look for
// bytes that must never appear on the wire, such as plain-text HTTP
// between two sidecars. It is safe for concurrent use.
type Capture struct {
	fd    int
	limit int

	mu     sync.Mutex
	data   []byte
	frames int
	done   chan struct{}
	stop   chan struct{}
}

// Capture starts recording, in both directions, the interface of ns that
// holds addr, keeping at most limit bytes of frames (0: 16 MiB). Stop it,
// or let the test's end do so.
func (ns *NS) Capture(addr netip.Addr, limit int) *Capture {
	ns.net.t.Helper()
	if limit <= 0 {
		limit = 16 << 20
	}
	c := &Capture{fd: -1, limit: limit, done: make(chan struct{}), stop: make(chan struct{})}
	ns.MustDo(func() error {
		ifc, err := interfaceOf(addr)
		if err != nil {
			return err
		}
		proto := htons(unix.ETH_P_ALL)
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(proto))
		if err != nil {
			return fmt.Errorf("opening a packet socket: %w", err)
		}
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: proto, Ifindex: ifc.Index}); err != nil {
			unix.Close(fd)
			return fmt.Errorf("binding the packet socket to %s: %w", ifc.Name, err)
		}
		tv := unix.NsecToTimeval((100 * time.Millisecond).Nanoseconds())
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
			unix.Close(fd)
			return err
		}
		c.fd = fd
		return nil
	})
	go c.read()
	ns.net.t.Cleanup(c.Stop)
	return c
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

func interfaceOf(addr netip.Addr) (*net.Interface, error) {
	ifcs, err := net.Interfaces()
	if err != nil {
		return nil, err
	}
	for i := range ifcs {
		addrs, err := ifcs[i].Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			if p, err := netip.ParsePrefix(a.String()); err == nil && p.Addr() == addr {
				return &ifcs[i], nil
			}
		}
	}
	return nil, fmt.Errorf("no interface holds %s", addr)
}

func (c *Capture) read() {
	defer close(c.done)
	defer unix.Close(c.fd)
	buf := make([]byte, 65536)
	for {
		select {
		case <-c.stop:
			return
		default:
		}
		n, _, err := unix.Recvfrom(c.fd, buf, 0)
		if err != nil {
			if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
				continue
			}
			return
		}
		c.mu.Lock()
		c.frames++
		if len(c.data)+n <= c.limit {
			c.data = append(c.data, buf[:n]...)
		}
		c.mu.Unlock()
	}
}

// Stop ends the capture; what was recorded stays readable.
func (c *Capture) Stop() {
	select {
	case <-c.stop:
	default:
		close(c.stop)
	}
	<-c.done
}

// Frames is the number of frames seen so far.
func (c *Capture) Frames() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.frames
}

// Contains reports whether b appears inside one recorded frame.
func (c *Capture) Contains(b []byte) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return bytes.Contains(c.data, b)
}

// Len is the number of bytes of frames recorded.
func (c *Capture) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.data)
}
