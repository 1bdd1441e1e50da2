//go:build linux

package sockio

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"regexp"
	"runtime"
	"syscall"
	"testing"
	"time"
)

// pair returns the two ends of a TCP connection on 127.0.0.1, the first
// wrapped.
func pair(t *testing.T) (*TCPConn, *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	peer := <-accepted
	if peer == nil {
		t.Fatal("accept failed")
	}
	w, ok := Wrap(c).(*TCPConn)
	if !ok {
		t.Fatalf("Wrap returned %T", Wrap(c))
	}
	t.Cleanup(func() { w.Close(); peer.Close() })
	return w, peer.(*net.TCPConn)
}

func TestReadWriteEOF(t *testing.T) {
	c, peer := pair(t)
	if _, err := peer.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	n, err := c.Read(buf)
	if err != nil || string(buf[:n]) != "hello" {
		t.Fatalf("read %q, %v", buf[:n], err)
	}
	if n, err := c.Read(nil); n != 0 || err != nil {
		t.Fatalf("empty read: %d, %v", n, err)
	}
	if _, err := c.Write([]byte("world")); err != nil {
		t.Fatal(err)
	}
	n, err = peer.Read(buf)
	if err != nil || string(buf[:n]) != "world" {
		t.Fatalf("peer read %q, %v", buf[:n], err)
	}
	peer.CloseWrite()
	if n, err := c.Read(buf); n != 0 || err != io.EOF {
		t.Fatalf("read after the peer's close: %d, %v", n, err)
	}
}

// A write larger than the socket's buffers waits for the peer to read,
// and a read waits for the peer to write, while the other side of the
// connection is used by another goroutine.
func TestLargeWriteWhileReading(t *testing.T) {
	c, peer := pair(t)
	want := bytes.Repeat([]byte("0123456789abcdef"), 1<<18) // 4 MiB
	got := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(io.LimitReader(peer, int64(len(want))))
		got <- b
		peer.Write([]byte("done"))
	}()
	read := make(chan string, 1)
	go func() {
		buf := make([]byte, 16)
		n, err := io.ReadFull(c, buf[:4])
		if err != nil {
			read <- err.Error()
			return
		}
		read <- string(buf[:n])
	}()
	if n, err := c.Write(want); n != len(want) || err != nil {
		t.Fatalf("wrote %d of %d: %v", n, len(want), err)
	}
	if b := <-got; !bytes.Equal(b, want) {
		t.Fatalf("peer got %d bytes, not what was written", len(b))
	}
	if s := <-read; s != "done" {
		t.Fatalf("read %q", s)
	}
}

func TestDeadlineAndClose(t *testing.T) {
	c, _ := pair(t)
	c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	_, err := c.Read(make([]byte, 8))
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past the deadline: %v", err)
	}
	var oe *net.OpError
	if !errors.As(err, &oe) || oe.Op != "read" {
		t.Fatalf("error %v names operation %q, want read", err, oe.Op)
	}
	c.SetReadDeadline(time.Time{})
	done := make(chan error, 1)
	go func() {
		_, err := c.Read(make([]byte, 8))
		done <- err
	}()
	time.Sleep(20 * time.Millisecond)
	c.Close()
	if err := <-done; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("read on a closed connection: %v", err)
	}
	if _, err := c.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("write on a closed connection: %v", err)
	}
}

func TestWriteToResetPeer(t *testing.T) {
	c, peer := pair(t)
	peer.SetLinger(0)
	peer.Close() // RST
	time.Sleep(20 * time.Millisecond)
	var err error
	for i := 0; i < 10 && err == nil; i++ {
		_, err = c.Write(bytes.Repeat([]byte("x"), 1<<16))
	}
	var oe *net.OpError
	if !errors.As(err, &oe) || oe.Op != "write" {
		t.Fatalf("write to a reset peer: %v", err)
	}
}

func TestWrapLeavesOthers(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if Wrap(a) != a {
		t.Fatal("Wrap changed a connection that is not TCP")
	}
}

// SendRecv sends a request and reads the answer, large requests included
// (more than the socket's buffers take at once).
func TestSendRecv(t *testing.T) {
	c, peer := pair(t)
	go func() {
		buf := make([]byte, 64<<10)
		for {
			n, err := peer.Read(buf)
			if err != nil {
				return
			}
			if buf[n-1] == '\n' { // the end of a request: answer it
				if _, err := peer.Write([]byte("ok")); err != nil {
					return
				}
			}
		}
	}()
	for _, size := range []int{1, 100, 8 << 20} {
		req := append(bytes.Repeat([]byte("x"), size-1), '\n')
		buf := make([]byte, 16)
		n, err := c.s.SendRecv(req, buf)
		if err != nil || string(buf[:n]) != "ok" {
			t.Fatalf("SendRecv of %d bytes: %q, %v", size, buf[:n], err)
		}
	}
}

// The toolchain is go.mod's release, poller.go was checked against it,
// and a Conn waits on the poller directly. Any of these not holding fails
// the test, so a new Go release cannot make the wait fall back silently
// (see the package's doc).
func TestWaitsOnThePoller(t *testing.T) {
	b, err := os.ReadFile("../../../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^go (\d+)\.(\d+)`).FindSubmatch(b)
	if m == nil {
		t.Fatal("go.mod has no go directive")
	}
	modRelease := "go" + string(m[1]) + "." + string(m[2])
	toolchain := regexp.MustCompile(`^go\d+\.\d+`).FindString(runtime.Version())
	if toolchain != modRelease {
		t.Fatalf("built with %s (%s) while go.mod asks for %s: the poller's wait is checked against one release; build with it, or check poller.go against %s and move its build constraint and go.mod together",
			toolchain, runtime.Version(), modRelease, toolchain)
	}
	if checkedRelease != modRelease {
		t.Fatalf("poller.go was checked against %s, go.mod asks for %s: check it against %s and move its build constraint", checkedRelease, modRelease, modRelease)
	}
	if !PollerWait() {
		t.Fatalf("with %s a Conn waits through syscall.RawConn: net.TCPConn's fields or runtime_pollWait changed; see poller.go", runtime.Version())
	}
	c, _ := pair(t)
	if pollDescOf(c.TCPConn) == 0 || c.s.pd == 0 {
		t.Fatal("the Conn does not wait on the poller")
	}
}

// Bytes that arrive after a short read, before the next read begins, are
// found by it: the read waits first, on readiness the poller kept. The
// poller takes the readiness in while nobody waits (the sleep lets the
// scheduler poll) in some rounds, and in others the read's wait meets it.
func TestNoReadinessLost(t *testing.T) {
	c, peer := pair(t)
	buf := make([]byte, 64)
	for i := range 300 {
		if _, err := peer.Write([]byte{'a', byte(i)}); err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := c.Read(buf)
		if err != nil || n != 2 || buf[1] != byte(i) {
			t.Fatalf("round %d: read %q, %v", i, buf[:n], err)
		}
		if _, err := peer.Write([]byte{'b', byte(i)}); err != nil {
			t.Fatal(err)
		}
		if i%2 == 0 {
			time.Sleep(100 * time.Microsecond)
		}
		n, err = c.Read(buf)
		if err != nil || n != 2 || buf[0] != 'b' || buf[1] != byte(i) {
			t.Fatalf("round %d, the bytes sent after a short read: %q, %v", i, buf[:n], err)
		}
	}
}

// sendWithFIN writes p and half-closes c in one segment: with TCP_CORK
// the data waits in the send queue, and the FIN is set on its segment.
func sendWithFIN(t *testing.T, c *net.TCPConn, p []byte) {
	t.Helper()
	if err := writeWithFIN(c, p); err != nil {
		t.Fatal(err)
	}
}

func writeWithFIN(c *net.TCPConn, p []byte) error {
	raw, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := raw.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_CORK, 1)
	}); err != nil || serr != nil {
		return errors.Join(err, serr)
	}
	if _, err := c.Write(p); err != nil {
		return err
	}
	return c.CloseWrite()
}

// A FIN that comes with the data, in one segment, is read as the end of
// the stream right after the data: the short read that returns the data
// spends the poller's readiness for both, and the FIN makes no edge of its
// own to wake the next read's wait.
func TestFINWithData(t *testing.T) {
	for _, inq := range []bool{true, false} {
		t.Run(fmt.Sprintf("inq=%v", inq), func(t *testing.T) { testFINWithData(t, inq) })
	}
}

func testFINWithData(t *testing.T, inq bool) {
	for i := range 20 {
		c, peer := pair(t)
		c.s.inq = inq
		buf := make([]byte, 64)
		// A first exchange leaves the Conn drained, so that its next
		// read waits on the poller first.
		if _, err := peer.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
		if n, err := c.Read(buf); err != nil || n != 1 {
			t.Fatalf("round %d: first read %q, %v", i, buf[:n], err)
		}
		sendWithFIN(t, peer, []byte("GET / HTTP/1.1\r\n\r\n"))
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		var got []byte
		for {
			n, err := c.Read(buf)
			got = append(got, buf[:n]...)
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("round %d: after %q: %v, want io.EOF", i, got, err)
			}
		}
		if string(got) != "GET / HTTP/1.1\r\n\r\n" {
			t.Fatalf("round %d: read %q", i, got)
		}
	}
}

// An answer to SendRecv that comes with the peer's FIN (a response whose
// end is the connection's) is followed by io.EOF at the next Read: the
// short read of SendRecv leaves the Conn to read before it waits.
func TestSendRecvAnswerWithFIN(t *testing.T) {
	for i := range 20 {
		c, peer := pair(t)
		go func() {
			req := make([]byte, 64)
			if _, err := peer.Read(req); err != nil {
				return
			}
			writeWithFIN(peer, []byte("HTTP/1.1 200 OK\r\n\r\nbody")) // a failure shows as a wrong read
		}()
		buf := make([]byte, 64)
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := c.s.SendRecv([]byte("GET / HTTP/1.1\r\n\r\n"), buf)
		got := append([]byte(nil), buf[:n]...)
		for err == nil {
			n, err = c.Read(buf)
			got = append(got, buf[:n]...)
		}
		if err != io.EOF || string(got) != "HTTP/1.1 200 OK\r\n\r\nbody" {
			t.Fatalf("round %d: read %q, then %v; want the answer, then io.EOF", i, got, err)
		}
	}
}

// With TCP_INQ, each read says whether it left the socket empty: a short
// read of data alone does (the next read waits first, with no read that
// finds nothing), a read with more behind it or with the peer's FIN
// behind it does not.
func TestReadKnowsWhatIsLeft(t *testing.T) {
	c, peer := pair(t)
	if !c.s.inq {
		t.Fatal("TCP_INQ is not on: this kernel predates Linux 4.18, or setting it failed")
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	read := func(size int) (string, bool) {
		t.Helper()
		buf := make([]byte, size)
		n, err := c.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		return string(buf[:n]), c.s.drained
	}
	if _, err := peer.Write([]byte("data")); err != nil {
		t.Fatal(err)
	}
	if got, drained := read(64); got != "data" || !drained {
		t.Fatalf("data alone: read %q, drained %v; want \"data\", true", got, drained)
	}
	if _, err := peer.Write([]byte("more than asked")); err != nil {
		t.Fatal(err)
	}
	if got, drained := read(4); got != "more" || drained {
		t.Fatalf("more behind: read %q, drained %v; want \"more\", false", got, drained)
	}
	if got, drained := read(64); got != " than asked" || !drained {
		t.Fatalf("the rest: read %q, drained %v; want \" than asked\", true", got, drained)
	}
	sendWithFIN(t, peer, []byte("last"))
	if got, drained := read(64); got != "last" || drained {
		t.Fatalf("data and FIN: read %q, drained %v; want \"last\", false", got, drained)
	}
	if n, err := c.Read(make([]byte, 8)); n != 0 || err != io.EOF {
		t.Fatalf("after the FIN: %d, %v; want io.EOF", n, err)
	}
}
