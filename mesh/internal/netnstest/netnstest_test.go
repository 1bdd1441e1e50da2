package netnstest_test

import (
	"io"
	"net"
	"net/netip"
	"testing"

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
