// Package resource is the shape of wasmgate's configuration in etcd: the
// kinds of resource, the key of each one, the JSON value it holds, and how
// a set of resources becomes a config.Config and back.
//
// Every key lives under one prefix (by default "/wasmgate"); see Keys and
// controlplane/README.md for the layout.
package resource

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/mesh/policy"
)

// Kind names a kind of resource. Its value is the key segment and the
// config field it fills.
type Kind string

// The kinds of resource the control plane stores.
const (
	Listeners    Kind = "listeners"
	VirtualHosts Kind = "virtual_hosts"
	Clusters     Kind = "clusters"
	Plugins      Kind = "plugins"
	Certificates Kind = "certificates"
	// AuthorizationPolicies (policy.AuthorizationPolicy) say who may call
	// whom in the mesh.
	AuthorizationPolicies Kind = "authorization_policies"
	// PeerAuthentications (policy.PeerAuthentication) set the mutual TLS
	// mode of services. The key segment is "authentication_policies" so
	// that both mesh kinds sort before "certificates", outside
	// ConfigRange: a proxy's configuration watch never carries them, and
	// a sidecar receives only those of its own service through discovery.
	PeerAuthentications Kind = "authentication_policies"
	// OutboundTrafficPolicies (policy.OutboundTrafficPolicy) set what
	// sidecars do with calls outside the mesh. The key segment
	// "authorization_outbound" sorts between the other two mesh kinds,
	// inside the range discovery watches and outside ConfigRange.
	OutboundTrafficPolicies Kind = "authorization_outbound"
	// WasmPlugins (policy.WasmPlugin) run proxy-wasm filters in
	// sidecars. The key segment "attached_plugins" sorts before the other
	// mesh kinds and after nothing else, so that discovery's one range
	// spans the four, outside ConfigRange.
	WasmPlugins Kind = "attached_plugins"
	// ServiceRoutes (policy.ServiceRoute) route the calls to a service
	// between its versions. The key segment "attached_routes" sorts
	// between "attached_plugins" and the authorization kinds, inside
	// discovery's range and outside ConfigRange.
	ServiceRoutes Kind = "attached_routes"
	// ServiceEntries (policy.ServiceEntry) let sidecars reach hosts
	// outside the mesh. The key segment "attached_entries" sorts before
	// the other mesh kinds and after "agents", so that discovery's one
	// range spans them all, outside ConfigRange.
	ServiceEntries Kind = "attached_entries"
	// RequestAuthentications (policy.RequestAuthentication) verify end
	// users' tokens at the inbound of services. The key segment
	// "authentication_requests" sorts between the mesh's other
	// authentication and authorization kinds, inside discovery's range
	// and outside ConfigRange.
	RequestAuthentications Kind = "authentication_requests"
	// RateLimitPolicies (policy.RateLimitPolicy) bound the requests
	// services' inbounds serve. The key segment
	// "authorization_ratelimits" sorts after the other mesh kinds, which
	// moves the end of discovery's range past it, and before
	// "certificates", outside ConfigRange.
	RateLimitPolicies Kind = "authorization_ratelimits"
)

// Kinds lists every kind, in the order a config is written.
var Kinds = []Kind{Listeners, VirtualHosts, Clusters, Plugins, Certificates, AuthorizationPolicies, PeerAuthentications, OutboundTrafficPolicies, WasmPlugins, ServiceRoutes, ServiceEntries, RequestAuthentications, RateLimitPolicies}

// MeshKinds are the kinds that config.Config does not hold: they are
// validated by Check, not by config.Config.Validate.
var MeshKinds = []Kind{AuthorizationPolicies, PeerAuthentications, OutboundTrafficPolicies, WasmPlugins, ServiceRoutes, ServiceEntries, RequestAuthentications, RateLimitPolicies}

// ParseKind accepts a kind's name, its singular, or a short alias
// ("vhost", "route" names a virtual host since routes live inside one).
func ParseKind(s string) (Kind, error) {
	switch strings.ToLower(strings.ReplaceAll(s, "-", "_")) {
	case "listeners", "listener", "l":
		return Listeners, nil
	case "virtual_hosts", "virtual_host", "virtualhosts", "virtualhost", "vhosts", "vhost", "vh", "routes", "route":
		return VirtualHosts, nil
	case "clusters", "cluster", "c":
		return Clusters, nil
	case "plugins", "plugin", "p":
		return Plugins, nil
	case "certificates", "certificate", "certs", "cert":
		return Certificates, nil
	case "authorization_policies", "authorization_policy", "authorizationpolicies", "authorizationpolicy", "authz", "ap":
		return AuthorizationPolicies, nil
	case "peer_authentications", "peer_authentication", "peerauthentications", "peerauthentication", "authentication_policies", "authentication_policy", "authn", "pa":
		return PeerAuthentications, nil
	case "outbound_traffic_policies", "outbound_traffic_policy", "outboundtrafficpolicies", "outboundtrafficpolicy", "authorization_outbound", "otp":
		return OutboundTrafficPolicies, nil
	case "wasm_plugins", "wasm_plugin", "wasmplugins", "wasmplugin", "attached_plugins", "wp":
		return WasmPlugins, nil
	case "service_routes", "service_route", "serviceroutes", "serviceroute", "attached_routes", "sr":
		return ServiceRoutes, nil
	case "service_entries", "service_entry", "serviceentries", "serviceentry", "attached_entries", "se":
		return ServiceEntries, nil
	case "request_authentications", "request_authentication", "requestauthentications", "requestauthentication", "authentication_requests", "ra":
		return RequestAuthentications, nil
	case "rate_limit_policies", "rate_limit_policy", "ratelimitpolicies", "ratelimitpolicy", "authorization_ratelimits", "rl":
		return RateLimitPolicies, nil
	}
	return "", fmt.Errorf("unknown kind %q (want listeners, virtual_hosts, clusters, plugins, certificates, authorization_policies, peer_authentications, outbound_traffic_policies, wasm_plugins, service_routes, service_entries, request_authentications or rate_limit_policies)", s)
}

// Singular is the kind's name for one resource ("cluster").
func (k Kind) Singular() string {
	switch k {
	case VirtualHosts:
		return "virtual host"
	case AuthorizationPolicies:
		return "authorization policy"
	case PeerAuthentications:
		return "peer authentication"
	case OutboundTrafficPolicies:
		return "outbound traffic policy"
	case WasmPlugins:
		return "Wasm plugin"
	case ServiceRoutes:
		return "service route"
	case ServiceEntries:
		return "service entry"
	case RequestAuthentications:
		return "request authentication"
	case RateLimitPolicies:
		return "rate limit policy"
	default:
		return strings.TrimSuffix(string(k), "s")
	}
}

// Ref names one resource.
type Ref struct {
	Kind Kind
	Name string
}

func (r Ref) String() string { return string(r.Kind) + "/" + r.Name }

// ParseRef parses "kind/name".
func ParseRef(s string) (Ref, error) {
	k, n, ok := strings.Cut(s, "/")
	if !ok || n == "" {
		return Ref{}, fmt.Errorf("%q is not kind/name", s)
	}
	kind, err := ParseKind(k)
	if err != nil {
		return Ref{}, err
	}
	return Ref{kind, n}, nil
}

// Keys builds and parses the etcd keys under one prefix. The zero value is
// not usable; call NewKeys.
type Keys struct{ prefix string }

// DefaultPrefix is the prefix of every key unless configured otherwise.
const DefaultPrefix = "/wasmgate"

// NewKeys returns the layout under prefix ("" means DefaultPrefix). A
// trailing slash is ignored.
func NewKeys(prefix string) Keys {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	return Keys{prefix: strings.TrimRight(prefix, "/")}
}

// Prefix is the root of every key, without a trailing slash.
func (k Keys) Prefix() string { return k.prefix }

// Kind is the prefix of every resource of a kind, with a trailing slash.
func (k Keys) Kind(kind Kind) string { return k.prefix + "/" + string(kind) + "/" }

// Resource is the key of one resource.
func (k Keys) Resource(r Ref) string { return k.Kind(r.Kind) + r.Name }

// ParseResource returns the resource a key names.
func (k Keys) ParseResource(key string) (Ref, bool) {
	rest, ok := strings.CutPrefix(key, k.prefix+"/")
	if !ok {
		return Ref{}, false
	}
	kind, name, ok := strings.Cut(rest, "/")
	if !ok || name == "" || strings.Contains(name, "/") {
		return Ref{}, false
	}
	for _, kk := range Kinds {
		if string(kk) == kind {
			return Ref{kk, name}, true
		}
	}
	return Ref{}, false
}

// Head is the key every change rewrites: its mod revision is the revision
// of the latest configuration change.
func (k Keys) Head() string { return k.prefix + "/head" }

// HistoryPrefix is the prefix of the change history.
func (k Keys) HistoryPrefix() string { return k.prefix + "/history/" }

// History is the key of change number seq.
func (k Keys) History(seq int64) string { return fmt.Sprintf("%s%020d", k.HistoryPrefix(), seq) }

// BlobPrefix is the prefix of one blob's keys.
func (k Keys) BlobPrefix(sha256 string) string { return k.prefix + "/blobs/" + sha256 + "/" }

// BlobMeta is the key written last when a blob is stored: its presence
// means every chunk is there.
func (k Keys) BlobMeta(sha256 string) string { return k.BlobPrefix(sha256) + "meta" }

// BlobChunk is the key of chunk i of a blob.
func (k Keys) BlobChunk(sha256 string, i int) string {
	return fmt.Sprintf("%s%06d", k.BlobPrefix(sha256), i)
}

// BlobsPrefix is the prefix of every blob.
func (k Keys) BlobsPrefix() string { return k.prefix + "/blobs/" }

// ProxiesPrefix is the prefix of the proxies' registrations. The segment
// is "agents" so that it sorts before "clusters", outside ConfigRange:
// proxies then never receive each other's registrations.
func (k Keys) ProxiesPrefix() string { return k.prefix + "/agents/" }

// Proxy is the registration key of one proxy.
func (k Keys) Proxy(nodeID string) string { return k.ProxiesPrefix() + nodeID }

// ServiceVIPsPrefix is the prefix of the services' virtual addresses.
// The segment "addresses" sorts before "agents", outside ConfigRange and
// the mesh policies' range: the hub follows it on its own.
func (k Keys) ServiceVIPsPrefix() string { return k.prefix + "/addresses/services/" }

// ServiceVIP is the key of a service's virtual address.
func (k Keys) ServiceVIP(service string) string { return k.ServiceVIPsPrefix() + service }

// VIPOwner is the key that holds which service has the virtual address
// ip, so that no two share one.
func (k Keys) VIPOwner(ip string) string { return k.prefix + "/addresses/owners/" + ip }

// EndpointsPrefix is the prefix of every registered endpoint.
func (k Keys) EndpointsPrefix() string { return k.prefix + "/endpoints/" }

// ClusterEndpoints is the prefix of one cluster's registered endpoints.
func (k Keys) ClusterEndpoints(cluster string) string { return k.EndpointsPrefix() + cluster + "/" }

// Endpoint is the key of one registered endpoint.
func (k Keys) Endpoint(cluster, id string) string { return k.ClusterEndpoints(cluster) + id }

// ParseEndpoint returns the cluster and id an endpoint key names.
func (k Keys) ParseEndpoint(key string) (cluster, id string, ok bool) {
	rest, ok := strings.CutPrefix(key, k.EndpointsPrefix())
	if !ok {
		return "", "", false
	}
	cluster, id, ok = strings.Cut(rest, "/")
	return cluster, id, ok && cluster != "" && id != ""
}

// ConfigRange is the key range [begin, end) that a proxy watches: every
// resource kind, the registered endpoints, the head key and the history,
// and nothing else (blobs and proxy registrations sort outside it). One
// watch over one range delivers each change's events together and in
// revision order.
func (k Keys) ConfigRange() (begin, end string) {
	return k.Kind(Certificates), k.prefix + "/" + string(VirtualHosts) + "0" // '0' follows '/'
}

// Encode returns the stored form of a resource: compact JSON of its config
// struct, as written (not normalized), so that what was applied reads back
// the same.
func Encode(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimRight(b.Bytes(), "\n"), nil
}

// New returns a pointer to a zero resource of the kind.
func New(kind Kind) any {
	switch kind {
	case Listeners:
		return &config.Listener{}
	case VirtualHosts:
		return &config.VirtualHost{}
	case Clusters:
		return &config.Cluster{}
	case Plugins:
		return &config.Plugin{}
	case Certificates:
		return &config.Certificate{}
	case AuthorizationPolicies:
		return &policy.AuthorizationPolicy{}
	case PeerAuthentications:
		return &policy.PeerAuthentication{}
	case OutboundTrafficPolicies:
		return &policy.OutboundTrafficPolicy{}
	case WasmPlugins:
		return &policy.WasmPlugin{}
	case ServiceRoutes:
		return &policy.ServiceRoute{}
	case ServiceEntries:
		return &policy.ServiceEntry{}
	case RequestAuthentications:
		return &policy.RequestAuthentication{}
	case RateLimitPolicies:
		return &policy.RateLimitPolicy{}
	}
	panic("resource: unknown kind " + string(kind))
}

// Normalize fills in the defaults of one decoded resource, in place, as
// config.Config.Normalize does for a whole configuration.
func Normalize(v any) {
	var c config.Config
	switch x := v.(type) {
	case *config.Listener:
		c.Listeners = []config.Listener{*x}
		c.Normalize()
		*x = c.Listeners[0]
	case *config.VirtualHost:
		c.VirtualHosts = []config.VirtualHost{*x}
		c.Normalize()
		*x = c.VirtualHosts[0]
	case *config.Cluster:
		c.Clusters = []config.Cluster{*x}
		c.Normalize()
		*x = c.Clusters[0]
	case *config.Plugin:
		c.Plugins = []config.Plugin{*x}
		c.Normalize()
		*x = c.Plugins[0]
	case *policy.AuthorizationPolicy:
		x.Normalize()
	case *policy.PeerAuthentication:
		x.Normalize()
	case *policy.OutboundTrafficPolicy:
		x.Normalize()
	case *policy.WasmPlugin:
		x.Normalize()
	case *policy.ServiceRoute:
		x.Normalize()
	case *policy.ServiceEntry:
		x.Normalize()
	case *policy.RequestAuthentication:
		x.Normalize()
	case *policy.RateLimitPolicy:
		x.Normalize()
	}
}

// Decode decodes a stored value strictly (unknown fields are an error) and
// checks that the name inside it is the name in its key. It returns a
// pointer to the config struct.
func Decode(r Ref, data []byte) (any, error) {
	v := New(r.Kind)
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return nil, fmt.Errorf("%s: %w", r, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%s: trailing data after the JSON value", r)
	}
	if n := NameOf(v); n != r.Name {
		return nil, fmt.Errorf("%s: the value names %q, not the key's name", r, n)
	}
	return v, nil
}

// NameOf returns the name of a resource (a pointer to a config struct or a
// config struct).
func NameOf(v any) string {
	switch x := v.(type) {
	case *config.Listener:
		return x.Name
	case *config.VirtualHost:
		return x.Name
	case *config.Cluster:
		return x.Name
	case *config.Plugin:
		return x.Name
	case *config.Certificate:
		return x.Name
	case config.Listener:
		return x.Name
	case config.VirtualHost:
		return x.Name
	case config.Cluster:
		return x.Name
	case config.Plugin:
		return x.Name
	case config.Certificate:
		return x.Name
	case *policy.AuthorizationPolicy:
		return x.Name
	case *policy.PeerAuthentication:
		return x.Name
	case policy.AuthorizationPolicy:
		return x.Name
	case policy.PeerAuthentication:
		return x.Name
	case *policy.OutboundTrafficPolicy:
		return x.Name
	case policy.OutboundTrafficPolicy:
		return x.Name
	case *policy.WasmPlugin:
		return x.Name
	case policy.WasmPlugin:
		return x.Name
	case *policy.ServiceRoute:
		return x.Name
	case policy.ServiceRoute:
		return x.Name
	case *policy.ServiceEntry:
		return x.Name
	case policy.ServiceEntry:
		return x.Name
	case *policy.RequestAuthentication:
		return x.Name
	case policy.RequestAuthentication:
		return x.Name
	case *policy.RateLimitPolicy:
		return x.Name
	case policy.RateLimitPolicy:
		return x.Name
	}
	return ""
}

// Set is a set of resources by reference; each value is a pointer to a
// config struct.
type Set map[Ref]any

// Split returns the resources of a configuration. The values point into
// cfg.
func Split(cfg *config.Config) Set {
	s := Set{}
	for i := range cfg.Listeners {
		s[Ref{Listeners, cfg.Listeners[i].Name}] = &cfg.Listeners[i]
	}
	for i := range cfg.VirtualHosts {
		s[Ref{VirtualHosts, cfg.VirtualHosts[i].Name}] = &cfg.VirtualHosts[i]
	}
	for i := range cfg.Clusters {
		s[Ref{Clusters, cfg.Clusters[i].Name}] = &cfg.Clusters[i]
	}
	for i := range cfg.Plugins {
		s[Ref{Plugins, cfg.Plugins[i].Name}] = &cfg.Plugins[i]
	}
	for i := range cfg.Certificates {
		s[Ref{Certificates, cfg.Certificates[i].Name}] = &cfg.Certificates[i]
	}
	return s
}

// Refs returns the references of the set, sorted by kind order then name.
func (s Set) Refs() []Ref {
	refs := make([]Ref, 0, len(s))
	for r := range s {
		refs = append(refs, r)
	}
	SortRefs(refs)
	return refs
}

// SortRefs sorts references by kind order, then name.
func SortRefs(refs []Ref) {
	slices.SortFunc(refs, func(a, b Ref) int {
		if a.Kind != b.Kind {
			return slices.Index(Kinds, a.Kind) - slices.Index(Kinds, b.Kind)
		}
		return strings.Compare(a.Name, b.Name)
	})
}

// Assemble builds a configuration from base's local fields (admin,
// access_log, node, drain_timeout) and the set's resources, each kind
// sorted by name. The result shares nothing with base or s: the caller may
// normalize it and hand it on.
func Assemble(base *config.Config, s Set) (*config.Config, error) {
	return Clone(AssembleShared(base, s))
}

// AssembleShared is Assemble without the copy: the configuration shares
// the values' slices, so neither the values nor the configuration may be
// changed afterwards. A proxy's watcher uses it so that a virtual host
// that did not change arrives with the very routes the proxy compiled
// before, which the proxy then reuses without comparing them.
func AssembleShared(base *config.Config, s Set) *config.Config {
	cfg := &config.Config{}
	if base != nil {
		cfg.Admin = base.Admin
		cfg.AccessLog = base.AccessLog
		cfg.DrainTimeout = base.DrainTimeout
		cfg.ShutdownDelay = base.ShutdownDelay
		cfg.Node = base.Node
	}
	cfg.Listeners = []config.Listener{}
	cfg.VirtualHosts = []config.VirtualHost{}
	cfg.Clusters = []config.Cluster{}
	for _, r := range s.Refs() {
		switch v := s[r].(type) {
		case *config.Listener:
			cfg.Listeners = append(cfg.Listeners, *v)
		case *config.VirtualHost:
			cfg.VirtualHosts = append(cfg.VirtualHosts, *v)
		case *config.Cluster:
			cfg.Clusters = append(cfg.Clusters, *v)
		case *config.Plugin:
			cfg.Plugins = append(cfg.Plugins, *v)
		case *config.Certificate:
			cfg.Certificates = append(cfg.Certificates, *v)
		}
	}
	return cfg
}

// Clone returns a deep copy of a configuration (through its JSON form).
func Clone(cfg *config.Config) (*config.Config, error) {
	b, err := json.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	out := &config.Config{}
	if err := json.Unmarshal(b, out); err != nil {
		return nil, err
	}
	return out, nil
}

// Referrer is one place that names a resource.
type Referrer struct {
	// From is the referring resource.
	From Ref `json:"-"`
	// Path is the field inside From, e.g. "routes[2].cluster".
	Path string `json:"path"`
}

func (r Referrer) String() string { return r.From.String() + " " + r.Path }

// References returns, for every resource named by another, where it is
// named. Names that do not resolve are included too.
func References(s Set) map[Ref][]Referrer {
	out := map[Ref][]Referrer{}
	add := func(to Ref, from Ref, path string) {
		out[to] = append(out[to], Referrer{From: from, Path: path})
	}
	filters := func(from Ref, path string, fs []config.FilterRef) {
		for i, f := range fs {
			add(Ref{Plugins, f.Plugin}, from, fmt.Sprintf("%s[%d].plugin", path, i))
		}
	}
	for _, r := range s.Refs() {
		switch v := s[r].(type) {
		case *config.VirtualHost:
			for i, l := range v.Listeners {
				add(Ref{Listeners, l}, r, fmt.Sprintf("listeners[%d]", i))
			}
			filters(r, "filters", v.Filters)
			for i, rt := range v.Routes {
				p := fmt.Sprintf("routes[%d]", i)
				if rt.Cluster != "" {
					add(Ref{Clusters, rt.Cluster}, r, p+".cluster")
				}
				for j, wc := range rt.WeightedClusters {
					add(Ref{Clusters, wc.Name}, r, fmt.Sprintf("%s.weighted_clusters[%d].name", p, j))
				}
				filters(r, p+".filters", rt.Filters)
			}
		case *config.Plugin:
			for i, c := range v.AllowedClusters {
				add(Ref{Clusters, c}, r, fmt.Sprintf("allowed_clusters[%d]", i))
			}
		case *config.Listener:
			if v.TLS != nil {
				for i, c := range v.TLS.Certificates {
					if c.Certificate != "" {
						add(Ref{Certificates, c.Certificate}, r, fmt.Sprintf("tls.certificates[%d].certificate", i))
					}
				}
			}
		}
	}
	return out
}
