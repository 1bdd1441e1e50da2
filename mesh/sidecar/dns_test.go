package sidecar_test

import (
	"net"
	"testing"

	"github.com/miekg/dns"

	"github.com/wasmgate/wasmgate/controlplane/registry"
	"github.com/wasmgate/wasmgate/mesh/sidecar"
)

// TestDNS: the sidecar's DNS answers the names of the services the app
// calls, in every form an app may use, with their virtual addresses (an
// AAAA query with nothing, the name being IPv4 only), and passes every
// other query to the upstream resolver and its answer back, over UDP and
// TCP; with no upstream answering, SERVFAIL.
func TestDNS(t *testing.T) {
	upstream := startResolver(t, map[string]string{"api.example.test.": "192.0.2.7", "payments.": "192.0.2.8"})
	d, err := sidecar.NewDNS("127.0.0.1:0", []string{upstream}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	s := sidecar.Settings{Service: "web", Namespace: "shop", AppPort: 8080, Inbound: "10.0.0.1:15006",
		Calls: []string{"orders", "payments.bank", "ledger"}, TCPCalls: []sidecar.TCPCall{{Service: "db"}}}
	s.Normalize()
	d.Set(&s, sidecar.State{VIPs: map[string]string{"orders.shop": "240.240.0.10", "payments.bank": "240.240.0.11", "db.shop": "240.240.0.12"}})

	ask := func(network, name string, qtype uint16) *dns.Msg {
		t.Helper()
		r, _, err := (&dns.Client{Net: network}).Exchange(new(dns.Msg).SetQuestion(name, qtype), d.Addr())
		if err != nil {
			t.Fatalf("%s %s: %v", network, name, err)
		}
		return r
	}
	a := func(r *dns.Msg) string {
		for _, rr := range r.Answer {
			if x, ok := rr.(*dns.A); ok {
				return x.A.String()
			}
		}
		return dns.RcodeToString[r.Rcode]
	}
	for _, network := range []string{"udp", "tcp"} {
		for name, want := range map[string]string{
			"orders.": "240.240.0.10", "ORDERS.shop.": "240.240.0.10", "orders.shop.svc.": "240.240.0.10", "orders.shop.svc.cluster.local.": "240.240.0.10",
			"payments.bank.": "240.240.0.11", "payments.bank.svc.cluster.local.": "240.240.0.11",
			"db.": "240.240.0.12",
			// Another namespace's service is not known by its bare name,
			// a service without a virtual address not at all: upstream's.
			"payments.": "192.0.2.8", "ledger.shop.": "NXDOMAIN",
			"api.example.test.": "192.0.2.7", "nothing.example.test.": "NXDOMAIN",
		} {
			if got := a(ask(network, name, dns.TypeA)); got != want {
				t.Errorf("%s A %s = %s, want %s", network, name, got, want)
			}
		}
	}
	// Calls to every service: the names of every service discovery
	// holds answer, the TCP services' too.
	all := sidecar.Settings{Service: "web", Namespace: "shop", AppPort: 8080, Inbound: "10.0.0.1:15006",
		Calls: []string{"*"}, TCPCalls: []sidecar.TCPCall{{Service: "db"}}}
	all.Normalize()
	// A registry name that is no SERVICE.NAMESPACE is a cluster of
	// proxies outside the mesh.
	d.Set(&all, sidecar.State{Endpoints: map[string][]registry.Endpoint{"orders.shop": nil, "ledger.bank": nil, "db.shop": nil, "backend": nil},
		VIPs: map[string]string{"orders.shop": "240.240.0.10", "ledger.bank": "240.240.0.13", "db.shop": "240.240.0.12", "backend": "240.240.0.14"}})
	for name, want := range map[string]string{"orders.": "240.240.0.10", "ledger.bank.svc.cluster.local.": "240.240.0.13", "db.": "240.240.0.12",
		"payments.bank.": "NXDOMAIN", "backend.": "NXDOMAIN"} {
		if got := a(ask("udp", name, dns.TypeA)); got != want {
			t.Errorf("calls to every service: A %s = %s, want %s", name, got, want)
		}
	}
	d.Set(&s, sidecar.State{VIPs: map[string]string{"orders.shop": "240.240.0.10", "payments.bank": "240.240.0.11", "db.shop": "240.240.0.12"}})
	if r := ask("udp", "orders.", dns.TypeAAAA); r.Rcode != dns.RcodeSuccess || len(r.Answer) != 0 {
		t.Errorf("AAAA orders. = %v", r)
	}

	dead, err := sidecar.NewDNS("127.0.0.1:0", []string{closedUDP(t)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer dead.Close()
	r, _, err := (&dns.Client{}).Exchange(new(dns.Msg).SetQuestion("api.example.test.", dns.TypeA), dead.Addr())
	if err != nil || r.Rcode != dns.RcodeServerFailure {
		t.Fatalf("no upstream: %v %v", r, err)
	}
}

// startResolver serves A records of names on UDP and TCP, NXDOMAIN for
// any other name, and returns its address.
func startResolver(t *testing.T, names map[string]string) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", pc.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	h := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg).SetReply(r)
		if ip, ok := names[r.Question[0].Name]; ok {
			m.Answer = []dns.RR{&dns.A{Hdr: dns.RR_Header{Name: r.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: net.ParseIP(ip)}}
		} else {
			m.Rcode = dns.RcodeNameError
		}
		w.WriteMsg(m)
	})
	for _, s := range []*dns.Server{{PacketConn: pc, Handler: h}, {Listener: ln, Handler: h}} {
		go s.ActivateAndServe()
		t.Cleanup(func() { s.Shutdown() })
	}
	return pc.LocalAddr().String()
}

// closedUDP is a UDP address nothing answers at.
func closedUDP(t *testing.T) string {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := pc.LocalAddr().String()
	pc.Close()
	return addr
}
