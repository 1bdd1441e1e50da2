package sidecar

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/controlplane/discovery"
	"github.com/wasmgate/wasmgate/mesh/policy"
	"github.com/wasmgate/wasmgate/mesh/relay"
	"github.com/wasmgate/wasmgate/proxy"
	"github.com/wasmgate/wasmgate/proxy/metrics"
	"github.com/wasmgate/wasmgate/proxy/telemetry"
	"github.com/wasmgate/wasmgate/proxy/tlsconf"
)

// TCP is the part of a sidecar that carries opaque TCP (package relay):
// the inbound of an app of protocol tcp, the local ports of the TCP
// services the app calls, and the connections its interception sends to
// the outbound listener that are bound for a TCP service. Create it with
// NewTCP, give its ProxyOptions to the proxy, then Start it.
type TCP struct {
	s   Settings
	out *relay.Outbound
	in  *relay.Inbound

	inLn net.Listener
	done chan struct{}

	// The names of the TCP services the app calls are resolved as the
	// app resolves them, every resolveEvery, until stop (resolve).
	lookup       func(ctx context.Context, host string) ([]netip.Addr, error)
	resolveEvery time.Duration
	stop         chan struct{}
	resolved     sync.WaitGroup
	log          *zap.Logger

	// The network filters of each side (setFilters), which run in the
	// proxy's plugins once Start gave the proxy.
	mu            sync.Mutex
	srv           *proxy.Server
	netIn, netOut []config.FilterRef

	// The relay's aliases (SetAliases): the addresses names resolve to,
	// and the services' virtual addresses.
	aliasMu               sync.Mutex
	resolvedTCP, vipTCP   map[netip.Addr]string
	resolvedHTTP, vipHTTP map[netip.Addr]bool
}

// resolveEvery is how often a sidecar resolves the names of the TCP
// services its app calls.
const resolveEvery = 30 * time.Second

// NewTCP prepares the relay of settings s (normalised and valid). mesh is
// the sidecar's workload identity, guard its service's policy.
func NewTCP(s *Settings, mesh tlsconf.Mesh, guard *policy.Guard, log *zap.Logger) (*TCP, error) {
	if log == nil {
		log = zap.NewNop()
	}
	out, err := relay.NewOutbound(relay.OutboundOptions{Mesh: mesh, Outside: outside(s.OutboundPolicy),
		DetectTimeout: time.Duration(s.ProtocolDetectionTimeout), Logger: log.Named("tcp-outbound")})
	if err != nil {
		return nil, err
	}
	t := &TCP{s: *s, out: out, done: make(chan struct{}), stop: make(chan struct{}), log: log,
		lookup: func(ctx context.Context, host string) ([]netip.Addr, error) {
			return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		},
		resolveEvery: resolveEvery}
	if s.Protocol == ProtocolTCP {
		t.in, err = relay.NewInbound(relay.InboundOptions{Mesh: mesh, Guard: guard, AppPort: s.AppPort, Mode: s.InboundMode,
			Destination: s.Name(), Logger: log.Named("tcp-inbound")})
		if err != nil {
			return nil, err
		}
	}
	return t, nil
}

// outside is what the relay does with a connection outside the mesh that
// does not speak HTTP, under an outbound policy.
func outside(mode string) relay.Outside {
	if mode == AllowAny {
		return relay.OutsidePass
	}
	return relay.OutsideRefuse
}

// ProxyOptions sets what the proxy needs for the sidecar's interception:
// its outbound listener hands connections bound for a TCP service to the
// relay, and routes by original destination a request whose Host names
// no service.
func (t *TCP) ProxyOptions(o *proxy.Options) {
	o.Sockets = func(listener string, ln net.Listener) net.Listener {
		if listener != OutboundListener {
			return ln
		}
		return t.out.Intercept(ln)
	}
	o.RouteByDestination = []string{OutboundListener}
}

// Start opens the local port of each TCP service the app calls and, for
// a TCP app, the inbound listener for peers. Flow and decision records go
// to tel (nil: none): the proxy's telemetry, made after its options; the
// connections are counted in the metrics of srv, the sidecar's proxy,
// whose plugins are the network filters (nil: neither).
func (t *TCP) Start(tel *telemetry.Pipeline, srv *proxy.Server) error {
	var met *metrics.Metrics
	if srv != nil {
		met = srv.Metrics()
	}
	t.out.SetTelemetry(tel)
	t.out.SetMetrics(met)
	if t.in != nil {
		t.in.SetTelemetry(tel)
		t.in.SetMetrics(met)
	}
	t.mu.Lock()
	t.srv = srv
	t.mu.Unlock()
	t.setFilters()
	ok := false
	defer func() {
		if !ok {
			t.Close()
		}
	}()
	for i, c := range t.s.TCPCalls {
		if c.Listen == "" {
			continue
		}
		name, _ := discovery.ServiceName(c.Service, t.s.Namespace)
		if _, err := t.out.Listen(name, c.Listen); err != nil {
			return fmt.Errorf("sidecar.tcp_calls[%d].listen: %w", i, err)
		}
	}
	if t.in != nil {
		ln, err := net.Listen("tcp", t.s.Inbound)
		if err != nil {
			return fmt.Errorf("sidecar.inbound: %w", err)
		}
		t.inLn = ln
		go func() {
			defer close(t.done)
			t.in.Serve(ln)
		}()
	} else {
		close(t.done)
	}
	if len(t.s.TCPTargets())+len(t.s.Targets()) > 0 {
		t.resolved.Add(1)
		go func() {
			defer t.resolved.Done()
			t.resolveLoop()
		}()
	}
	ok = true
	return nil
}

// setFilters has the relay's connections pass through the network
// filters in, on the inbound, and out, on the outbound, from now on. With
// no argument it gives the relay those set last (at Start).
func (t *TCP) setFilters(lists ...[]config.FilterRef) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(lists) == 2 {
		t.netIn, t.netOut = lists[0], lists[1]
	}
	if t.srv == nil {
		return
	}
	t.out.SetFilters(&relay.Filters{Proxy: t.srv, Plugins: t.netOut})
	if t.in != nil {
		t.in.SetFilters(&relay.Filters{Proxy: t.srv, Plugins: t.netIn})
	}
}

// resolveLoop resolves the names of the services the app calls now and
// every t.resolveEvery, and gives the relay the addresses they resolve
// to, so that an intercepted connection to one (a Kubernetes Service's
// cluster IP: the app connects to db:5432) finds its TCP service, or
// goes to the HTTP listener without being sniffed.
func (t *TCP) resolveLoop() {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-t.stop
		cancel()
	}()
	var lastTCP map[netip.Addr]string
	var lastHTTP map[netip.Addr]bool
	for {
		tcp, http := t.resolve(ctx)
		if ctx.Err() != nil {
			return
		}
		if !maps.Equal(tcp, lastTCP) || !maps.Equal(http, lastHTTP) {
			for ip, name := range tcp {
				if lastTCP[ip] != name {
					t.log.Info("a TCP service's name resolves to an address; connections to it are relayed to the service",
						zap.String("service", name), zap.String("address", ip.String()))
				}
			}
			t.setAliases(tcp, http, nil, nil)
			lastTCP, lastHTTP = tcp, http
		}
		select {
		case <-t.stop:
			return
		case <-time.After(t.resolveEvery):
		}
	}
}

// resolve looks up, for each service the app calls, the names the app
// may know it by (hostNames), and returns the addresses found: the TCP
// services' by service, the HTTP services' as a set. An address that
// two TCP services, or a TCP and an HTTP service, resolve to, loopback
// and the unspecified address are left out.
func (t *TCP) resolve(ctx context.Context) (tcp map[netip.Addr]string, http map[netip.Addr]bool) {
	out := map[netip.Addr]string{}
	clash := map[netip.Addr]bool{}
	const httpService = "" // out's value for an HTTP service's address
	tcpNames := t.s.TCPTargets()
	// Every name at once: a resolver that does not answer costs the
	// timeout once, not once a name.
	type query struct {
		owner, host string
		ips         []netip.Addr
	}
	var queries []*query
	for _, name := range append(tcpNames, t.s.Targets()...) {
		owner := httpService
		if slices.Contains(tcpNames, name) {
			owner = name
		}
		for _, host := range hostNames(name, t.s.Namespace) {
			queries = append(queries, &query{owner: owner, host: host})
		}
	}
	var wg sync.WaitGroup
	for _, q := range queries {
		wg.Go(func() {
			lctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
			q.ips, _ = t.lookup(lctx, q.host)
		})
	}
	wg.Wait()
	for _, q := range queries {
		for _, ip := range q.ips {
			ip = ip.Unmap()
			if ip.IsLoopback() || ip.IsUnspecified() {
				continue
			}
			if o, ok := out[ip]; ok && o != q.owner {
				clash[ip] = true
			}
			out[ip] = q.owner
		}
	}
	tcp, http = map[netip.Addr]string{}, map[netip.Addr]bool{}
	for ip, owner := range out {
		switch {
		case clash[ip]:
		case owner == httpService:
			http[ip] = true
		default:
			tcp[ip] = owner
		}
	}
	return tcp, http
}

// hostNames are the names an app may use for the service name
// ("db.shop"): "db.shop" and "db.shop.svc" (which Kubernetes' DNS search
// domains complete), and "db" alone from the service's own namespace.
func hostNames(name, namespace string) []string {
	svc, ns, _ := strings.Cut(name, ".")
	out := []string{name, name + ".svc"}
	if ns == namespace {
		out = append([]string{svc}, out...)
	}
	return out
}

// InboundAddr is the address of a TCP app's inbound listener, or nil.
func (t *TCP) InboundAddr() net.Addr {
	if t.inLn == nil {
		return nil
	}
	return t.inLn.Addr()
}

// Close stops the listeners and ends every relayed connection.
func (t *TCP) Close() {
	select {
	case <-t.stop:
	default:
		close(t.stop)
	}
	t.resolved.Wait()
	if t.inLn != nil {
		_ = t.inLn.Close()
		<-t.done
		t.in.Close()
	}
	t.out.Close()
}

// update gives the relay the endpoints of the TCP services of st.
func (t *TCP) update(s *Settings, st State, trustDomain string) error {
	eps := map[string][]relay.Endpoint{}
	var errs []error
	tcpNames := s.tcpTargets(st)
	for _, name := range tcpNames {
		_, ns, _ := strings.Cut(name, ".")
		list := []relay.Endpoint{}
		for _, ep := range st.Endpoints[name] {
			e := relay.Endpoint{Address: ep.Address, Weight: ep.Weight}
			if sa, _, ok := strings.Cut(ep.ID, ":"); ok && sa != "" {
				e.Identity = policy.SPIFFEID(trustDomain, ns, sa)
			} else {
				errs = append(errs, fmt.Errorf("endpoint %q of %s names no service account; it is not used", ep.ID, name))
				continue
			}
			list = append(list, e)
		}
		eps[name] = list
	}
	httpNames := s.httpTargets(st)
	var others []netip.Addr
	for _, name := range httpNames {
		for _, ep := range st.Endpoints[name] {
			if ap, err := netip.ParseAddrPort(ep.Address); err == nil {
				others = append(others, ap.Addr())
			}
		}
	}
	if err := t.out.Update(eps, others); err != nil {
		return err
	}
	vipTCP, vipHTTP := map[netip.Addr]string{}, map[netip.Addr]bool{}
	for _, name := range httpNames {
		if ip, err := netip.ParseAddr(st.VIPs[name]); err == nil {
			vipHTTP[ip] = true
		}
	}
	for _, name := range tcpNames {
		if ip, err := netip.ParseAddr(st.VIPs[name]); err == nil {
			vipTCP[ip] = name
		}
	}
	t.setAliases(nil, nil, vipTCP, vipHTTP)
	return errors.Join(errs...)
}

// setAliases replaces the resolved aliases (when resolvedTCP is not nil)
// or the virtual addresses (when vipTCP is not nil), and gives the relay
// both: a virtual address is its service's whatever a name resolves to.
func (t *TCP) setAliases(resolvedTCP map[netip.Addr]string, resolvedHTTP map[netip.Addr]bool, vipTCP map[netip.Addr]string, vipHTTP map[netip.Addr]bool) {
	t.aliasMu.Lock()
	defer t.aliasMu.Unlock()
	if resolvedTCP != nil {
		t.resolvedTCP, t.resolvedHTTP = resolvedTCP, resolvedHTTP
	}
	if vipTCP != nil {
		t.vipTCP, t.vipHTTP = vipTCP, vipHTTP
	}
	tcp, http := maps.Clone(t.resolvedTCP), maps.Clone(t.resolvedHTTP)
	if tcp == nil {
		tcp, http = map[netip.Addr]string{}, map[netip.Addr]bool{}
	}
	maps.Copy(tcp, t.vipTCP)
	maps.Copy(http, t.vipHTTP)
	t.out.SetAliases(tcp, http)
}
