package sidecar

// The sidecar's DNS: the names of the services the app calls answered
// with their virtual addresses, every other name from the host's
// resolvers.

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
	"go.uber.org/zap"
)

// dnsTTL is how long an app may keep a service's answer: a virtual
// address never changes, but a service the app stops calling should not
// stay answered for long.
const dnsTTL = 30

// ClusterDomain is the suffix Kubernetes' DNS gives services
// ("orders.shop.svc.cluster.local"); the sidecar answers it too.
const ClusterDomain = "cluster.local"

// DNS answers an app's name lookups, on UDP and TCP at one address (the
// iptables rules of `wasmgate sidecar iptables --dns-port` send the app's
// port-53 traffic there): an A query for a name of a service the app
// calls gets the service's virtual address, any other query goes to the
// upstream resolvers and back. So a plain app on any host finds the
// mesh's services by name, as it would Kubernetes Services, and its
// connection to the address is the sidecar's to route.
type DNS struct {
	names    atomic.Pointer[map[string]netip.Addr] // fully qualified, lower case
	upstream []string
	udp, tcp *dns.Server
	log      *zap.Logger
	wg       sync.WaitGroup
}

// NewDNS serves at addr (UDP and TCP on the same port; port 0 picks
// one), forwarding other names to upstream ("host:port" each; empty
// means the servers of /etc/resolv.conf).
func NewDNS(addr string, upstream []string, log *zap.Logger) (*DNS, error) {
	if log == nil {
		log = zap.NewNop()
	}
	if len(upstream) == 0 {
		if cfg, err := dns.ClientConfigFromFile("/etc/resolv.conf"); err == nil {
			for _, s := range cfg.Servers {
				upstream = append(upstream, net.JoinHostPort(s, cfg.Port))
			}
		}
	}
	d := &DNS{upstream: upstream, log: log}
	empty := map[string]netip.Addr{}
	d.names.Store(&empty)
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("sidecar dns: %w", err)
	}
	ln, err := net.Listen("tcp", pc.LocalAddr().String())
	if err != nil {
		pc.Close()
		return nil, fmt.Errorf("sidecar dns: %w", err)
	}
	// A resolver that is this server would send every other name back.
	self := pc.LocalAddr().String()
	d.upstream = slices.DeleteFunc(d.upstream, func(u string) bool { return u == self })
	d.udp = &dns.Server{PacketConn: pc, Handler: d}
	d.tcp = &dns.Server{Listener: ln, Handler: d}
	for _, s := range []*dns.Server{d.udp, d.tcp} {
		d.wg.Go(func() {
			if err := s.ActivateAndServe(); err != nil {
				log.Warn("sidecar dns stopped", zap.Error(err))
			}
		})
	}
	return d, nil
}

// Addr is the address it serves at.
func (d *DNS) Addr() string { return d.udp.PacketConn.LocalAddr().String() }

// Close stops it.
func (d *DNS) Close() {
	d.udp.Shutdown()
	d.tcp.Shutdown()
	d.wg.Wait()
}

// Set makes the names of the services s calls in st (hostNames, and the
// cluster domain's forms) answer with their virtual addresses (st.VIPs,
// by registry name); a service without one is left to the upstream.
func (d *DNS) Set(s *Settings, st State) {
	names := map[string]netip.Addr{}
	for _, name := range append(s.httpTargets(st), s.tcpTargets(st)...) {
		ip, err := netip.ParseAddr(st.VIPs[name])
		if err != nil {
			continue
		}
		for _, h := range append(hostNames(name, s.Namespace), name+".svc."+ClusterDomain) {
			names[dns.Fqdn(h)] = ip
		}
	}
	d.names.Store(&names)
}

// ServeDNS implements dns.Handler.
func (d *DNS) ServeDNS(w dns.ResponseWriter, r *dns.Msg) {
	if len(r.Question) == 1 {
		q := r.Question[0]
		if ip, ok := (*d.names.Load())[strings.ToLower(q.Name)]; ok && q.Qclass == dns.ClassINET {
			m := new(dns.Msg).SetReply(r)
			m.Authoritative = true
			if q.Qtype == dns.TypeA || q.Qtype == dns.TypeANY {
				m.Answer = []dns.RR{&dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: dnsTTL}, A: ip.AsSlice()}}
			}
			// Any other type (AAAA) is answered empty: the name exists,
			// with an IPv4 address only.
			_ = w.WriteMsg(m)
			return
		}
	}
	d.forward(w, r)
}

// forward asks the upstream resolvers, in order, over the protocol the
// query came by, and answers with the first reply; SERVFAIL when none
// replies.
func (d *DNS) forward(w dns.ResponseWriter, r *dns.Msg) {
	network := "udp"
	if _, ok := w.RemoteAddr().(*net.TCPAddr); ok {
		network = "tcp"
	}
	c := &dns.Client{Net: network, Timeout: 2 * time.Second}
	for _, up := range d.upstream {
		resp, _, err := c.Exchange(r, up)
		if err == nil && resp != nil {
			_ = w.WriteMsg(resp)
			return
		}
		d.log.Debug("upstream resolver did not answer", zap.String("resolver", up), zap.Error(err))
	}
	_ = w.WriteMsg(new(dns.Msg).SetRcode(r, dns.RcodeServerFailure))
}
