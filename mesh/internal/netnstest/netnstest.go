// Package netnstest builds small networks of Linux network namespaces for
// tests: namespaces joined by veth pairs with addresses in a private test
// range, a way to run Go code and commands inside one, and cleanup when
// the test ends. It needs root and the ip command (Debian's iproute2);
// without them New skips the test and says why.
package netnstest

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"
)

// Net is a set of namespaces and links that belong to one test. It is safe
// for concurrent use.
type Net struct {
	t      testing.TB
	prefix string
}

// seq numbers the Nets of a process and links their links, so that
// parallel tests never share a name or a subnet.
var seq, links atomic.Int32

// New returns an empty network whose namespaces are deleted when the test
// ends. It skips the test when the process is not root or when ip is
// missing; tools lists further commands the test needs (iptables, ...),
// which are looked for too.
func New(t testing.TB, tools ...string) *Net {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create network namespaces")
	}
	for _, tool := range append([]string{"ip"}, tools...) {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s (Debian package %s)", tool, debianPackage(tool))
		}
	}
	n := seq.Add(1)
	return &Net{t: t, prefix: fmt.Sprintf("wgt%d-%d", os.Getpid()%100000, n)}
}

func debianPackage(tool string) string {
	switch {
	case tool == "ip":
		return "iproute2"
	case strings.HasPrefix(tool, "iptables"), strings.HasPrefix(tool, "ip6tables"):
		return "iptables"
	case tool == "nft":
		return "nftables"
	}
	return tool
}

// NS is one network namespace.
type NS struct {
	net  *Net
	name string
}

// Namespace creates a namespace with its loopback up. Its name is unique
// to the process and starts with the given label.
func (n *Net) Namespace(label string) *NS {
	n.t.Helper()
	name := n.prefix + "-" + label
	if len(name) > 64 {
		n.t.Fatalf("netnstest: namespace name %q is too long", name)
	}
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		n.t.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	n.t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			n.t.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
	})
	ns := &NS{net: n, name: name}
	ns.MustRun("ip", "link", "set", "lo", "up")
	return ns
}

// Name is the namespace's name, as `ip netns` knows it.
func (ns *NS) Name() string { return ns.name }

// Link joins two namespaces with a veth pair in a /24 of its own in
// 10.231.0.0/16 and returns the IPv4 address of each end (a in .1, b in
// .2). Each end also has the IPv6 address V6 maps its IPv4 address to,
// usable at once (no duplicate address detection).
func (n *Net) Link(a, b *NS) (addrA, addrB netip.Addr) {
	n.t.Helper()
	id := links.Add(1)
	if id > 255 {
		n.t.Fatal("netnstest: more than 255 links in one process")
	}
	ifA, ifB := fmt.Sprintf("vw%da", id), fmt.Sprintf("vw%db", id)
	if out, err := exec.Command("ip", "link", "add", ifA, "netns", a.name, "type", "veth", "peer", "name", ifB, "netns", b.name).CombinedOutput(); err != nil {
		n.t.Fatalf("creating a veth pair: %v: %s", err, out)
	}
	addrA = netip.AddrFrom4([4]byte{10, 231, byte(id), 1})
	addrB = netip.AddrFrom4([4]byte{10, 231, byte(id), 2})
	for _, end := range []struct {
		ns   *NS
		ifc  string
		addr netip.Addr
	}{{a, ifA, addrA}, {b, ifB, addrB}} {
		end.ns.MustRun("ip", "addr", "add", end.addr.String()+"/24", "dev", end.ifc)
		end.ns.MustRun("ip", "-6", "addr", "add", V6(end.addr).String()+"/64", "dev", end.ifc, "nodad")
		end.ns.MustRun("ip", "link", "set", end.ifc, "up")
	}
	return addrA, addrB
}

// V6 returns the IPv6 address Link gives the end that has IPv4 address
// 10.231.L.H: fd00:231:0:L::H.
func V6(v4 netip.Addr) netip.Addr {
	b := v4.As4()
	return netip.AddrFrom16([16]byte{0xfd, 0x00, 0x02, 0x31, 0, 0, 0, b[2], 0, 0, 0, 0, 0, 0, 0, b[3]})
}

// Run runs a command inside the namespace and returns its combined
// output.
func (ns *NS) Run(name string, args ...string) ([]byte, error) {
	return exec.Command("ip", append([]string{"netns", "exec", ns.name, name}, args...)...).CombinedOutput()
}

// MustRun is Run that fails the test on an error.
func (ns *NS) MustRun(name string, args ...string) []byte {
	ns.net.t.Helper()
	out, err := ns.Run(name, args...)
	if err != nil {
		ns.net.t.Fatalf("in %s: %s %s: %v: %s", ns.name, name, strings.Join(args, " "), err, out)
	}
	return out
}

// Do runs fn on an OS thread that has entered the namespace, and waits for
// it. Sockets fn opens belong to the namespace and stay in it after fn
// returns, so a listener made in Do may be served from any goroutine.
// Commands fn starts with os/exec run in the namespace too. The thread is
// discarded afterwards, never returned to the Go scheduler's pool.
func (ns *NS) Do(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		// Never unlocked: the goroutine's exit ends the thread, which is
		// then not reused in the wrong namespace.
		runtime.LockOSThread()
		f, err := os.Open("/var/run/netns/" + ns.name)
		if err != nil {
			errc <- err
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("entering namespace %s: %w", ns.name, err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// MustDo is Do that fails the test on an error.
func (ns *NS) MustDo(fn func() error) {
	ns.net.t.Helper()
	if err := ns.Do(fn); err != nil {
		ns.net.t.Fatalf("in %s: %v", ns.name, err)
	}
}
