// Package sidecar runs wasmgate beside one service of the mesh. It turns
// the sidecar's settings and what discovery tells it (the endpoints of the
// services it calls, the policies of its own service) into a plain
// config.Config and hands it to the proxy, one way, debounced: the proxy
// never learns where the configuration came from.
//
// What it builds (Build):
//
//	peer sidecar --mTLS--> inbound listener (Settings.Inbound, `tls: {mesh: true}`)
//	                         -> mesh_policy filter (the service's policy.Guard)
//	                         -> app on 127.0.0.1:AppPort
//	app --plain--> outbound listener (Settings.Outbound, 127.0.0.1:15001)
//	                 -> virtual host by Host: orders, orders.ns, orders.ns.svc
//	                 -> cluster of the peers' inbound addresses, HTTP/2 over
//	                    mTLS verifying their SPIFFE IDs, with retries,
//	                    outlier detection and circuit breakers
//	                 -> anything else: 502 (registry_only) or passed on (allow_any);
//	                    intercepted bytes that are not HTTP: closed or relayed
//	                    to their original destination (package relay)
//
// The outbound policy is the service's outbound traffic policy from the
// control plane (its own, its namespace's or the mesh's), else
// Settings.OutboundPolicy.
//
// The inbound listener is strict (a mesh client certificate required) or
// permissive (plain text accepted beside it): the service's
// peer_authentication from the control plane decides, else
// Settings.InboundMode.
//
// Opaque TCP (an app of protocol tcp, Settings.TCPCalls, and intercepted
// connections bound for a TCP service) is carried by TCP, a relay beside
// the proxy (package relay), which receives the TCP services' endpoints
// from the same updates.
//
// Policies go straight into the Guard, which the filter reads on every
// request, so a policy change never rebuilds a listener.
package sidecar

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/http/httputil"
	"reflect"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/controlplane/discovery"
	"github.com/wasmgate/wasmgate/controlplane/registry"
	"github.com/wasmgate/wasmgate/mesh/policy"
	"github.com/wasmgate/wasmgate/proxy/tlsconf"
)

// Applier makes a configuration live; proxy.Server implements it.
type Applier interface {
	Apply(ctx context.Context, cfg *config.Config, version string) error
}

// Source is a stream of discovery updates: a discovery.Watch in the
// control plane's process, a discovery.Stream in another.
type Source interface {
	Next(ctx context.Context) (discovery.Update, error)
}

// Options configure a Sidecar.
type Options struct {
	// Settings must be normalised and valid. Announce is the
	// registration's, not the sidecar's: an inbound of port 0, announced
	// once bound (StartLocal), passes as its own announce.
	Settings Settings
	// TrustDomain is the mesh's, for the identities expected of peers.
	TrustDomain string
	// Proxy receives every configuration.
	Proxy Applier
	// Guard is the service's policy; the proxy's mesh_policy filter must
	// read the same one.
	Guard *policy.Guard
	// Source tells the sidecar what changed.
	Source Source
	// TCP relays the app's opaque TCP (Settings.TCPCalls and an app of
	// protocol tcp); it receives the endpoints of the TCP services. nil
	// when the sidecar carries HTTP only.
	TCP *TCP
	// Base holds the proxy-local settings copied into every
	// configuration (admin, access log, node, drain, telemetry); nil
	// means none.
	Base *config.Config
	// Identity is the sidecar's workload identity: its certificate is the
	// client's in TLS a service entry originates in mode workload. nil:
	// such calls fail.
	Identity tlsconf.Mesh
	// Debounce gathers a burst of updates into one configuration; zero
	// means 20 ms.
	Debounce time.Duration
	// Logger may be nil.
	Logger *zap.Logger
}

// Sidecar follows discovery and keeps the proxy's configuration and the
// service's Guard up to date. Create it with New and run it with Run.
type Sidecar struct {
	o     Options
	log   *zap.Logger
	ready chan struct{}

	mu             sync.Mutex
	base           *config.Config // Options.Base, then Rebase's
	rebases        chan rebase
	state          State
	outboundSource string // the outbound traffic policy in force, or ""
	changed        chan struct{}

	// outbound is the outbound policy in force: the service's
	// outbound traffic policy from the control plane, else
	// Settings.OutboundPolicy.
	outbound atomic.Pointer[string]
	// entries are the service entries of the last configuration built,
	// for the forwarder.
	entries atomic.Pointer[[]policy.ServiceEntry]
	// passthrough is the forwarder of allow_any's HTTP calls, started
	// the first time allow_any is in force.
	passMu      sync.Mutex
	passthrough *http.Server
	passAddr    string
	// dns answers the app's lookups (Settings.DNS); nil without.
	dns     *DNS
	version int
	last    *config.Config
	// watch names the discovery stream the sidecar follows (from its
	// first update), policyRev the policies' revision it holds, and
	// reported what it last told the control plane of its configuration
	// (report).
	watch     string
	policyRev int64
	reported  struct {
		watch string
		r     discovery.Report
	}
}

// New returns a sidecar.
func New(o Options) (*Sidecar, error) {
	if o.Proxy == nil || o.Guard == nil || o.Source == nil {
		return nil, errors.New("sidecar: Proxy, Guard and Source are required")
	}
	if err := o.Settings.validate(true); err != nil {
		return nil, err
	}
	if o.Debounce <= 0 {
		o.Debounce = 20 * time.Millisecond
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	s := &Sidecar{o: o, log: o.Logger, ready: make(chan struct{}), changed: make(chan struct{}, 1), base: o.Base, rebases: make(chan rebase),
		state: State{Endpoints: map[string][]registry.Endpoint{}, Routes: map[string][]policy.ServiceRoute{}, VIPs: map[string]string{}}}
	mode := o.Settings.OutboundPolicy
	s.outbound.Store(&mode)
	if mode == AllowAny {
		if _, err := s.forwarder(); err != nil {
			return nil, err
		}
	}
	if o.Settings.DNS != "" {
		d, err := NewDNS(o.Settings.DNS, nil, o.Logger.Named("dns"))
		if err != nil {
			return nil, err
		}
		s.dns = d
	}
	return s, nil
}

// DNSAddr is the address the sidecar answers DNS at, "" without.
func (s *Sidecar) DNSAddr() string {
	if s.dns == nil {
		return ""
	}
	return s.dns.Addr()
}

// forwarder returns the address of the local forwarder that carries
// allow_any's HTTP calls to destinations outside the mesh, starting it
// on first use. It serves only while allow_any is in force: the app
// could reach it directly, so under registry_only it answers 502.
func (s *Sidecar) forwarder() (string, error) {
	s.passMu.Lock()
	defer s.passMu.Unlock()
	if s.passthrough != nil {
		return s.passAddr, nil
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("sidecar: the allow_any forwarder: %w", err)
	}
	proxy := &httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) {
		r.Out.URL.Scheme, r.Out.URL.Host = "http", r.In.Host
		r.Out.Host = r.In.Host
		if target, o, ok := s.originates(r.In.Host); ok {
			// The call leaves over TLS; its Host loses the plain port.
			r.Out.URL.Scheme, r.Out.URL.Host = "https", target
			r.Out.Host, _, _ = net.SplitHostPort(target)
			r.Out = r.Out.WithContext(context.WithValue(r.Out.Context(), originationKey{}, *o))
		}
	}, Transport: &originator{plain: http.DefaultTransport, identity: s.o.Identity, byWay: map[policy.TLSOrigination]*http.Transport{}},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			// The sidecar's log, not the process's standard one: a call
			// outside the mesh that fails is the operator's to see.
			s.log.Warn("a call outside the mesh failed", zap.String("host", r.Host), zap.Error(err))
			http.Error(w, "the destination outside the mesh could not be reached", http.StatusBadGateway)
		}}
	s.passAddr = ln.Addr().String()
	s.passthrough = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if *s.outbound.Load() != AllowAny && !s.entryAdmits(r.Host) {
			http.Error(w, "destination is not a service of the mesh (outbound_policy: registry_only)", http.StatusBadGateway)
			return
		}
		proxy.ServeHTTP(w, r)
	}), ReadHeaderTimeout: 10 * time.Second}
	go s.passthrough.Serve(ln) //nolint:errcheck // ends with Close
	return s.passAddr, nil
}

// reporter is a discovery source that takes reports of what became of
// its updates (discovery.Stream, over the control plane's API).
type reporter interface {
	Report(ctx context.Context, watch string, r discovery.Report) error
}

// report tells the control plane what became of the updates of the
// stream the sidecar follows (ctl mesh status shows it), unless it was
// told that already, in the background: a control plane out of reach
// delays nothing.
func (s *Sidecar) report(r discovery.Report) {
	rp, ok := s.o.Source.(reporter)
	if !ok {
		return
	}
	s.mu.Lock()
	watch := s.watch
	if watch == "" || s.reported.watch == watch && s.reported.r == r {
		s.mu.Unlock()
		return
	}
	s.reported.watch, s.reported.r = watch, r
	s.mu.Unlock()
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := rp.Report(ctx, watch, r); err != nil {
			s.log.Debug("reporting the configuration to the control plane", zap.Error(err))
		}
	}()
}

// entryAdmits reports whether a service entry of the sidecar's service
// lets a call to hostport (a Host header) out.
func (s *Sidecar) entryAdmits(hostport string) bool {
	entries := s.entries.Load()
	if entries == nil {
		return false
	}
	host, port := splitHost(hostport)
	return policy.AnyAdmits(*entries, host, port)
}

// originates returns where a plain HTTP call to hostport (a Host header)
// leaves over TLS, and how, when a service entry says so.
func (s *Sidecar) originates(hostport string) (target string, o *policy.TLSOrigination, ok bool) {
	entries := s.entries.Load()
	if entries == nil {
		return "", nil, false
	}
	host, port := splitHost(hostport)
	for i := range *entries {
		if target, o, ok := (*entries)[i].Originates(host, port); ok {
			return target, o, true
		}
	}
	return "", nil, false
}

// splitHost splits a Host header; a Host without a port is port 80's.
func splitHost(hostport string) (string, int) {
	if h, p, err := net.SplitHostPort(hostport); err == nil {
		port, _ := strconv.Atoi(p)
		return h, port
	}
	return hostport, 80
}

// originationKey carries, in a forwarded call's context, how the service
// entry that originates TLS for it does so.
type originationKey struct{}

// originator carries the forwarder's calls: plain ones as they are, those
// a service entry originates TLS for as the entry says: its roots (""
// for the system's) and its client certificate. One transport per way,
// kept while the sidecar runs.
type originator struct {
	plain    http.RoundTripper
	identity tlsconf.Mesh // the client certificate of mode workload
	mu       sync.Mutex
	byWay    map[policy.TLSOrigination]*http.Transport
}

func (o *originator) RoundTrip(r *http.Request) (*http.Response, error) {
	way, ok := r.Context().Value(originationKey{}).(policy.TLSOrigination)
	if !ok {
		return o.plain.RoundTrip(r)
	}
	// The ports are the call's, not the transport's.
	way.Port, way.TargetPort = 0, 0
	o.mu.Lock()
	t := o.byWay[way]
	if t == nil {
		t = http.DefaultTransport.(*http.Transport).Clone()
		t.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
		if way.CACertificates != "" {
			t.TLSClientConfig.RootCAs = x509.NewCertPool()
			t.TLSClientConfig.RootCAs.AppendCertsFromPEM([]byte(way.CACertificates))
		}
		switch way.Mode {
		case policy.OriginateMutual:
			certFile, keyFile := way.CertificateFile, way.PrivateKeyFile
			t.TLSClientConfig.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
				// Read at each handshake: the files are renewed in place.
				c, err := tls.LoadX509KeyPair(certFile, keyFile)
				if err != nil {
					return nil, fmt.Errorf("the client certificate of TLS origination: %w", err)
				}
				return &c, nil
			}
		case policy.OriginateWorkload:
			id := o.identity
			t.TLSClientConfig.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
				if id == nil {
					return nil, errors.New("the sidecar has no workload certificate to originate TLS with")
				}
				return id.Certificate()
			}
		}
		o.byWay[way] = t
	}
	o.mu.Unlock()
	return t.RoundTrip(r)
}

// Rebase replaces Options.Base (the proxy's local configuration read
// again: its telemetry and plugins) and applies a configuration with it
// at once. When the proxy refuses that configuration (a plugin whose
// module does not load), the previous base and configuration stay and
// the error is returned. Run must be running.
func (s *Sidecar) Rebase(ctx context.Context, b *config.Config) error {
	req := rebase{base: b, done: make(chan error, 1)}
	select {
	case s.rebases <- req:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-req.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

type rebase struct {
	base *config.Config
	done chan error
}

// WithBase copies into cfg, a configuration Build made, the proxy-local
// settings of base (admin, access log, node, drain, telemetry, and the
// plugins the sidecar's filters name); a nil base copies nothing.
func WithBase(cfg, base *config.Config) {
	if base == nil {
		return
	}
	cfg.Admin, cfg.AccessLog, cfg.Node, cfg.DrainTimeout, cfg.ShutdownDelay = base.Admin, base.AccessLog, base.Node, base.DrainTimeout, base.ShutdownDelay
	cfg.Telemetry = base.Telemetry
	// The sidecar's own plugins, then the control plane's (Build's).
	cfg.Plugins = append(slices.Clone(base.Plugins), cfg.Plugins...)
}

// nameTracing names the spans of cfg, a sidecar's configuration, after
// its service (service.name, service.namespace), so that a trace shows
// which service each hop is, unless its telemetry names them itself.
func nameTracing(cfg *config.Config, s *Settings) {
	if cfg.Telemetry == nil || cfg.Telemetry.Tracing == nil || cfg.Telemetry.Tracing.ServiceName != "" {
		return
	}
	tr := *cfg.Telemetry.Tracing
	tr.ServiceName, tr.ServiceNamespace = s.Service, s.Namespace
	t := *cfg.Telemetry
	t.Tracing = &tr
	cfg.Telemetry = &t
}

// Ready is closed once the first configuration, made after the first
// update from discovery (so that the service's policies are in force
// before its inbound listener opens), is live.
func (s *Sidecar) Ready() <-chan struct{} { return s.ready }

// Endpoint is what the sidecar registers: its inbound address under its
// service's registry name, and for an app of protocol tcp that it serves
// opaque TCP, so that callers following every service relay to it.
func (s *Settings) Endpoint() registry.Endpoint {
	ep := registry.Endpoint{Cluster: s.Name(), ID: EndpointID(s), Address: s.Announce, Version: s.Version}
	if s.Protocol == ProtocolTCP {
		ep.Protocol = registry.ProtocolTCP
	}
	return ep
}

// Run follows the source until ctx ends. An update's policies are loaded
// into the Guard at once; its endpoints make a new configuration, applied
// after the debounce. A configuration the proxy rejects is logged and the
// previous one keeps serving. Run returns ctx's error, or the source's
// when it refuses the sidecar (discovery.RefusedError), once it no longer
// uses the source.
func (s *Sidecar) Run(ctx context.Context) error {
	if s.dns != nil {
		defer s.dns.Close()
	}
	defer func() {
		s.passMu.Lock()
		defer s.passMu.Unlock()
		if s.passthrough != nil {
			s.passthrough.Close()
		}
	}()
	errc := make(chan error, 1)
	followed := make(chan struct{})
	go func() {
		defer close(followed)
		errc <- s.follow(ctx)
	}()
	// The source is the caller's again once Run returns.
	defer func() { <-followed }()
	// A configuration the proxy refused (a module the control plane did
	// not serve, say) is tried again after a backoff, up to retryMax,
	// even when nothing else changes.
	var retry <-chan time.Time
	backoff := time.Duration(0)
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-errc:
			return err
		case <-retry:
			retry = nil
			if s.apply(ctx) != nil {
				backoff = min(2*backoff, retryMax)
				retry = time.After(backoff)
			} else {
				backoff = 0
			}
			continue
		case req := <-s.rebases:
			s.mu.Lock()
			old := s.base
			s.base = req.base
			s.mu.Unlock()
			err := s.apply(ctx)
			if err != nil {
				s.mu.Lock()
				s.base = old
				s.mu.Unlock()
			}
			req.done <- err
			continue
		case <-s.changed:
		}
		timer := time.NewTimer(s.o.Debounce)
		select {
		case <-ctx.Done():
			timer.Stop()
			return ctx.Err()
		case <-timer.C:
		}
		// Logged; the previous configuration keeps serving.
		if s.apply(ctx) != nil {
			if backoff == 0 {
				backoff = retryMin
			}
			if retry == nil {
				retry = time.After(backoff)
			}
		} else {
			retry, backoff = nil, 0
		}
	}
}

// The backoff of a configuration the proxy refused.
const (
	retryMin = time.Second
	retryMax = 30 * time.Second
)

func (s *Sidecar) follow(ctx context.Context) error {
	for {
		u, err := s.o.Source.Next(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			var refused *discovery.RefusedError
			if errors.As(err, &refused) {
				return fmt.Errorf("sidecar: discovery refused %s: %w", s.o.Settings.Name(), err)
			}
			s.log.Warn("discovery update", zap.Error(err))
			continue
		}
		s.mu.Lock()
		if u.Watch != "" {
			s.watch = u.Watch
		}
		if p := u.Policies; p != nil {
			s.policyRev = p.Revision
			err := s.o.Guard.Load(p.Revision, p.Authorization, p.Peer)
			if err == nil {
				err = s.o.Guard.LoadRequestAuthentications(p.RequestAuthn)
			}
			if err == nil {
				err = s.o.Guard.LoadRateLimits(p.RateLimits)
			}
			if err != nil {
				s.log.Error("mesh policies rejected; the previous ones stay in force", zap.Error(err))
			} else {
				s.log.Info("mesh policies loaded", zap.Int64("revision", p.Revision),
					zap.Int("authorization", len(p.Authorization)), zap.Int("peer_authentication", len(p.Peer)), zap.Int("request_authentication", len(p.RequestAuthn)), zap.Int("rate_limit", len(p.RateLimits)),
					zap.Int("outbound_traffic", len(p.Outbound)), zap.Int("wasm_plugins", len(p.Wasm)))
			}
			st := &s.o.Settings
			r, _ := policy.OutboundFor(p.Outbound, st.Namespace, st.Service)
			s.state.OutboundPolicy, s.outboundSource = string(r.Mode), r.Source
			s.state.Wasm = policy.WasmFor(p.Wasm, st.Namespace, st.Service)
			s.state.Entries = policy.EntriesFor(p.Entries, st.Namespace, st.Service)
		}
		for _, e := range u.Endpoints {
			if len(e.Items) == 0 && len(e.Routes) == 0 && e.VIP == "" {
				// Gone, or not there yet: with calls: ["*"], not a name
				// the app can call.
				delete(s.state.Endpoints, e.Service)
				delete(s.state.VIPs, e.Service)
				delete(s.state.Routes, e.Service)
				continue
			}
			s.state.Endpoints[e.Service] = e.Items
			s.state.VIPs[e.Service] = e.VIP
			s.state.Routes[e.Service] = e.Routes
		}
		s.mu.Unlock()
		select {
		case s.changed <- struct{}{}:
		default:
		}
	}
}

// apply builds the configuration of the current state and applies it
// unless it is the one live.
func (s *Sidecar) apply(ctx context.Context) error {
	s.mu.Lock()
	st := State{Endpoints: maps.Clone(s.state.Endpoints), Routes: maps.Clone(s.state.Routes),
		OutboundPolicy: s.state.OutboundPolicy, Wasm: s.state.Wasm, Entries: s.state.Entries, VIPs: maps.Clone(s.state.VIPs)}
	source, base := s.outboundSource, s.base
	rep := discovery.Report{PolicyRevision: s.policyRev}
	s.mu.Unlock()
	rep.Version = fmt.Sprintf("mesh-%d", s.version)
	defer func() { s.report(rep) }()
	mode := st.OutboundPolicy
	if mode == "" {
		mode = s.o.Settings.OutboundPolicy
	}
	if prev := s.outbound.Swap(&mode); *prev != mode {
		s.log.Info("outbound policy changed", zap.String("outbound_policy", mode), zap.String("from", *prev),
			zap.String("outbound_traffic_policy", source))
	}
	passAddr := ""
	s.entries.Store(&st.Entries)
	if s.dns != nil {
		s.dns.Set(&s.o.Settings, st)
	}
	if mode == AllowAny || len(st.Entries) > 0 {
		var err error
		if passAddr, err = s.forwarder(); err != nil {
			s.log.Error("HTTP calls outside the mesh (allow_any, service entries) are refused", zap.Error(err))
		}
	}
	// Port-level modes name the app's port, as Istio's do.
	if r := s.o.Guard.Mode(s.o.Settings.AppPort); r.Source != "" {
		st.InboundMode = r.Mode
	}
	if s.o.TCP != nil {
		s.o.TCP.out.SetOutside(outside(mode))
		s.o.TCP.out.SetEntries(st.Entries)
		if err := s.o.TCP.update(&s.o.Settings, st, s.o.TrustDomain); err != nil {
			s.log.Error("TCP services' endpoints rejected; the previous ones stay in force", zap.Error(err))
		}
	}
	cfg := Build(&s.o.Settings, st, s.o.TrustDomain, passAddr)
	WithBase(cfg, base)
	nameTracing(cfg, &s.o.Settings)
	cfg.Normalize()
	if s.last != nil && reflect.DeepEqual(cfg, s.last) {
		return nil
	}
	if err := cfg.Validate(); err != nil {
		s.log.Error("sidecar configuration invalid; the previous one keeps serving", zap.Error(err))
		rep.Error = "invalid: " + err.Error()
		return err
	}
	s.version++
	version := fmt.Sprintf("mesh-%d", s.version)
	if err := s.o.Proxy.Apply(ctx, cfg, version); err != nil {
		s.log.Error("sidecar configuration rejected; the previous one keeps serving", zap.String("version", version), zap.Error(err))
		rep.Error = "rejected: " + err.Error()
		return err
	}
	rep.Version = version
	s.last = cfg
	if s.o.TCP != nil {
		s.o.TCP.setFilters(NetworkFilters(&s.o.Settings, st))
	}
	n := 0
	for _, eps := range st.Endpoints {
		n += len(eps)
	}
	s.log.Info("sidecar configuration applied", zap.String("version", version), zap.Int("services", len(st.Endpoints)), zap.Int("endpoints", n))
	select {
	case <-s.ready:
	default:
		close(s.ready)
	}
	return nil
}
