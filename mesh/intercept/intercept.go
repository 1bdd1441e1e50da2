// Package intercept sends a service's TCP traffic through its sidecar
// without the service knowing: iptables REDIRECT rules in the nat table
// turn the app's outbound connections to the sidecar's outbound port and
// peers' inbound connections to its inbound port, and OriginalDst tells
// the sidecar where each connection was going.
//
// The rules live in two chains of their own, WASMGATE_INBOUND (jumped to
// from PREROUTING) and WASMGATE_OUTPUT (from OUTPUT), so that Remove takes
// them out without touching anyone else's. Connections of the sidecar's
// own user are never redirected, so its own upstream connections do not
// loop back into it.
package intercept

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
)

// The chains the rules live in.
const (
	InboundChain  = "WASMGATE_INBOUND"
	OutboundChain = "WASMGATE_OUTPUT"
	DNSChain      = "WASMGATE_DNS"
)

// Options say what to redirect where.
type Options struct {
	// UID is the user the sidecar runs as: its connections are left alone.
	UID int
	// InboundPort is where peers' connections to any port of the host are
	// sent (the sidecar's inbound listener).
	InboundPort int
	// OutboundPort is where the app's outbound connections are sent (the
	// sidecar's outbound listener).
	OutboundPort int
	// ExcludeInboundPorts are destination ports peers reach directly (an
	// admin or health port, ssh).
	ExcludeInboundPorts []int
	// ExcludeOutboundPorts are destination ports the app reaches directly
	// (the control plane, DNS over TCP).
	ExcludeOutboundPorts []int
	// IPv6 writes the same rules for IPv6 with ip6tables; without it a
	// dual-stack app's IPv6 connections would bypass the sidecar.
	IPv6 bool
	// DNSPort, when set, is where the app's DNS (UDP and TCP to port 53,
	// whatever the resolver's address) is sent: the sidecar's DNS
	// (--dns). Zero leaves DNS alone.
	DNSPort int
}

// Validate checks the options; its errors name the flag's field.
func (o Options) Validate() error {
	var errs []error
	if o.UID < 0 {
		errs = append(errs, fmt.Errorf("uid: %d is not a user id", o.UID))
	}
	check := func(name string, p int) {
		if p <= 0 || p > 65535 {
			errs = append(errs, fmt.Errorf("%s: %d is not a port (1 to 65535)", name, p))
		}
	}
	check("inbound_port", o.InboundPort)
	check("outbound_port", o.OutboundPort)
	if o.InboundPort == o.OutboundPort && o.InboundPort != 0 {
		errs = append(errs, fmt.Errorf("outbound_port: %d is also the inbound port", o.OutboundPort))
	}
	for i, p := range o.ExcludeInboundPorts {
		check(fmt.Sprintf("exclude_inbound_ports[%d]", i), p)
	}
	if o.DNSPort != 0 {
		check("dns_port", o.DNSPort)
	}
	for i, p := range o.ExcludeOutboundPorts {
		check(fmt.Sprintf("exclude_outbound_ports[%d]", i), p)
	}
	return errors.Join(errs...)
}

// Script returns the rules as iptables-restore input for the nat table
// (ip6tables-restore input when v6 is set), applied without flushing the
// table's other chains.
func Script(o Options, v6 bool) string {
	loopback := "127.0.0.0/8"
	if v6 {
		loopback = "::1/128"
	}
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	w("*nat")
	w(":%s - [0:0]", InboundChain)
	w(":%s - [0:0]", OutboundChain)
	// Inbound: whatever a peer connects to reaches the inbound listener,
	// except the listener's own port and the excluded ones.
	w("-A PREROUTING -p tcp -j %s", InboundChain)
	for _, p := range append([]int{o.InboundPort}, sortedUnique(o.ExcludeInboundPorts)...) {
		w("-A %s -p tcp --dport %d -j RETURN", InboundChain, p)
	}
	w("-A %s -p tcp -j REDIRECT --to-ports %d", InboundChain, o.InboundPort)
	// DNS, first: the app's queries, to any resolver, loopback's too, go
	// to the sidecar's DNS; the sidecar's own go where they were sent.
	// IPv4 only: the sidecar's DNS listens on 127.0.0.1.
	if o.DNSPort != 0 && !v6 {
		w(":%s - [0:0]", DNSChain)
		w("-A OUTPUT -p udp --dport 53 -j %s", DNSChain)
		w("-A OUTPUT -p tcp --dport 53 -j %s", DNSChain)
		w("-A %s -m owner --uid-owner %d -j RETURN", DNSChain, o.UID)
		w("-A %s -p udp -j REDIRECT --to-ports %d", DNSChain, o.DNSPort)
		w("-A %s -p tcp -j REDIRECT --to-ports %d", DNSChain, o.DNSPort)
	}
	// Outbound: the sidecar's own connections leave as they are; so does
	// the app's traffic to itself over loopback.
	w("-A OUTPUT -p tcp -j %s", OutboundChain)
	w("-A %s -m owner --uid-owner %d -j RETURN", OutboundChain, o.UID)
	w("-A %s -o lo -j RETURN", OutboundChain)
	w("-A %s -d %s -j RETURN", OutboundChain, loopback)
	for _, p := range sortedUnique(o.ExcludeOutboundPorts) {
		w("-A %s -p tcp --dport %d -j RETURN", OutboundChain, p)
	}
	w("-A %s -p tcp -j REDIRECT --to-ports %d", OutboundChain, o.OutboundPort)
	w("COMMIT")
	return b.String()
}

func sortedUnique(ps []int) []int {
	out := slices.Clone(ps)
	slices.Sort(out)
	return slices.Compact(out)
}

// Backend is one of the two iptables implementations.
type Backend struct {
	// Name is "nft" or "legacy".
	Name string
	// Iptables, Save and Restore are its commands for IPv4; Ip6tables,
	// Save6 and Restore6 for IPv6.
	Iptables, Save, Restore    string
	Ip6tables, Save6, Restore6 string
}

// family is one address family's commands.
type family struct{ iptables, save, restore string }

func (b Backend) families(v6 bool) []family {
	out := []family{{b.Iptables, b.Save, b.Restore}}
	if v6 {
		out = append(out, family{b.Ip6tables, b.Save6, b.Restore6})
	}
	return out
}

// The two implementations by their own commands, as Debian's iptables
// package installs them.
var (
	NFT = Backend{Name: "nft", Iptables: "iptables-nft", Save: "iptables-nft-save", Restore: "iptables-nft-restore",
		Ip6tables: "ip6tables-nft", Save6: "ip6tables-nft-save", Restore6: "ip6tables-nft-restore"}
	Legacy = Backend{Name: "legacy", Iptables: "iptables-legacy", Save: "iptables-legacy-save", Restore: "iptables-legacy-restore",
		Ip6tables: "ip6tables-legacy", Save6: "ip6tables-legacy-save", Restore6: "ip6tables-legacy-restore"}
	// plain is the implementation behind the unsuffixed commands.
	plain = Backend{Iptables: "iptables", Save: "iptables-save", Restore: "iptables-restore",
		Ip6tables: "ip6tables", Save6: "ip6tables-save", Restore6: "ip6tables-restore"}
)

// Detect picks the implementation the host uses, in the current network
// namespace: the one that already holds rules (as kube-proxy or Docker
// wrote them); when neither or both do, the one `iptables` runs.
func Detect(ctx context.Context) (Backend, error) {
	rules := func(b Backend) (int, bool) {
		if _, err := exec.LookPath(b.Save); err != nil {
			return 0, false
		}
		out, err := exec.CommandContext(ctx, b.Save).Output()
		if err != nil {
			return 0, false
		}
		return bytes.Count(out, []byte("\n-A ")), true
	}
	nft, hasNft := rules(NFT)
	legacy, hasLegacy := rules(Legacy)
	switch {
	case hasNft && nft > 0 && legacy == 0:
		return NFT, nil
	case hasLegacy && legacy > 0 && nft == 0:
		return Legacy, nil
	}
	if _, err := exec.LookPath("iptables"); err != nil {
		switch {
		case hasNft:
			return NFT, nil
		case hasLegacy:
			return Legacy, nil
		}
		return Backend{}, errors.New("no iptables found (install Debian's iptables package)")
	}
	out, err := exec.CommandContext(ctx, "iptables", "-V").Output()
	if err != nil {
		return Backend{}, fmt.Errorf("iptables -V: %w", err)
	}
	if strings.Contains(string(out), "legacy") {
		if hasLegacy {
			return Legacy, nil
		}
		b := plain
		b.Name = "legacy"
		return b, nil
	}
	if hasNft {
		return NFT, nil
	}
	b := plain
	b.Name = "nft"
	return b, nil
}

// Apply installs the rules with b in the current network namespace,
// replacing any that an earlier Apply left, in one iptables-restore per
// address family.
func Apply(ctx context.Context, b Backend, o Options) error {
	if err := o.Validate(); err != nil {
		return err
	}
	if err := Remove(ctx, b, o.IPv6); err != nil {
		return err
	}
	for i, f := range b.families(o.IPv6) {
		cmd := exec.CommandContext(ctx, f.restore, "--noflush")
		cmd.Stdin = strings.NewReader(Script(o, i == 1))
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("%s: %w: %s", f.restore, err, bytes.TrimSpace(out))
		}
	}
	return nil
}

// Remove takes out the jumps to the chains and the chains themselves, for
// IPv4 and, with v6, IPv6. It is not an error that they are not there.
func Remove(ctx context.Context, b Backend, v6 bool) error {
	for _, f := range b.families(v6) {
		if err := remove(ctx, f.iptables); err != nil {
			return err
		}
	}
	return nil
}

func remove(ctx context.Context, iptables string) error {
	run := func(args ...string) error {
		out, err := exec.CommandContext(ctx, iptables, append([]string{"-w", "-t", "nat"}, args...)...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("%s %s: %w: %s", iptables, strings.Join(args, " "), err, bytes.TrimSpace(out))
		}
		return nil
	}
	for _, j := range [][]string{{"PREROUTING", "-p", "tcp", "-j", InboundChain}, {"OUTPUT", "-p", "tcp", "-j", OutboundChain},
		{"OUTPUT", "-p", "udp", "--dport", "53", "-j", DNSChain}, {"OUTPUT", "-p", "tcp", "--dport", "53", "-j", DNSChain}} {
		// One delete per jump that an earlier run added.
		for range 16 {
			if run(append([]string{"-C"}, j...)...) != nil {
				break
			}
			if err := run(append([]string{"-D"}, j...)...); err != nil {
				return err
			}
		}
	}
	for _, c := range []string{InboundChain, OutboundChain, DNSChain} {
		if run("-n", "-L", c) != nil {
			continue
		}
		if err := run("-F", c); err != nil {
			return err
		}
		if err := run("-X", c); err != nil {
			return err
		}
	}
	return nil
}

// Ports parses a comma-separated list of ports ("15020,22"), for flags.
func Ports(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		p, err := strconv.Atoi(f)
		if err != nil || p <= 0 || p > 65535 {
			return nil, fmt.Errorf("%q is not a port", f)
		}
		out = append(out, p)
	}
	return out, nil
}

// HostHasIPv6 reports whether the current network namespace has IPv6.
func HostHasIPv6() bool {
	_, err := os.Stat("/proc/net/if_inet6")
	return err == nil
}
