package sidecar

import (
	"cmp"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/controlplane/registry"
	"github.com/wasmgate/wasmgate/mesh/policy"
)

// Names of what Build makes, as they appear in /config, logs and metrics.
const (
	InboundListener  = "inbound"
	OutboundListener = "outbound"
	AppCluster       = "app"
	// PassthroughCluster carries allow_any calls to destinations outside
	// the mesh.
	PassthroughCluster = "passthrough"
	// clusterPrefix names the cluster of a called service:
	// "svc.orders.default".
	clusterPrefix = "svc."
)

// The mesh defaults of every cluster of a called service: retries of
// what failed before a byte was answered, ejection of an endpoint that
// fails in a row, and bounds on what one service may hold open. Each
// build gets its own values: normalizing a configuration writes to them.
func meshRetry() *config.RetryPolicy {
	return &config.RetryPolicy{
		RetryOn:    []string{config.RetryOnConnectFailure, config.RetryOnReset, config.RetryOnGatewayError},
		NumRetries: 2,
		BackOff:    &config.BackOff{BaseInterval: config.Duration(10 * time.Millisecond), MaxInterval: config.Duration(100 * time.Millisecond)},
	}
}

func meshOutlier() *config.OutlierDetection {
	return &config.OutlierDetection{
		ConsecutiveGatewayFailure: 5,
		BaseEjectionTime:          config.Duration(10 * time.Second),
		MaxEjectionTime:           config.Duration(60 * time.Second),
		MaxEjectionPercent:        50,
	}
}

func meshBreakers() *config.CircuitBreakers {
	return &config.CircuitBreakers{MaxConnections: 4096, MaxPendingRequests: 4096, MaxRequests: 4096, MaxRetries: 64}
}

// EndpointID is the registry id of a sidecar's endpoint: its service
// account, then the address it announces. Callers derive the SPIFFE ID to
// expect from it.
func EndpointID(s *Settings) string { return s.ServiceAccount + ":" + s.Announce }

// State is what a sidecar knows of the mesh: the endpoints of the
// services it calls, by registry name. Build reads it only.
type State struct {
	Endpoints map[string][]registry.Endpoint
	// InboundMode is the mode of the inbound listener; empty means
	// Settings.InboundMode.
	InboundMode policy.Mode
	// OutboundPolicy is registry_only or allow_any, from the service's
	// outbound traffic policy; empty means Settings.OutboundPolicy.
	OutboundPolicy string
	// Wasm are the service's Wasm plugins from the control plane, in the
	// order they run (policy.WasmFor).
	Wasm []policy.WasmPlugin
	// Routes are the service routes of the services it calls, by
	// registry name.
	Routes map[string][]policy.ServiceRoute
	// Entries are the service entries of its service: hosts outside the
	// mesh it may reach under registry_only.
	Entries []policy.ServiceEntry
	// VIPs are the virtual addresses of the services it calls, by
	// registry name: the sidecar's DNS answers their names with them, and
	// a connection to one is a call to its service.
	VIPs map[string]string
}

// Build turns settings and state into the proxy's configuration: an
// inbound listener with the mesh's mutual TLS and the mesh_policy filter
// in front of the app, and an outbound listener that routes by name to
// the peers' inbound listeners over mutual TLS. trustDomain is the
// mesh's, for the identities expected of peers; passthrough is the
// address of the forwarder of allow_any ("" when the policy is
// registry_only).
func Build(s *Settings, st State, trustDomain, passthrough string) *config.Config {
	appProto := config.ProtocolHTTP1
	if s.Protocol == ProtocolHTTP2 || s.Protocol == ProtocolGRPC {
		appProto = config.ProtocolHTTP2
	}
	mode := st.InboundMode
	if mode == "" {
		mode = s.InboundMode
	}
	cfg := &config.Config{
		Listeners: []config.Listener{{Name: OutboundListener, Address: s.Outbound, TrafficDirection: config.DirectionOutbound,
			HTTP2: &config.ListenerHTTP2{H2C: true}}},
	}
	w := wasmFilters(s, st)
	cfg.Plugins = w.plugins
	inbound, outbound := w.inbound, w.outbound
	// A TCP app's inbound is the relay's (package relay), not an HTTP
	// listener.
	if s.Protocol != ProtocolTCP {
		cfg.Listeners = append([]config.Listener{
			{Name: InboundListener, Address: s.Inbound, TrafficDirection: config.DirectionInbound,
				TLS: &config.ListenerTLS{Mesh: true, Permissive: mode == policy.Permissive}},
		}, cfg.Listeners...)
		cfg.Clusters = []config.Cluster{{
			Name: AppCluster, Endpoints: []config.Endpoint{{Address: "127.0.0.1:" + strconv.Itoa(s.AppPort)}}, Protocol: appProto,
		}}
		cfg.VirtualHosts = []config.VirtualHost{{
			Name: InboundListener, Domains: []string{"*"}, Listeners: []string{InboundListener},
			Filters: append([]config.FilterRef{{Native: config.NativeMeshPolicy}}, inbound...),
			Routes:  []config.Route{{Name: "app", Match: config.RouteMatch{Prefix: "/"}, Cluster: AppCluster}},
		}}
	}
	hop := config.ProtocolHTTP2
	if s.HopProtocol == HopDownstream {
		hop = config.ProtocolDownstream
	}
	targets := s.httpTargets(st)
	addrs := destinations(targets, st.Endpoints)
	for _, name := range targets {
		svc, ns, _ := strings.Cut(name, ".")
		eps := st.Endpoints[name]
		clusters := []config.Cluster{meshCluster(clusterPrefix+name, eps, hop, trustDomain, ns)}
		routes := []config.Route{{Name: name, Match: config.RouteMatch{Prefix: "/"}, Cluster: clusterPrefix + name}}
		if rs := st.Routes[name]; len(rs) > 0 {
			var subsets []config.Cluster
			routes, subsets = serviceRoutes(name, &rs[0], eps, hop, trustDomain, ns)
			clusters = append(clusters, subsets...)
			if tp := rs[0].TrafficPolicy; tp != nil {
				for i := range clusters {
					applyTrafficPolicy(&clusters[i], tp)
				}
			}
			// A version's own policy over the route's, on its cluster.
			for _, sub := range rs[0].Subsets {
				for i := range clusters {
					if clusters[i].Name == clusterPrefix+name+subsetSep+sub.Version {
						applyTrafficPolicy(&clusters[i], sub.TrafficPolicy)
					}
				}
			}
		}
		cfg.Clusters = append(cfg.Clusters, clusters...)
		domains := []string{name, name + ".svc", name + ".svc.cluster.local"}
		if ns == s.Namespace {
			domains = append([]string{svc}, domains...)
		}
		// The addresses of its endpoints, for an intercepted call whose
		// Host names no service: the outbound listener routes it by its
		// original destination (proxy.Options.RouteByDestination).
		domains = append(domains, addrs[name]...)
		cfg.VirtualHosts = append(cfg.VirtualHosts, config.VirtualHost{
			Name: clusterPrefix + name, Domains: domains, Listeners: []string{OutboundListener},
			Filters: outbound,
			Retry:   meshRetry(),
			Routes:  routes,
		})
	}
	outside := config.VirtualHost{Name: "outside", Domains: []string{"*"}, Listeners: []string{OutboundListener},
		Filters: outbound}
	policyOut := st.OutboundPolicy
	if policyOut == "" {
		policyOut = s.OutboundPolicy
	}
	if policyOut == AllowAny && passthrough != "" {
		cfg.Clusters = append(cfg.Clusters, config.Cluster{Name: PassthroughCluster, Endpoints: []config.Endpoint{{Address: passthrough}}})
		outside.Routes = []config.Route{{Name: "passthrough", Match: config.RouteMatch{Prefix: "/"}, Cluster: PassthroughCluster}}
	} else {
		outside.Routes = []config.Route{{Name: "registry_only", Match: config.RouteMatch{Prefix: "/"},
			DirectResponse: &config.DirectResponse{Status: 502, Body: "destination is not a service of the mesh (outbound_policy: registry_only)\n"}}}
		// The hosts of its service entries are let out all the same.
		if hosts := entryHosts(st.Entries); len(hosts) > 0 && passthrough != "" {
			cfg.Clusters = append(cfg.Clusters, config.Cluster{Name: PassthroughCluster, Endpoints: []config.Endpoint{{Address: passthrough}}})
			cfg.VirtualHosts = append(cfg.VirtualHosts, config.VirtualHost{Name: "service_entries", Domains: hosts,
				Listeners: []string{OutboundListener}, Filters: outbound,
				Routes: []config.Route{{Name: "service_entries", Match: config.RouteMatch{Prefix: "/"}, Cluster: PassthroughCluster}}})
		}
	}
	cfg.VirtualHosts = append(cfg.VirtualHosts, outside)
	return cfg
}

// entryHosts returns the hosts of entries, and their single addresses
// (an HTTP call names one in its Host), each once, sorted.
func entryHosts(entries []policy.ServiceEntry) []string {
	var hosts []string
	for _, e := range entries {
		hosts = append(hosts, e.Hosts...)
		for _, a := range e.Addresses {
			if ip, err := netip.ParseAddr(a); err == nil && ip.Is4() {
				hosts = append(hosts, ip.String())
			}
		}
	}
	slices.Sort(hosts)
	return slices.Compact(hosts)
}

// meshCluster is the cluster of a called service's endpoints eps (of
// namespace ns): HTTP/2 (or the app's protocol) over the mesh's mutual
// TLS, with the SPIFFE IDs the endpoints' service accounts prove.
func meshCluster(name string, eps []registry.Endpoint, hop, trustDomain, ns string) config.Cluster {
	cl := config.Cluster{
		Name: name, Discovery: config.DiscoveryRegistry, Protocol: hop,
		LBPolicy:         config.LBLeastRequest,
		OutlierDetection: meshOutlier(), CircuitBreakers: meshBreakers(),
		TLS: &config.ClusterTLS{Mesh: true},
	}
	ids := map[string]bool{}
	for _, ep := range eps {
		cl.Endpoints = append(cl.Endpoints, config.Endpoint{Address: ep.Address, Weight: ep.Weight})
		if sa, _, ok := strings.Cut(ep.ID, ":"); ok && sa != "" {
			ids[policy.SPIFFEID(trustDomain, ns, sa)] = true
		}
	}
	for id := range ids {
		cl.TLS.ExpectedIdentities = append(cl.TLS.ExpectedIdentities, id)
	}
	slices.Sort(cl.TLS.ExpectedIdentities)
	return cl
}

// applyTrafficPolicy sets on c, a cluster of a called service, what the
// service route's traffic policy sets.
func applyTrafficPolicy(c *config.Cluster, tp *policy.TrafficPolicy) {
	if tp.LoadBalancer != "" {
		c.LBPolicy, c.HashPolicy = tp.LoadBalancer, tp.HashPolicy
	}
	if tp.OutlierDetection != nil {
		o := *tp.OutlierDetection
		c.OutlierDetection = &o
	}
	if tp.ConnectionPool != nil {
		b := *tp.ConnectionPool
		c.CircuitBreakers = &b
	}
	if tp.ConnectTimeout > 0 {
		c.ConnectTimeout = tp.ConnectTimeout
	}
}

// subsetSep joins a service's cluster name and a version in the name of
// the cluster of the version's endpoints: no service or namespace name
// holds it.
const subsetSep = "_"

// serviceRoutes turns the service route r of the called service name
// into the routes of its virtual host, each rule in order and then every
// call that no rule took to any endpoint, and the clusters of the
// versions its backends name (the endpoints of eps with that version; a
// version with none answers 503, as any cluster without an endpoint).
func serviceRoutes(name string, r *policy.ServiceRoute, eps []registry.Endpoint, hop, trustDomain, ns string) ([]config.Route, []config.Cluster) {
	var routes []config.Route
	var subsets []config.Cluster
	clusterOf := func(version string) string {
		if version == "" {
			return clusterPrefix + name
		}
		cl := clusterPrefix + name + subsetSep + version
		if !slices.ContainsFunc(subsets, func(c config.Cluster) bool { return c.Name == cl }) {
			var of []registry.Endpoint
			for _, ep := range eps {
				if ep.Version == version {
					of = append(of, ep)
				}
			}
			subsets = append(subsets, meshCluster(cl, of, hop, trustDomain, ns))
		}
		return cl
	}
	for i, rule := range r.Rules {
		rt := config.Route{Name: fmt.Sprintf("%s.%s.%d", name, r.Name, i), Match: config.RouteMatch{Prefix: "/"}, Timeout: rule.Timeout, Fault: rule.Fault}
		if m := rule.Match; m != nil {
			rt.Match = m.Config()
		}
		if h := rule.Headers; h != nil {
			rt.RequestHeaders, rt.ResponseHeaders = h.Request, h.Response
		}
		switch {
		case rule.Redirect != nil:
			rd := *rule.Redirect
			rt.Redirect = &rd
		case len(rule.Backends) == 1:
			rt.Cluster = clusterOf(rule.Backends[0].Version)
		default:
			for _, b := range rule.Backends {
				rt.WeightedClusters = append(rt.WeightedClusters, config.WeightedCluster{Name: clusterOf(b.Version), Weight: b.Weight})
			}
		}
		if rw := rule.Rewrite; rw != nil {
			rt.HostRewrite = rw.Authority
			switch {
			case rw.URI == "":
			case rt.Match.Path != "":
				// The whole path: a pattern of it alone, whose
				// substitution takes no group.
				rt.RegexRewrite = &config.RegexRewrite{Pattern: "^" + regexp.QuoteMeta(rt.Match.Path) + "$", Substitution: strings.ReplaceAll(rw.URI, "$", "$$")}
			case rt.Match.PathRegex != "":
				// The whole path too, whatever the pattern matched.
				rt.RegexRewrite = &config.RegexRewrite{Pattern: "^.*$", Substitution: strings.ReplaceAll(rw.URI, "$", "$$")}
			default:
				rt.PrefixRewrite = rw.URI
			}
		}
		if m := rule.Mirror; m != nil {
			rt.Mirrors = []config.Mirror{{Cluster: clusterOf(m.Version), Percent: m.Percent}}
		}
		if rr := rule.Retries; rr != nil {
			rt.Retry = meshRetry()
			rt.Retry.NumRetries, rt.Retry.PerTryTimeout = rr.Attempts, rr.PerTryTimeout
			if len(rr.On) > 0 {
				rt.Retry.RetryOn = rr.On
			}
			if len(rr.StatusCodes) > 0 {
				rt.Retry.RetryOn = append(slices.Clone(rt.Retry.RetryOn), config.RetryOnRetriableStatusCodes)
				rt.Retry.RetriableStatusCodes = rr.StatusCodes
			}
		}
		routes = append(routes, rt)
	}
	routes = append(routes, config.Route{Name: name, Match: config.RouteMatch{Prefix: "/"}, Cluster: clusterPrefix + name})
	return routes, subsets
}

// filters are the Wasm filters of a sidecar: the control plane's plugins
// of its service, which run before the sidecar's own on each side, as
// HTTP filters of its listeners and as network filters of the TCP relay.
type filters struct {
	plugins                 []config.Plugin // the control plane's that apply
	inbound, outbound       []config.FilterRef
	netInbound, netOutbound []config.FilterRef
}

func wasmFilters(s *Settings, st State) filters {
	var w filters
	tcpApp, tcpCalls := s.Protocol == ProtocolTCP, len(s.tcpTargets(st)) > 0
	// Connections outside the mesh that the relay passes on (allow_any,
	// service entries) are the outbound's too.
	mode := cmp.Or(st.OutboundPolicy, s.OutboundPolicy)
	tcpOut := tcpCalls || mode == AllowAny || len(st.Entries) > 0
	for _, wp := range st.Wasm {
		ref := config.FilterRef{Plugin: wp.PluginName()}
		var list *[]config.FilterRef
		switch inbound := wp.Mode == policy.WasmInbound; {
		case wp.Type == policy.WasmNetwork && inbound && tcpApp:
			list = &w.netInbound
		case wp.Type == policy.WasmNetwork && !inbound && tcpOut:
			list = &w.netOutbound
		case wp.Type == policy.WasmNetwork:
			continue // no connection of the side is a TCP service's
		case inbound && tcpApp:
			continue // a TCP app has no HTTP requests
		case inbound:
			list = &w.inbound
		default:
			list = &w.outbound
		}
		*list = append(*list, ref)
		w.plugins = append(w.plugins, config.Plugin{Name: wp.PluginName(), SHA256: wp.SHA256, RootID: wp.RootID,
			Config: wp.Config, FailurePolicy: wp.FailurePolicy})
	}
	w.inbound = append(w.inbound, filterRefs(s.InboundFilters)...)
	w.outbound = append(w.outbound, filterRefs(s.OutboundFilters)...)
	w.netInbound = append(w.netInbound, filterRefs(s.InboundNetworkFilters)...)
	w.netOutbound = append(w.netOutbound, filterRefs(s.OutboundNetworkFilters)...)
	return w
}

// NetworkFilters returns the plugins of the configuration Build makes
// that run as network filters on the TCP relay's connections: inbound,
// those of peers to a TCP app; outbound, those of the app to TCP
// services. The control plane's come first, then the sidecar's own.
func NetworkFilters(s *Settings, st State) (inbound, outbound []config.FilterRef) {
	w := wasmFilters(s, st)
	return w.netInbound, w.netOutbound
}

// filterRefs attaches the plugins names, in order.
func filterRefs(names []string) []config.FilterRef {
	var out []config.FilterRef
	for _, n := range names {
		out = append(out, config.FilterRef{Plugin: n})
	}
	return out
}

// destinations returns, per service, the IP addresses of its endpoints
// that belong to it alone and that an intercepted connection can have as
// its original destination (not loopback, not a wildcard), sorted. The
// explicit outbound listener is on loopback, so a loopback endpoint never
// catches a call to a name outside the mesh.
func destinations(names []string, eps map[string][]registry.Endpoint) map[string][]string {
	owner := map[netip.Addr]string{}
	for _, name := range names {
		for _, ep := range eps[name] {
			ap, err := netip.ParseAddrPort(ep.Address)
			if err != nil {
				continue
			}
			a := ap.Addr().Unmap()
			if !a.Is4() || a.IsLoopback() || a.IsUnspecified() {
				continue
			}
			if o, ok := owner[a]; ok && o != name {
				owner[a] = "" // shared: ambiguous
				continue
			}
			owner[a] = name
		}
	}
	out := map[string][]string{}
	for a, name := range owner {
		if name != "" {
			out[name] = append(out[name], a.String())
		}
	}
	for _, l := range out {
		slices.Sort(l)
	}
	return out
}
