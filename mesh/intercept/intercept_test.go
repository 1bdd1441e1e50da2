package intercept_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wasmgate/wasmgate/mesh/intercept"
	"github.com/wasmgate/wasmgate/mesh/internal/netnstest"
)

func TestScript(t *testing.T) {
	o := intercept.Options{UID: 1337, InboundPort: 15006, OutboundPort: 15001, ExcludeInboundPorts: []int{22, 15020, 22}, ExcludeOutboundPorts: []int{9900}}
	got := intercept.Script(o, false)
	want := `*nat
:WASMGATE_INBOUND - [0:0]
:WASMGATE_OUTPUT - [0:0]
-A PREROUTING -p tcp -j WASMGATE_INBOUND
-A WASMGATE_INBOUND -p tcp --dport 15006 -j RETURN
-A WASMGATE_INBOUND -p tcp --dport 22 -j RETURN
-A WASMGATE_INBOUND -p tcp --dport 15020 -j RETURN
-A WASMGATE_INBOUND -p tcp -j REDIRECT --to-ports 15006
-A OUTPUT -p tcp -j WASMGATE_OUTPUT
-A WASMGATE_OUTPUT -m owner --uid-owner 1337 -j RETURN
-A WASMGATE_OUTPUT -o lo -j RETURN
-A WASMGATE_OUTPUT -d 127.0.0.0/8 -j RETURN
-A WASMGATE_OUTPUT -p tcp --dport 9900 -j RETURN
-A WASMGATE_OUTPUT -p tcp -j REDIRECT --to-ports 15001
COMMIT
`
	if got != want {
		t.Fatalf("Script =\n%s\nwant\n%s", got, want)
	}
	if got6, want6 := intercept.Script(o, true), strings.Replace(want, "127.0.0.0/8", "::1/128", 1); got6 != want6 {
		t.Fatalf("Script for IPv6 =\n%s\nwant\n%s", got6, want6)
	}
	// With the sidecar's DNS, port 53 goes there first (IPv4 only).
	o.DNSPort = 15053
	dnsRules := `:WASMGATE_DNS - [0:0]
-A OUTPUT -p udp --dport 53 -j WASMGATE_DNS
-A OUTPUT -p tcp --dport 53 -j WASMGATE_DNS
-A WASMGATE_DNS -m owner --uid-owner 1337 -j RETURN
-A WASMGATE_DNS -p udp -j REDIRECT --to-ports 15053
-A WASMGATE_DNS -p tcp -j REDIRECT --to-ports 15053
`
	if got, want := intercept.Script(o, false), strings.Replace(want, "-A OUTPUT -p tcp -j WASMGATE_OUTPUT\n", dnsRules+"-A OUTPUT -p tcp -j WASMGATE_OUTPUT\n", 1); got != want {
		t.Fatalf("Script with DNS =\n%s\nwant\n%s", got, want)
	}
	if got6 := intercept.Script(o, true); strings.Contains(got6, "WASMGATE_DNS") {
		t.Fatalf("Script for IPv6 with DNS =\n%s", got6)
	}
}

func TestOptionsValidate(t *testing.T) {
	err := intercept.Options{UID: -1, InboundPort: 0, OutboundPort: 70000, ExcludeInboundPorts: []int{0}}.Validate()
	for _, want := range []string{"uid:", "inbound_port:", "outbound_port:", "exclude_inbound_ports[0]:"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() = %v, want a mention of %s", err, want)
		}
	}
	if err := (intercept.Options{InboundPort: 1, OutboundPort: 1}).Validate(); err == nil {
		t.Error("one port for both directions was accepted")
	}
	if p, err := intercept.Ports("22, 15020,"); err != nil || len(p) != 2 {
		t.Errorf("Ports = %v, %v", p, err)
	}
}

// sidecarUID is the user the rules exclude; the test itself runs as root,
// so its connections are the app's.
const sidecarUID = 1337

// serve answers every connection with a greeting, and, for a redirected
// one, the original destination it reads.
func serve(t *testing.T, l net.Listener, name string, origDst bool) {
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			msg := name
			if origDst {
				dst, err := intercept.OriginalDst(c)
				if err != nil {
					msg += " error " + err.Error()
				} else {
					msg += " " + dst.String()
				}
			}
			io.WriteString(c, msg)
			c.Close()
		}
	}()
	t.Cleanup(func() { l.Close() })
}

func listen(t *testing.T, ns *netnstest.NS, addr string) net.Listener {
	var l net.Listener
	ns.MustDo(func() (err error) {
		l, err = net.Listen("tcp", addr)
		return err
	})
	return l
}

// greet connects from inside ns and returns what the server said.
func greet(ns *netnstest.NS, addr netip.AddrPort) (string, error) {
	var got string
	err := ns.Do(func() error {
		c, err := net.DialTimeout("tcp", addr.String(), 3*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(3 * time.Second))
		b, err := io.ReadAll(c)
		got = string(b)
		return err
	})
	return got, err
}

// TestRedirect installs the rules in a namespace of its own, with each
// iptables implementation the host has, and checks that the app's
// outbound connection and a peer's inbound one reach the sidecar's
// listeners with their original destinations, while the sidecar's own user
// and the excluded port go where they were sent.
func TestRedirect(t *testing.T) {
	netnstest.New(t, "iptables", "bash")
	ran := 0
	for _, b := range []intercept.Backend{intercept.NFT, intercept.Legacy} {
		if _, err := exec.LookPath(b.Restore); err != nil {
			t.Logf("%s: %s is missing", b.Name, b.Restore)
			continue
		}
		ran++
		t.Run(b.Name, func(t *testing.T) { testRedirect(t, b) })
	}
	if ran == 0 {
		t.Skip("needs iptables-nft or iptables-legacy (Debian package iptables)")
	}
}

func testRedirect(t *testing.T, b intercept.Backend) {
	ctx := context.Background()
	n := netnstest.New(t, b.Restore)
	app, peer := n.Namespace("app"), n.Namespace("peer")
	appAddr, peerAddr := n.Link(app, peer)

	serve(t, listen(t, app, ":15001"), "outbound", true)
	serve(t, listen(t, app, ":15006"), "inbound", true)
	serve(t, listen(t, app, ":15053"), "dns", true)
	serve(t, listen(t, peer, ":80"), "peer", false)
	var dnsUDP net.PacketConn
	// On loopback, as the sidecar's DNS: REDIRECT sends the app's
	// packets to 127.0.0.1, and a reply from another address would not
	// be taken back to the resolver's.
	app.MustDo(func() (err error) { dnsUDP, err = net.ListenPacket("udp4", "127.0.0.1:15053"); return err })
	t.Cleanup(func() { dnsUDP.Close() })
	go func() {
		buf := make([]byte, 512)
		for {
			n, from, err := dnsUDP.ReadFrom(buf)
			if err != nil {
				return
			}
			dnsUDP.WriteTo(append([]byte("dns "), buf[:n]...), from)
		}
	}()

	opts := intercept.Options{UID: sidecarUID, InboundPort: 15006, OutboundPort: 15001, ExcludeInboundPorts: []int{22}, IPv6: true, DNSPort: 15053}
	app.MustDo(func() error { return intercept.Apply(ctx, b, opts) })
	// Applying twice leaves one set of rules.
	app.MustDo(func() error { return intercept.Apply(ctx, b, opts) })
	for _, save := range []string{b.Save, b.Save6} {
		if out := string(app.MustRun(save, "-t", "nat")); strings.Count(out, "-j "+intercept.OutboundChain) != 1 {
			t.Fatalf("%s after two applies:\n%s", save, out)
		}
	}

	peer80 := netip.AddrPortFrom(peerAddr, 80)
	if got, err := greet(app, peer80); err != nil || got != "outbound "+peer80.String() {
		t.Errorf("the app's outbound connection: %q, %v; want the outbound listener with %s", got, err, peer80)
	}
	app8080 := netip.AddrPortFrom(appAddr, 8080)
	if got, err := greet(peer, app8080); err != nil || got != "inbound "+app8080.String() {
		t.Errorf("a peer's inbound connection: %q, %v; want the inbound listener with %s", got, err, app8080)
	}
	if got, err := greet(peer, netip.AddrPortFrom(appAddr, 22)); err == nil {
		t.Errorf("a connection to the excluded port 22 was answered: %q", got)
	}
	// DNS to a resolver anywhere, over TCP and UDP, reaches the DNS port.
	peer53 := netip.AddrPortFrom(peerAddr, 53)
	if got, err := greet(app, peer53); err != nil || got != "dns "+peer53.String() {
		t.Errorf("the app's DNS over TCP: %q, %v; want the DNS port with %s", got, err, peer53)
	}
	var answer string
	app.MustDo(func() error {
		c, err := net.Dial("udp4", peer53.String())
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(3 * time.Second))
		if _, err := c.Write([]byte("query")); err != nil {
			return err
		}
		buf := make([]byte, 512)
		n, err := c.Read(buf)
		answer = string(buf[:n])
		return err
	})
	if answer != "dns query" {
		t.Errorf("the app's DNS over UDP: %q, want the DNS port's answer", answer)
	}
	// The same over IPv6.
	peer80v6 := netip.AddrPortFrom(netnstest.V6(peerAddr), 80)
	if got, err := greet(app, peer80v6); err != nil || got != "outbound "+peer80v6.String() {
		t.Errorf("the app's outbound IPv6 connection: %q, %v; want the outbound listener with %s", got, err, peer80v6)
	}
	app8080v6 := netip.AddrPortFrom(netnstest.V6(appAddr), 8080)
	if got, err := greet(peer, app8080v6); err != nil || got != "inbound "+app8080v6.String() {
		t.Errorf("a peer's inbound IPv6 connection: %q, %v; want the inbound listener with %s", got, err, app8080v6)
	}

	// The sidecar's own user reaches the peer itself.
	var out []byte
	app.MustDo(func() error {
		cmd := exec.Command("bash", "-c", fmt.Sprintf("exec 3<>/dev/tcp/%s/80; cat <&3", peerAddr))
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: sidecarUID, Gid: sidecarUID}}
		var err error
		out, err = cmd.CombinedOutput()
		return err
	})
	if string(out) != "peer" {
		t.Errorf("a connection of the sidecar's user reached %q, want the peer", out)
	}

	app.MustDo(func() error { return intercept.Remove(ctx, b, true) })
	for _, dst := range []netip.AddrPort{peer80, peer80v6} {
		if got, err := greet(app, dst); err != nil || got != "peer" {
			t.Errorf("after Remove, to %s: %q, %v; want the peer", dst, got, err)
		}
	}
	for _, save := range []string{b.Save, b.Save6} {
		if out := string(app.MustRun(save, "-t", "nat")); strings.Contains(out, "WASMGATE") {
			t.Errorf("rules left after Remove:\n%s", out)
		}
	}
}

// TestDetect runs in a fresh namespace, where no rules exist: it must pick
// an implementation that is installed.
func TestDetect(t *testing.T) {
	n := netnstest.New(t, "iptables")
	ns := n.Namespace("detect")
	var b intercept.Backend
	ns.MustDo(func() (err error) {
		b, err = intercept.Detect(context.Background())
		return err
	})
	if _, err := exec.LookPath(b.Restore); err != nil || (b.Name != "nft" && b.Name != "legacy") {
		t.Fatalf("Detect = %+v", b)
	}
	// With rules in the legacy tables only, legacy is the one in use.
	if _, err := exec.LookPath(intercept.Legacy.Iptables); err == nil {
		ns.MustRun(intercept.Legacy.Iptables, "-t", "filter", "-A", "INPUT", "-p", "tcp", "--dport", "9", "-j", "ACCEPT")
		ns.MustDo(func() (err error) {
			b, err = intercept.Detect(context.Background())
			return err
		})
		if b.Name != "legacy" {
			t.Fatalf("with legacy rules, Detect = %+v", b)
		}
	}
}
