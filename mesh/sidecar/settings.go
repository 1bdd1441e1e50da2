package sidecar

import (
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/controlplane/discovery"
	"github.com/wasmgate/wasmgate/controlplane/registry"
	"github.com/wasmgate/wasmgate/mesh/policy"
)

// Defaults of Settings.
const (
	DefaultOutbound  = "127.0.0.1:15001"
	DefaultInbound   = "0.0.0.0:15006"
	DefaultNamespace = "default"
	// DefaultConcurrency is one thread, as Linkerd's proxies run by
	// default: a sidecar's load is its app's, and a second thread made
	// the pair of sidecars cost more CPU per request, not less.
	DefaultConcurrency = 1
)

// The application protocols of Settings.Protocol.
const (
	ProtocolHTTP  = "http"
	ProtocolHTTP2 = "http2"
	ProtocolGRPC  = "grpc"
	ProtocolTCP   = "tcp"
)

// The protocols of Settings.HopProtocol: how requests cross between
// sidecars.
const (
	// HopHTTP2 carries every request in HTTP/2, whatever the app speaks:
	// one multiplexed connection per peer endpoint.
	HopHTTP2 = "http2"
	// HopDownstream carries each request in the protocol the app sent it
	// in (HTTP/1.1 as HTTP/1.1, HTTP/2 and gRPC as HTTP/2), as Istio
	// does by default: cheaper per request, more connections.
	HopDownstream = "downstream"
)

// The outbound policies of Settings.OutboundPolicy: the modes of the
// control plane's outbound traffic policies, which win over it.
const (
	// RegistryOnly refuses a call outside the mesh: 502 for HTTP, a
	// closed connection otherwise, as Istio's REGISTRY_ONLY does.
	RegistryOnly = string(policy.RegistryOnly)
	// AllowAny passes a call outside the mesh on, in plain text.
	AllowAny = string(policy.AllowAny)
)

// Settings are a sidecar's own: which service it stands beside and where
// it listens. They are the `sidecar:` section of a configuration file and
// the flags of `wasmgate run --sidecar`. Call Normalize, then Validate.
type Settings struct {
	// Service, Namespace and ServiceAccount name the service; its SPIFFE
	// ID is spiffe://<trust domain>/ns/<Namespace>/sa/<ServiceAccount>.
	// Namespace defaults to "default" and ServiceAccount to Service.
	Service        string `yaml:"service" json:"service"`
	Namespace      string `yaml:"namespace,omitempty" json:"namespace,omitempty"`
	ServiceAccount string `yaml:"service_account,omitempty" json:"service_account,omitempty"`
	// AppPort is the app's port on 127.0.0.1; Protocol what it speaks:
	// http (the default), http2, grpc or tcp.
	AppPort  int    `yaml:"app_port" json:"app_port"`
	Protocol string `yaml:"protocol,omitempty" json:"protocol,omitempty"`
	// Version labels the app's release ("v2") in the registry, as
	// Istio's version label: service routes split the calls to the
	// service between versions. Empty means none.
	Version string `yaml:"version,omitempty" json:"version,omitempty"`
	// Inbound is where peers reach the service (DefaultInbound), with
	// InboundMode strict (the default: mutual TLS with a mesh certificate
	// only) or permissive (plain text accepted too, for a migration). A
	// peer_authentication of the control plane that covers the service
	// overrides InboundMode.
	Inbound     string      `yaml:"inbound,omitempty" json:"inbound,omitempty"`
	InboundMode policy.Mode `yaml:"inbound_mode,omitempty" json:"inbound_mode,omitempty"`
	// Announce is the address registered for peers to dial; empty means
	// Inbound, which must then not be a wildcard.
	Announce string `yaml:"announce,omitempty" json:"announce,omitempty"`
	// Outbound is where the app sends its calls to other services
	// (DefaultOutbound), by name in the Host header.
	Outbound string `yaml:"outbound,omitempty" json:"outbound,omitempty"`
	// OutboundPolicy is registry_only (the default) or allow_any.
	OutboundPolicy string `yaml:"outbound_policy,omitempty" json:"outbound_policy,omitempty"`
	// HopProtocol is how the app's calls cross to the peers' sidecars:
	// http2 (the default) or downstream.
	HopProtocol string `yaml:"hop_protocol,omitempty" json:"hop_protocol,omitempty"`
	// Concurrency is how many threads may run the sidecar's Go code at
	// once (GOMAXPROCS) when it runs as a process of its own; 0 means
	// DefaultConcurrency. It bounds the sidecar's CPU beside its app, and
	// each thread more costs wake-ups per request (measured in
	// RATIONALE.md).
	Concurrency int `yaml:"concurrency,omitempty" json:"concurrency,omitempty"`
	// ProtocolDetectionTimeout is how long an intercepted connection
	// bound outside the mesh may stay silent before it is taken for a
	// protocol whose server speaks first; zero means 100 ms (Istio's
	// protocolDetectionTimeout).
	ProtocolDetectionTimeout config.Duration `yaml:"protocol_detection_timeout,omitempty" json:"protocol_detection_timeout,omitempty"`
	// DNS, when set, is the address ("127.0.0.1:15053") where the sidecar
	// answers DNS: the names of the services the app calls with their
	// virtual addresses, other names from the host's resolvers. `sidecar
	// iptables --dns-port` sends the app's DNS there.
	DNS string `yaml:"dns,omitempty" json:"dns,omitempty"`
	// Calls are the services the app calls: "orders" (in Namespace),
	// "orders.shop" or "orders.shop.svc"; or "*", alone, for every
	// service of the mesh, as it comes and goes (CallsAll).
	Calls []string `yaml:"calls,omitempty" json:"calls,omitempty"`
	// TCPCalls are the services of protocol tcp the app calls: opaque
	// bytes, relayed over mutual TLS, with no Host to route by.
	TCPCalls []TCPCall `yaml:"tcp_calls,omitempty" json:"tcp_calls,omitempty"`
	// InboundFilters are Wasm plugins, by name, that every request from
	// a peer passes through once the mesh policy admitted it, in order;
	// OutboundFilters those every call of the app passes through, to a
	// service of the mesh or outside it. The plugins are the proxy's
	// (Options.Base, --local-config's plugins:).
	InboundFilters  []string `yaml:"inbound_filters,omitempty" json:"inbound_filters,omitempty"`
	OutboundFilters []string `yaml:"outbound_filters,omitempty" json:"outbound_filters,omitempty"`
	// InboundNetworkFilters are Wasm plugins, by name, that run as
	// network filters (proxy_on_new_connection, proxy_on_downstream_data,
	// ...) on every connection from a peer to an app of protocol tcp
	// once the mesh policy admitted it, in order;
	// OutboundNetworkFilters on every connection of the app to a TCP
	// service of the mesh.
	InboundNetworkFilters  []string `yaml:"inbound_network_filters,omitempty" json:"inbound_network_filters,omitempty"`
	OutboundNetworkFilters []string `yaml:"outbound_network_filters,omitempty" json:"outbound_network_filters,omitempty"`
	// HealthCheck, when set, probes the app: its address is registered
	// only while the app is healthy. Without it, it is registered once the
	// sidecar serves, for as long as the sidecar runs.
	HealthCheck *HealthCheck `yaml:"health_check,omitempty" json:"health_check,omitempty"`
}

// TCPCall is a service of protocol tcp that the app calls.
type TCPCall struct {
	// Service names it as Calls do.
	Service string `yaml:"service" json:"service"`
	// Listen is the local address the app connects to for it (explicit
	// mode: "127.0.0.1:15432"). Empty means the app reaches it by the
	// service's address only, through the interception of its outbound
	// connections (transparent mode).
	Listen string `yaml:"listen,omitempty" json:"listen,omitempty"`
}

// ParseTCPCalls reads the flag form of TCPCalls: "db=127.0.0.1:15432"
// (or "db=15432", on 127.0.0.1) for explicit mode, "db" for transparent
// mode only.
func ParseTCPCalls(list []string) ([]TCPCall, error) {
	var out []TCPCall
	for _, v := range list {
		name, listen, _ := strings.Cut(strings.TrimSpace(v), "=")
		if _, err := strconv.Atoi(listen); err == nil {
			listen = "127.0.0.1:" + listen
		}
		if name == "" {
			return nil, fmt.Errorf("%q: want SERVICE, SERVICE=PORT or SERVICE=HOST:PORT", v)
		}
		out = append(out, TCPCall{Service: name, Listen: listen})
	}
	return out, nil
}

// Threads is the GOMAXPROCS of a sidecar running as a process of its own:
// Concurrency, or DefaultConcurrency when that is 0.
func (s *Settings) Threads() int {
	if s.Concurrency > 0 {
		return s.Concurrency
	}
	return DefaultConcurrency
}

// Normalize fills in the defaults, in place.
func (s *Settings) Normalize() {
	if s.Namespace == "" {
		s.Namespace = DefaultNamespace
	}
	if s.ServiceAccount == "" {
		s.ServiceAccount = s.Service
	}
	if s.Protocol == "" {
		s.Protocol = ProtocolHTTP
	}
	if s.Inbound == "" {
		s.Inbound = DefaultInbound
	}
	s.InboundMode = policy.Mode(strings.ToLower(string(s.InboundMode)))
	if s.InboundMode == "" {
		s.InboundMode = policy.Strict
	}
	if s.Outbound == "" {
		s.Outbound = DefaultOutbound
	}
	if s.OutboundPolicy == "" {
		s.OutboundPolicy = RegistryOnly
	}
	if s.HopProtocol == "" {
		s.HopProtocol = HopHTTP2
	}
	if s.Announce == "" {
		s.Announce = s.Inbound
	}
	if s.HealthCheck != nil {
		s.HealthCheck.normalize()
	}
}

// Validate checks normalised settings; every error names its field under
// "sidecar.".
func (s *Settings) Validate() error { return s.validate(false) }

// validate is Validate. With announceBound, an Announce of port 0 that is
// the Inbound itself passes: the caller binds the inbound in this process
// and announces the port the kernel gives it (StartLocal).
func (s *Settings) validate(announceBound bool) error {
	var errs config.Errors
	add := func(field, format string, args ...any) {
		errs = append(errs, &config.FieldError{Path: "sidecar." + field, Msg: fmt.Sprintf(format, args...)})
	}
	label := func(field, v string) {
		if v == "" {
			add(field, "is required")
			return
		}
		if !isLabel(v) {
			add(field, "%q is not a DNS label (lower-case letters, digits and '-', at most 63)", v)
		}
	}
	label("service", s.Service)
	label("namespace", s.Namespace)
	label("service_account", s.ServiceAccount)
	if s.AppPort < 1 || s.AppPort > 65535 {
		add("app_port", "must be a port, 1 to 65535")
	}
	if s.Version != "" && !config.IsVersion(s.Version) {
		add("version", "%q is not a version (lowercase letters, digits, '-' and '.'; at most 63)", s.Version)
	}
	switch s.Protocol {
	case ProtocolHTTP, ProtocolHTTP2, ProtocolGRPC, ProtocolTCP:
	default:
		add("protocol", "unknown protocol %q (want http, http2, grpc or tcp)", s.Protocol)
	}
	switch s.InboundMode {
	case policy.Strict, policy.Permissive:
	default:
		add("inbound_mode", "unknown mode %q (want strict or permissive)", s.InboundMode)
	}
	switch s.OutboundPolicy {
	case RegistryOnly, AllowAny:
	default:
		add("outbound_policy", "unknown policy %q (want registry_only or allow_any)", s.OutboundPolicy)
	}
	switch s.HopProtocol {
	case HopHTTP2, HopDownstream:
	default:
		add("hop_protocol", "unknown protocol %q (want http2 or downstream)", s.HopProtocol)
	}
	if d := time.Duration(s.ProtocolDetectionTimeout); d < 0 || d > 10*time.Second {
		add("protocol_detection_timeout", "must be 0 (100ms) to 10s, not %v", d)
	}
	if s.HealthCheck != nil {
		s.HealthCheck.validate(s.Protocol, add)
	}
	if s.Concurrency < 0 || s.Concurrency > 1024 {
		add("concurrency", "must be 1 to 1024 threads (0 for the default, %d)", DefaultConcurrency)
	}
	addr := func(field, v string) {
		if _, port, err := net.SplitHostPort(v); err != nil {
			add(field, "%q is not host:port", v)
		} else if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
			add(field, "%q has no valid port", v)
		}
	}
	addr("inbound", s.Inbound)
	addr("outbound", s.Outbound)
	addr("announce", s.Announce)
	if s.DNS != "" {
		addr("dns", s.DNS)
	}
	if h, p, err := net.SplitHostPort(s.Announce); err == nil {
		if ip := net.ParseIP(h); h == "" || ip != nil && ip.IsUnspecified() {
			add("announce", "%q is a wildcard that peers cannot dial; give the address peers reach", s.Announce)
		} else if p == "0" && !(announceBound && s.Announce == s.Inbound) {
			add("announce", "%q needs a fixed port", s.Announce)
		}
	}
	seen := map[string]int{}
	for i, c := range s.Calls {
		if c == discovery.AnyService {
			if len(s.Calls) > 1 {
				add(fmt.Sprintf("calls[%d]", i), "%q (every service of the mesh) stands alone", c)
			}
			continue
		}
		name, ok := discovery.ServiceName(c, s.Namespace)
		if !ok || strings.Count(name, ".") != 1 {
			add(fmt.Sprintf("calls[%d]", i), "%q is not a service name (orders, orders.shop or orders.shop.svc)", c)
			continue
		}
		if j, dup := seen[name]; dup {
			add(fmt.Sprintf("calls[%d]", i), "%q names the same service as calls[%d]", c, j)
		}
		seen[name] = i
	}
	listens := map[string]int{}
	for i, c := range s.TCPCalls {
		field := fmt.Sprintf("tcp_calls[%d]", i)
		name, ok := discovery.ServiceName(c.Service, s.Namespace)
		if !ok || strings.Count(name, ".") != 1 {
			add(field+".service", "%q is not a service name (db, db.shop or db.shop.svc)", c.Service)
			continue
		}
		if j, dup := seen[name]; dup {
			if j < len(s.Calls) {
				add(field+".service", "%q is also calls[%d]: a service is called over HTTP or over TCP, not both", c.Service, j)
			} else {
				add(field+".service", "%q names the same service as tcp_calls[%d]", c.Service, j-len(s.Calls))
			}
		}
		seen[name] = len(s.Calls) + i
		if c.Listen == "" {
			continue
		}
		addr(field+".listen", c.Listen)
		if j, dup := listens[c.Listen]; dup {
			add(field+".listen", "%q is also the address of tcp_calls[%d]", c.Listen, j)
		} else if c.Listen == s.Outbound || c.Listen == s.Inbound {
			add(field+".listen", "%q is the sidecar's outbound or inbound address", c.Listen)
		}
		listens[c.Listen] = i
	}
	for _, f := range s.filterLists() {
		field, list := f.field, f.names
		names := map[string]int{}
		for i, name := range list {
			path := fmt.Sprintf("%s[%d]", field, i)
			if j, dup := names[name]; dup {
				add(path, "%q is also %s[%d]", name, field, j)
			} else if name == "" {
				add(path, "is empty; name a plugin")
			}
			names[name] = i
		}
	}
	if field := "inbound_filters"; len(s.InboundFilters) > 0 && s.Protocol == ProtocolTCP {
		add(field, "an app of protocol tcp has no HTTP requests to filter")
	}
	if field := "inbound_network_filters"; len(s.InboundNetworkFilters) > 0 && s.Protocol != ProtocolTCP {
		add(field, "network filters run on the connections of an app of protocol tcp; this app's are HTTP requests (inbound_filters)")
	}
	if len(errs) > 0 {
		return errs
	}
	return nil
}

type filterList struct {
	field string
	names []string
}

func (s *Settings) filterLists() []filterList {
	return []filterList{{"inbound_filters", s.InboundFilters}, {"outbound_filters", s.OutboundFilters},
		{"inbound_network_filters", s.InboundNetworkFilters}, {"outbound_network_filters", s.OutboundNetworkFilters}}
}

// CheckFilters reports the sidecar's filters that name no plugin of
// plugins, with their field paths.
func (s *Settings) CheckFilters(plugins []config.Plugin) error {
	var errs config.Errors
	for _, f := range s.filterLists() {
		for i, name := range f.names {
			if !slices.ContainsFunc(plugins, func(p config.Plugin) bool { return p.Name == name }) {
				errs = append(errs, &config.FieldError{Path: fmt.Sprintf("sidecar.%s[%d]", f.field, i),
					Msg: fmt.Sprintf("no plugin %q (the sidecar's plugins are those of --local-config)", name)})
			}
		}
	}
	if len(errs) > 0 {
		return errs
	}
	return nil
}

// Name is the service's name in the registry, "SERVICE.NAMESPACE".
func (s *Settings) Name() string { return s.Service + "." + s.Namespace }

// isLabel reports whether v is a DNS label: lower-case letters, digits
// and '-' inside, at most 63.
func isLabel(v string) bool {
	return v != "" && len(v) <= 63 && strings.Trim(v, "abcdefghijklmnopqrstuvwxyz0123456789-") == "" && v[0] != '-' && v[len(v)-1] != '-'
}

// CallsAll reports whether the app may call every service of the mesh
// by name (calls: ["*"]): the sidecar follows every service, as Istio's
// sidecars do without a Sidecar resource, where by default it follows
// those listed, as an App Mesh virtual node its backends or a Consul
// sidecar its upstreams.
func (s *Settings) CallsAll() bool { return slices.Contains(s.Calls, discovery.AnyService) }

// Targets are the registry names of the services the app calls, sorted:
// those listed in Calls (none with CallsAll; see httpTargets).
func (s *Settings) Targets() []string {
	out := make([]string, 0, len(s.Calls))
	for _, c := range s.Calls {
		if c == discovery.AnyService {
			continue
		}
		if name, ok := discovery.ServiceName(c, s.Namespace); ok {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// TCPTargets are the registry names of the TCP services the app calls,
// sorted.
func (s *Settings) TCPTargets() []string {
	out := make([]string, 0, len(s.TCPCalls))
	for _, c := range s.TCPCalls {
		if name, ok := discovery.ServiceName(c.Service, s.Namespace); ok {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// httpTargets are the registry names of the HTTP services the app may
// call in st, sorted: Targets, or with CallsAll every service st holds
// but the TCP ones (tcpTargets).
func (s *Settings) httpTargets(st State) []string {
	if !s.CallsAll() {
		return s.Targets()
	}
	tcp := s.tcpTargets(st)
	out := make([]string, 0, len(st.Endpoints))
	for name := range st.Endpoints {
		if meshService(name) && !slices.Contains(tcp, name) {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

// tcpTargets are the registry names of the TCP services the app may call
// in st, sorted: TCPTargets, and with CallsAll every service st holds
// whose endpoints serve opaque TCP (a sidecar of protocol tcp says so
// when it registers). A service with endpoints of both kinds is a TCP
// one: its HTTP endpoints are those of an older release.
func (s *Settings) tcpTargets(st State) []string {
	out := s.TCPTargets()
	if !s.CallsAll() {
		return out
	}
	for name, eps := range st.Endpoints {
		if meshService(name) && servesTCP(eps) && !slices.Contains(out, name) {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

// meshService reports whether a registry name is a mesh service's:
// sidecars register as SERVICE.NAMESPACE, and a name of another form is
// a cluster of proxies outside the mesh.
func meshService(name string) bool {
	svc, ns, ok := strings.Cut(name, ".")
	return ok && isLabel(svc) && isLabel(ns)
}

// servesTCP reports whether any of eps serves opaque TCP.
func servesTCP(eps []registry.Endpoint) bool {
	for _, ep := range eps {
		if ep.Protocol == registry.ProtocolTCP {
			return true
		}
	}
	return false
}

// Interest is what the sidecar asks discovery for.
func (s *Settings) Interest() discovery.Interest {
	svcs := append(s.Targets(), s.TCPTargets()...)
	if s.CallsAll() {
		svcs = append(svcs, discovery.AnyService)
	}
	slices.Sort(svcs)
	return discovery.Interest{Services: slices.Compact(svcs), Namespace: s.Namespace, Service: s.Service}
}
