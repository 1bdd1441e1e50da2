package relay

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/internal/conntrack"
	"github.com/wasmgate/wasmgate/mesh/policy"
	"github.com/wasmgate/wasmgate/proxy"
	"github.com/wasmgate/wasmgate/proxy/balancer"
	"github.com/wasmgate/wasmgate/proxy/metrics"
	"github.com/wasmgate/wasmgate/proxy/telemetry"
	"github.com/wasmgate/wasmgate/proxy/tlsconf"
)

// OutboundOptions configure an Outbound.
type OutboundOptions struct {
	// Mesh is the sidecar's workload identity, presented to peers.
	Mesh tlsconf.Mesh
	// Telemetry receives flow records; nil means none.
	Telemetry *telemetry.Pipeline
	// Metrics count the connections (SetMetrics); nil means not.
	Metrics *metrics.Metrics
	// ConnectTimeout bounds a dial with its handshake; zero means
	// DefaultConnectTimeout. IdleTimeout closes a connection silent both
	// ways; zero means DefaultIdleTimeout.
	ConnectTimeout, IdleTimeout time.Duration
	// Attempts is how many endpoints a connection tries before it is
	// refused; zero means 3 (the first and two retries, as the mesh's
	// HTTP clusters).
	Attempts int
	// Outside is what becomes of an intercepted connection outside the
	// mesh that does not speak HTTP; SetOutside changes it.
	Outside Outside
	// DetectTimeout is how long such a connection may stay silent
	// before it is taken for one whose server speaks first; zero means
	// DefaultDetectTimeout.
	DetectTimeout time.Duration
	// Logger may be nil.
	Logger *zap.Logger
}

// Endpoint is one peer sidecar of a TCP service: the inbound address it
// registered and the SPIFFE ID required of it.
type Endpoint struct {
	Address  string
	Weight   int
	Identity string
}

// Outbound carries the app's connections to TCP services: from a local
// port of its own per service (Listen), or handed over after an
// interception (Handle, Intercept). Create it with NewOutbound and give it
// the services' endpoints with Update. It is safe for concurrent use.
type Outbound struct {
	o   OutboundOptions
	log *zap.Logger
	cs  conntrack.Set
	tel atomic.Pointer[telemetry.Pipeline]
	met meter
	// filters are the network filters of the connections to services
	// (SetFilters).
	filters atomic.Pointer[Filters]

	mu        sync.Mutex
	listeners []net.Listener
	// services are by registry name, replaced whole on Update.
	services atomic.Pointer[map[string]*service]
	// byAddr finds a service by an endpoint's address, then by its IP
	// alone, for intercepted connections.
	byAddr atomic.Pointer[map[netip.AddrPort]string]
	byIP   atomic.Pointer[map[netip.Addr]string]
	// aliases are more IPs of TCP services (SetAliases); others are the
	// IPs of endpoints of the services the relay does not carry (HTTP),
	// which an alias never takes, and httpAliases more IPs of those.
	aliases     atomic.Pointer[map[netip.Addr]string]
	others      atomic.Pointer[map[netip.Addr]bool]
	httpAliases atomic.Pointer[map[netip.Addr]bool]

	// queue hands intercepted connections to the HTTP listener's
	// generations (Intercept); closed ends what waits on it.
	queue  chan net.Conn
	closed chan struct{}
	once   sync.Once
	// outside is an Outside; dials are the local addresses of the
	// passthrough's connections (netip.AddrPort).
	outside atomic.Int32
	dials   sync.Map
	// entries are the sidecar's service entries (SetEntries); nil: none.
	entries atomic.Pointer[[]policy.ServiceEntry]
}

// service is one TCP service's endpoints as of an Update, immutable.
type service struct {
	name  string
	hosts []*host
	bal   balancer.Balancer // nil without endpoints
	tls   *tls.Config
}

// host is an endpoint with the connections open to it, for the balancer.
type host struct {
	addr   string
	weight int
	active atomic.Int64
}

func (h *host) Weight() int           { return h.weight }
func (h *host) ActiveRequests() int64 { return h.active.Load() }
func (h *host) Key() string           { return h.addr }

var _ balancer.Host = (*host)(nil)

// pickOther asks the balancer for a host not in skip, trying a few times,
// then takes the first host not tried.
func pickOther(b balancer.Balancer, n int, skip []int) int {
	for range 4 {
		if i := b.Pick(0); i >= 0 && !slices.Contains(skip, i) {
			return i
		}
	}
	for i := range n {
		if !slices.Contains(skip, i) {
			return i
		}
	}
	return -1
}

// NewOutbound returns an Outbound without services.
func NewOutbound(o OutboundOptions) (*Outbound, error) {
	if o.Mesh == nil {
		return nil, errors.New("relay: an outbound needs Mesh")
	}
	if o.ConnectTimeout <= 0 {
		o.ConnectTimeout = DefaultConnectTimeout
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = DefaultIdleTimeout
	}
	if o.Attempts <= 0 {
		o.Attempts = 3
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if o.DetectTimeout <= 0 {
		o.DetectTimeout = DefaultDetectTimeout
	}
	out := &Outbound{o: o, log: o.Logger, queue: make(chan net.Conn), closed: make(chan struct{})}
	out.outside.Store(int32(o.Outside))
	out.tel.Store(o.Telemetry)
	out.met.m.Store(o.Metrics)
	empty := map[string]*service{}
	out.services.Store(&empty)
	return out, nil
}

// SetTelemetry replaces OutboundOptions.Telemetry, for connections from
// now on.
func (o *Outbound) SetTelemetry(p *telemetry.Pipeline) { o.tel.Store(p) }

// SetMetrics has connections from now on counted in m (listener
// mesh-tcp-outbound; cluster svc.SERVICE, passthrough or blackhole).
func (o *Outbound) SetMetrics(m *metrics.Metrics) { o.met.m.Store(m) }

// SetFilters has the connections to services from now on pass through
// f's network filters; nil, or no plugins, through none. Connections
// outside the mesh pass through none.
func (o *Outbound) SetFilters(f *Filters) { o.filters.Store(f) }

// Update replaces the endpoints of every TCP service, by registry name.
// Connections already relayed are left as they are. A service absent from
// eps has no endpoints: its connections are refused. others are the
// addresses of endpoints of services the relay does not carry (the HTTP
// ones): an intercepted connection to one of them is never taken for a
// TCP service by its IP alone.
func (o *Outbound) Update(eps map[string][]Endpoint, others []netip.Addr) error {
	svcs := make(map[string]*service, len(eps))
	byAddr := map[netip.AddrPort]string{}
	byIP := map[netip.Addr]string{}
	shared := map[netip.Addr]bool{}
	notOurs := map[netip.Addr]bool{}
	for _, a := range others {
		shared[a.Unmap()] = true
		notOurs[a.Unmap()] = true
	}
	for name, list := range eps {
		s := &service{name: name}
		var ids []string
		for _, e := range list {
			s.hosts = append(s.hosts, &host{addr: e.Address, weight: max(e.Weight, 1)})
			if e.Identity != "" && !slices.Contains(ids, e.Identity) {
				ids = append(ids, e.Identity)
			}
			if ap, err := netip.ParseAddrPort(e.Address); err == nil {
				byAddr[ap] = name
				ip := ap.Addr().Unmap()
				if o, ok := byIP[ip]; ok && o != name {
					shared[ip] = true
				}
				byIP[ip] = name
			}
		}
		if len(s.hosts) > 0 {
			hosts := make([]balancer.Host, len(s.hosts))
			for i, h := range s.hosts {
				hosts[i] = h
			}
			b, err := balancer.New(config.LBLeastRequest, hosts, balancer.Options{})
			if err != nil {
				return fmt.Errorf("relay: service %s: %w", name, err)
			}
			s.bal = b
		}
		slices.Sort(ids)
		conf, err := tlsconf.ClientConfig(&config.ClusterTLS{Mesh: true, ExpectedIdentities: ids, ALPN: []string{ALPN}},
			"", config.ProtocolHTTP1, tlsconf.WithMesh(o.o.Mesh))
		if err != nil {
			return fmt.Errorf("relay: service %s: %w", name, err)
		}
		s.tls = conf
		svcs[name] = s
	}
	for ip := range shared {
		delete(byIP, ip)
	}
	o.services.Store(&svcs)
	o.byAddr.Store(&byAddr)
	o.byIP.Store(&byIP)
	o.others.Store(&notOurs)
	return nil
}

// SetAliases gives the relay more addresses of the services the app
// calls, by IP: those their names resolve to where the app runs (a
// Kubernetes Service's cluster IP, which the app connects to and the
// interception reports as the original destination). An intercepted
// connection to an alias of a TCP service (tcp), on any port, is relayed
// to its service, unless an endpoint of a service answers for that
// address first, or the IP is an endpoint's of a service the relay does
// not carry. One to an alias of an HTTP service (http) goes to the HTTP
// listener at once, as one to an HTTP endpoint's IP does, unsniffed.
func (o *Outbound) SetAliases(tcp map[netip.Addr]string, http map[netip.Addr]bool) {
	own := make(map[netip.Addr]string, len(tcp))
	for ip, name := range tcp {
		own[ip.Unmap()] = name
	}
	o.aliases.Store(&own)
	hs := make(map[netip.Addr]bool, len(http))
	for ip := range http {
		hs[ip.Unmap()] = true
	}
	o.httpAliases.Store(&hs)
}

// isHTTP tells whether ip is known as an address of an HTTP service of
// the mesh: an endpoint's, or an alias.
func (o *Outbound) isHTTP(ip netip.Addr) bool {
	ip = ip.Unmap()
	if m := o.others.Load(); m != nil && (*m)[ip] {
		return true
	}
	m := o.httpAliases.Load()
	return m != nil && (*m)[ip]
}

// Lookup returns the TCP service an intercepted connection was going to,
// by its original destination: an endpoint's address, else an endpoint's
// IP address on any port (the app's own port on that host, which the
// peer's interception sends to its sidecar) unless another service has
// an endpoint at that IP too, else an alias (SetAliases).
func (o *Outbound) Lookup(dst netip.AddrPort) (string, bool) {
	if m := o.byAddr.Load(); m != nil {
		if name, ok := (*m)[dst]; ok {
			return name, true
		}
	}
	ip := dst.Addr().Unmap()
	if m := o.byIP.Load(); m != nil {
		if name, ok := (*m)[ip]; ok {
			return name, true
		}
	}
	if m := o.aliases.Load(); m != nil {
		if name, ok := (*m)[ip]; ok {
			if others := o.others.Load(); others == nil || !(*others)[ip] {
				return name, true
			}
		}
	}
	return "", false
}

// Listen relays every connection accepted at addr to the service name
// (explicit mode: the app connects to its local port for the service).
// The listener lives until Close.
func (o *Outbound) Listen(name, addr string) (net.Addr, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("relay: the local port of %s: %w", name, err)
	}
	o.mu.Lock()
	o.listeners = append(o.listeners, ln)
	o.mu.Unlock()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				time.Sleep(5 * time.Millisecond)
				continue
			}
			o.Handle(c, name)
		}
	}()
	return ln.Addr(), nil
}

// Handle relays c, a connection of the app, to the service name, on a
// goroutine of its own; it closes c when done.
func (o *Outbound) Handle(c net.Conn, name string) {
	if !o.cs.Add(c) {
		return
	}
	go func() {
		defer o.cs.Done(c)
		o.relay(c, name)
	}()
}

// Close stops the local listeners and ends every relayed connection, and
// those intercepted that no generation of the HTTP listener took.
func (o *Outbound) Close() {
	o.once.Do(func() { close(o.closed) })
	o.mu.Lock()
	for _, ln := range o.listeners {
		_ = ln.Close()
	}
	o.listeners = nil
	o.mu.Unlock()
	o.cs.CloseAll()
	o.cs.Wait()
}

func (o *Outbound) relay(down net.Conn, name string) {
	f := flow{listener: "outbound", start: time.Now(), source: addrString(down.RemoteAddr()), destination: name, sourceID: o.identity()}
	defer func() { f.emit(o.tel.Load()) }()
	cluster := "svc." + name
	st := o.met.stats(listenerOutbound, cluster)
	defer st.open()()
	s := (*o.services.Load())[name]
	if s == nil || s.bal == nil {
		o.log.Warn("no endpoint of the service", zap.String("service", name))
		f.reason = reasonUpstream
		_ = down.Close()
		return
	}
	var up *tls.Conn
	var h *host
	defer func() {
		if up != nil {
			h.active.Add(-1)
			o.cs.Done(up)
		}
	}()
	// connect reaches an endpoint of the service.
	connect := func(ctx context.Context) error {
		c, ch, err := o.dial(ctx, s, st)
		if err != nil {
			o.log.Warn("no endpoint of the service could be reached", zap.String("service", name), zap.Error(err))
			return err
		}
		if !o.cs.Add(c) {
			ch.active.Add(-1)
			return net.ErrClosed
		}
		up, h = c, ch
		cs := c.ConnectionState()
		f.destination = h.addr
		f.destID = tlsconf.PeerSPIFFEID(&cs)
		f.tlsVersion, f.cipher = tls.VersionName(cs.Version), tls.CipherSuiteName(cs.CipherSuite)
		return nil
	}
	if fl := o.filters.Load(); fl.on() {
		f.n, f.reason = fl.serve(down, proxy.OpaqueOptions{Listener: listenerOutbound, Cluster: cluster, Idle: o.o.IdleTimeout,
			Dial: func(ctx context.Context) (net.Conn, string, error) {
				if err := connect(ctx); err != nil {
					return nil, "", err
				}
				return up, h.addr, nil
			}}, st)
		return
	}
	if err := connect(context.Background()); err != nil {
		f.reason = reasonUpstream
		_ = down.Close()
		return
	}
	f.n = st.counts()
	f.reason = pipe(down, up, f.n, o.o.IdleTimeout)
}

// dial reaches an endpoint of s over mutual TLS, trying others when one
// cannot be reached or is not who it should be. The host's count of open
// connections is raised; the caller lowers it.
func (o *Outbound) dial(ctx context.Context, s *service, st tcpStats) (*tls.Conn, *host, error) {
	var tried []int
	var errs []error
	for range min(o.o.Attempts, len(s.hosts)) {
		i := pickOther(s.bal, len(s.hosts), tried)
		if i < 0 {
			break
		}
		tried = append(tried, i)
		h := s.hosts[i]
		h.active.Add(1)
		c, err := o.dialOne(ctx, s, h.addr)
		if err == nil {
			return c, h, nil
		}
		h.active.Add(-1)
		st.connectFailed()
		errs = append(errs, fmt.Errorf("%s: %w", h.addr, err))
	}
	return nil, nil, errors.Join(errs...)
}

func (o *Outbound) dialOne(ctx context.Context, s *service, addr string) (*tls.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, o.o.ConnectTimeout)
	defer cancel()
	raw, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	conf := s.tls.Clone()
	if host, _, err := net.SplitHostPort(addr); err == nil {
		conf.ServerName = host
	}
	tc := tls.Client(raw, conf)
	if err := tc.HandshakeContext(ctx); err != nil {
		_ = raw.Close()
		return nil, err
	}
	if tc.ConnectionState().NegotiatedProtocol != ALPN {
		_ = tc.Close()
		return nil, errors.New("the peer does not relay opaque TCP (no ALPN " + ALPN + ")")
	}
	return tc, nil
}
