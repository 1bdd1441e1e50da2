package netnstest_test

import (
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/wasmgate/wasmgate/mesh/internal/netnstest"
)

// TestTwoNamespaces: a listener made in one namespace is reached from the
// other over the veth pair, and not from the test's own namespace.
func TestTwoNamespaces(t *testing.T) {
	n := netnstest.New(t)
	a, b := n.Namespace("a"), n.Namespace("b")
	addrA, addrB := n.Link(a, b)
	var l net.Listener
	b.MustDo(func() (err error) {
		l, err = net.Listen("tcp", netip.AddrPortFrom(addrB, 8080).String())
		return err
	})
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		io.WriteString(c, c.RemoteAddr().String())
		c.Close()
	}()
	var got string
	a.MustDo(func() error {
		c, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			return err
		}
		defer c.Close()
		b, err := io.ReadAll(c)
		got = string(b)
		return err
	})
	if host, _, _ := net.SplitHostPort(got); host != addrA.String() {
		t.Fatalf("the server saw the client at %q, want %s", got, addrA)
	}
	if out := a.MustRun("ip", "-o", "addr", "show"); len(out) == 0 {
		t.Fatal("ip addr printed nothing")
	}
	// A loopback listener inside a namespace is not the test's loopback.
	var lo net.Listener
	b.MustDo(func() (err error) {
		lo, err = net.Listen("tcp", "127.0.0.1:0")
		return err
	})
	defer lo.Close()
	if c, err := net.Dial("tcp", lo.Addr().String()); err == nil {
		c.Close()
		t.Fatalf("the test's namespace reached %s, a loopback listener inside another", lo.Addr())
	}
}

// TestCapture: a capture on the veth sees the bytes a connection sends
// over it, and not those sent over loopback.
func TestCapture(t *testing.T) {
	n := netnstest.New(t)
	a, b := n.Namespace("a"), n.Namespace("b")
	addrA, addrB := n.Link(a, b)
	capture := a.Capture(addrA, 0)
	for _, addr := range []string{netip.AddrPortFrom(addrB, 8080).String(), "127.0.0.1:8081"} {
		var l net.Listener
		b.MustDo(func() (err error) {
			l, err = net.Listen("tcp", addr)
			return err
		})
		defer l.Close()
		go func() {
			c, err := l.Accept()
			if err == nil {
				io.Copy(io.Discard, c)
				c.Close()
			}
		}()
	}
	a.MustDo(func() error {
		c, err := net.Dial("tcp", netip.AddrPortFrom(addrB, 8080).String())
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = io.WriteString(c, "GET /secret-over-the-wire HTTP/1.1\r\n\r\n")
		return err
	})
	b.MustDo(func() error {
		c, err := net.Dial("tcp", "127.0.0.1:8081")
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = io.WriteString(c, "GET /secret-on-loopback HTTP/1.1\r\n\r\n")
		return err
	})
	for deadline := time.Now().Add(5 * time.Second); !capture.Contains([]byte("/secret-over-the-wire")); {
		if time.Now().After(deadline) {
			t.Fatalf("the capture did not see the request (%d frames)", capture.Frames())
		}
		time.Sleep(10 * time.Millisecond)
	}
	capture.Stop()
	if capture.Contains([]byte("/secret-on-loopback")) {
		t.Fatal("the capture of the veth saw loopback traffic")
	}
}
