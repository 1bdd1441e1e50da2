// Package config is the one schema of wasmgate: plain structs read from YAML
// or JSON, defaulted and validated in one place, with errors that name the
// field path. The file loader, the control plane and the proxy all use it.
//
// A Config is plain data. It is never mutated after Load (or Normalize and
// Validate) returns it; the proxy compiles it into an immutable snapshot.
package config

// Config is a whole proxy configuration.
type Config struct {
	// Admin is the operator's listener (/ready, /metrics, /config, ...).
	Admin Admin `yaml:"admin,omitempty" json:"admin,omitempty"`
	// AccessLog says where and what the access log writes.
	AccessLog AccessLog `yaml:"access_log,omitempty" json:"access_log,omitempty"`
	// DrainTimeout bounds how long SIGTERM waits for requests in flight.
	// Zero means 15s.
	DrainTimeout Duration `yaml:"drain_timeout,omitempty" json:"drain_timeout,omitempty"`
	// ShutdownDelay is how long SIGTERM keeps the listeners serving, with
	// /ready failing and every response closing its connection, before it
	// closes them: the time a load balancer needs to stop sending new
	// connections. Zero closes them at once.
	ShutdownDelay Duration `yaml:"shutdown_delay,omitempty" json:"shutdown_delay,omitempty"`
	// Node identifies this proxy to filters and to the control plane.
	Node Node `yaml:"node,omitempty" json:"node,omitempty"`

	Listeners    []Listener    `yaml:"listeners" json:"listeners"`
	VirtualHosts []VirtualHost `yaml:"virtual_hosts" json:"virtual_hosts"`
	Clusters     []Cluster     `yaml:"clusters" json:"clusters"`
	Plugins      []Plugin      `yaml:"plugins,omitempty" json:"plugins,omitempty"`
	Certificates []Certificate `yaml:"certificates,omitempty" json:"certificates,omitempty"`
	// Telemetry sends records, traces and metrics to central receivers;
	// nil means none beyond the access log and the metrics endpoint.
	Telemetry *Telemetry `yaml:"telemetry,omitempty" json:"telemetry,omitempty"`
}

// Admin configures the admin listener.
type Admin struct {
	// Address is host:port; empty means 127.0.0.1:9901. "off" disables it.
	Address string `yaml:"address,omitempty" json:"address,omitempty"`
	// AllowedHosts are the Host names the admin endpoints answer besides
	// IP addresses and localhost: a request naming any other host gets
	// 403, so that a web page cannot read the endpoints through a name it
	// points at this host (DNS rebinding). /healthz and /ready answer any.
	AllowedHosts []string `yaml:"allowed_hosts,omitempty" json:"allowed_hosts,omitempty"`
	// Pprof serves Go's profiler under /debug/pprof/. Off by default.
	Pprof bool `yaml:"pprof,omitempty" json:"pprof,omitempty"`
	// TokenFile names a file holding a token that every admin request but
	// /healthz and /ready must present as "Authorization: Bearer TOKEN".
	// Empty means no token.
	TokenFile string `yaml:"token_file,omitempty" json:"token_file,omitempty"`
}

// AccessLog configures the access log. It is written by one goroutine off
// the request path; when it cannot keep up, entries are dropped and counted.
type AccessLog struct {
	// Path is "stdout", "stderr", a file path, or empty for no access log.
	Path string `yaml:"path,omitempty" json:"path,omitempty"`
	// Fields are the JSON fields each entry carries, in order. Empty means
	// DefaultAccessLogFields.
	Fields []string `yaml:"fields,omitempty" json:"fields,omitempty"`
	// BufferEntries is the queue length between requests and the writer.
	// Zero means 4096.
	BufferEntries int `yaml:"buffer_entries,omitempty" json:"buffer_entries,omitempty"`
}

// Node identifies this proxy.
type Node struct {
	ID       string            `yaml:"id,omitempty" json:"id,omitempty"`
	Metadata map[string]string `yaml:"metadata,omitempty" json:"metadata,omitempty"`
}

// Listener traffic directions (Listener.TrafficDirection).
const (
	DirectionInbound  = "inbound"
	DirectionOutbound = "outbound"
)

// Listener is a downstream socket.
type Listener struct {
	Name    string `yaml:"name" json:"name"`
	Address string `yaml:"address" json:"address"`
	// ReusePort binds the address with SO_REUSEPORT, so that other
	// processes (another proxy's instances) may serve the same port. Off,
	// an address that is in use is an error at start. Either way a reload
	// that keeps the address keeps the socket.
	ReusePort bool `yaml:"reuse_port,omitempty" json:"reuse_port,omitempty"`
	// TrafficDirection is "inbound" (traffic to the service this proxy
	// stands before), "outbound" (its calls to others) or empty, as
	// Envoy's listener traffic_direction; filters read it as the
	// listener_direction property. A sidecar sets it on its listeners.
	TrafficDirection string `yaml:"traffic_direction,omitempty" json:"traffic_direction,omitempty"`
	// TrustedProxies are CIDRs whose X-Forwarded-* headers are kept and
	// extended. From any other peer they are dropped and set anew.
	TrustedProxies []string `yaml:"trusted_proxies,omitempty" json:"trusted_proxies,omitempty"`
	// MaxRequestHeaderBytes bounds the request line and headers; a larger
	// request gets 431. Zero means 64 KiB.
	MaxRequestHeaderBytes int `yaml:"max_request_header_bytes,omitempty" json:"max_request_header_bytes,omitempty"`
	// MaxRequestBodyBytes bounds a request body; a larger one gets 413.
	// Zero means no limit (bodies are streamed).
	MaxRequestBodyBytes int64 `yaml:"max_request_body_bytes,omitempty" json:"max_request_body_bytes,omitempty"`
	// IdleTimeout closes a keep-alive connection with no request. Zero means 60s.
	IdleTimeout Duration `yaml:"idle_timeout,omitempty" json:"idle_timeout,omitempty"`
	// WriteTimeout bounds how long a write to a client may make no
	// progress: a client that stops reading its response is cut off,
	// releasing the upstream connection its request holds. Zero means 60s.
	WriteTimeout Duration `yaml:"write_timeout,omitempty" json:"write_timeout,omitempty"`
	// RequestIDHeader names the request id header; empty means x-request-id.
	RequestIDHeader string `yaml:"request_id_header,omitempty" json:"request_id_header,omitempty"`
	// HeaderReadTimeout bounds reading a request's line and headers, from
	// its first byte (from the connection's start for the first request,
	// TLS handshake included): a client trickling headers (slowloris) is
	// cut off. Zero means 60s.
	HeaderReadTimeout Duration `yaml:"header_read_timeout,omitempty" json:"header_read_timeout,omitempty"`
	// BodyReadTimeout bounds reading a request's body once its headers are
	// in. Zero means 60s.
	BodyReadTimeout Duration `yaml:"body_read_timeout,omitempty" json:"body_read_timeout,omitempty"`
	// MaxConnectionAge closes a keep-alive connection after the first
	// response once it is this old. Zero means no limit.
	MaxConnectionAge Duration `yaml:"max_connection_age,omitempty" json:"max_connection_age,omitempty"`
	// TLS terminates TLS on the listener; nil means cleartext.
	TLS *ListenerTLS `yaml:"tls,omitempty" json:"tls,omitempty"`
	// HTTP2 configures HTTP/2; nil means h2 by ALPN on TLS and no h2c.
	HTTP2 *ListenerHTTP2 `yaml:"http2,omitempty" json:"http2,omitempty"`
	// HTTP3 serves HTTP/3 on the same port over UDP; nil means off.
	HTTP3 *ListenerHTTP3 `yaml:"http3,omitempty" json:"http3,omitempty"`
	// TCPProxy makes the listener carry opaque TCP to a cluster, through
	// network (L4) Wasm filters, as Envoy's tcp_proxy; nil means the
	// listener serves HTTP. A TCP listener has no virtual hosts, HTTP/2
	// or HTTP/3.
	TCPProxy *TCPProxy `yaml:"tcp_proxy,omitempty" json:"tcp_proxy,omitempty"`
}

// TCPProxy is what a TCP listener does with each connection: it opens
// one to an endpoint of Cluster and copies bytes both ways, through
// Filters.
type TCPProxy struct {
	Cluster string `yaml:"cluster" json:"cluster"`
	// Filters are network filters: Wasm plugins called with the
	// connection's bytes (proxy_on_new_connection,
	// proxy_on_downstream_data, proxy_on_upstream_data, ...), in order
	// for the client's bytes and in reverse order for the upstream's, as
	// Envoy orders read and write filters.
	Filters []FilterRef `yaml:"filters,omitempty" json:"filters,omitempty"`
	// IdleTimeout closes a connection on which neither side sent anything
	// for this long. Zero means one hour, as Envoy's tcp_proxy.
	IdleTimeout Duration `yaml:"idle_timeout,omitempty" json:"idle_timeout,omitempty"`
}

// VirtualHost groups routes under a set of domains.
type VirtualHost struct {
	Name string `yaml:"name" json:"name"`
	// Domains are matched against the Host header (port stripped): exact
	// names, "*.suffix" wildcards (longest suffix wins), "suffix.*" prefix
	// wildcards, or "*" for any host. Exact beats wildcard beats "*".
	Domains []string `yaml:"domains" json:"domains"`
	// Listeners restricts the virtual host to these listeners; empty means all.
	Listeners []string `yaml:"listeners,omitempty" json:"listeners,omitempty"`
	// Routes are tried in order; the first that matches wins.
	Routes []Route `yaml:"routes" json:"routes"`
	// RequestHeaders and ResponseHeaders apply to every route, before the
	// route's own mutations.
	RequestHeaders  HeaderMutation `yaml:"request_headers,omitempty" json:"request_headers,omitempty"`
	ResponseHeaders HeaderMutation `yaml:"response_headers,omitempty" json:"response_headers,omitempty"`
	// Filters run for every route of the virtual host, before the route's.
	Filters []FilterRef `yaml:"filters,omitempty" json:"filters,omitempty"`
	// Retry is the retry policy of routes that set none.
	Retry *RetryPolicy `yaml:"retry_policy,omitempty" json:"retry_policy,omitempty"`
	// RateLimit is a token bucket shared by all the virtual host's routes,
	// checked before a route's own.
	RateLimit *RateLimit `yaml:"rate_limit,omitempty" json:"rate_limit,omitempty"`
}

// Route is one match and one action.
type Route struct {
	// Name labels the route in metrics and logs; empty means "<vhost>-<index>".
	Name  string     `yaml:"name,omitempty" json:"name,omitempty"`
	Match RouteMatch `yaml:"match,omitempty" json:"match,omitempty"`

	// Exactly one action: Cluster, WeightedClusters, Redirect or DirectResponse.
	Cluster          string            `yaml:"cluster,omitempty" json:"cluster,omitempty"`
	WeightedClusters []WeightedCluster `yaml:"weighted_clusters,omitempty" json:"weighted_clusters,omitempty"`
	Redirect         *Redirect         `yaml:"redirect,omitempty" json:"redirect,omitempty"`
	DirectResponse   *DirectResponse   `yaml:"direct_response,omitempty" json:"direct_response,omitempty"`

	// PrefixRewrite replaces the matched prefix (needs match.prefix).
	PrefixRewrite string `yaml:"prefix_rewrite,omitempty" json:"prefix_rewrite,omitempty"`
	// RegexRewrite rewrites the path with an RE2 pattern and substitution.
	RegexRewrite *RegexRewrite `yaml:"regex_rewrite,omitempty" json:"regex_rewrite,omitempty"`
	// HostRewrite sets the Host header sent upstream.
	HostRewrite string `yaml:"host_rewrite,omitempty" json:"host_rewrite,omitempty"`

	RequestHeaders  HeaderMutation `yaml:"request_headers,omitempty" json:"request_headers,omitempty"`
	ResponseHeaders HeaderMutation `yaml:"response_headers,omitempty" json:"response_headers,omitempty"`

	// Timeout bounds the whole upstream exchange. Zero means 15s.
	Timeout Duration `yaml:"timeout,omitempty" json:"timeout,omitempty"`

	// Filters run in order after the virtual host's.
	Filters []FilterRef `yaml:"filters,omitempty" json:"filters,omitempty"`
	// Retry sends failed requests again; nil means the virtual host's
	// policy, if any.
	Retry *RetryPolicy `yaml:"retry_policy,omitempty" json:"retry_policy,omitempty"`
	// RateLimit is the route's own token bucket.
	RateLimit *RateLimit `yaml:"rate_limit,omitempty" json:"rate_limit,omitempty"`
	// Fault injects delays and errors into a share of the route's
	// requests before they are forwarded, as Envoy's fault filter: to test
	// how callers bear a slow or failing service.
	Fault *Fault `yaml:"fault,omitempty" json:"fault,omitempty"`
	// Mirrors copy a share of the route's requests to other clusters, as
	// Envoy's request_mirror_policies (Istio's mirror): to try a new
	// version on real traffic without its answers reaching anyone.
	Mirrors []Mirror `yaml:"mirrors,omitempty" json:"mirrors,omitempty"`
	// Metadata is data for filters (route_metadata).
	Metadata *Metadata `yaml:"metadata,omitempty" json:"metadata,omitempty"`
}

// RouteMatch says which requests a route takes. All given conditions must
// hold. With no path condition, every path matches.
type RouteMatch struct {
	// At most one of Path (exact), Prefix and PathRegex (RE2, whole path).
	Path      string `yaml:"path,omitempty" json:"path,omitempty"`
	Prefix    string `yaml:"prefix,omitempty" json:"prefix,omitempty"`
	PathRegex string `yaml:"path_regex,omitempty" json:"path_regex,omitempty"`
	// CaseInsensitive makes Path and Prefix compare ASCII case-insensitively.
	CaseInsensitive bool `yaml:"case_insensitive,omitempty" json:"case_insensitive,omitempty"`

	Headers []HeaderMatcher `yaml:"headers,omitempty" json:"headers,omitempty"`
	Query   []QueryMatcher  `yaml:"query,omitempty" json:"query,omitempty"`
	// Methods, if any, must contain the request method.
	Methods []string `yaml:"methods,omitempty" json:"methods,omitempty"`
}

// HeaderMatcher tests one request header. Exactly one of Exact, Prefix,
// Regex, Present and Absent is set. Invert negates the result.
type HeaderMatcher struct {
	Name    string `yaml:"name" json:"name"`
	Exact   string `yaml:"exact,omitempty" json:"exact,omitempty"`
	Prefix  string `yaml:"prefix,omitempty" json:"prefix,omitempty"`
	Regex   string `yaml:"regex,omitempty" json:"regex,omitempty"`
	Present bool   `yaml:"present,omitempty" json:"present,omitempty"`
	Absent  bool   `yaml:"absent,omitempty" json:"absent,omitempty"`
	Invert  bool   `yaml:"invert,omitempty" json:"invert,omitempty"`
}

// QueryMatcher tests one query parameter. Exactly one of Exact, Prefix,
// Regex and Present is set.
type QueryMatcher struct {
	Name    string `yaml:"name" json:"name"`
	Exact   string `yaml:"exact,omitempty" json:"exact,omitempty"`
	Prefix  string `yaml:"prefix,omitempty" json:"prefix,omitempty"`
	Regex   string `yaml:"regex,omitempty" json:"regex,omitempty"`
	Present bool   `yaml:"present,omitempty" json:"present,omitempty"`
}

// WeightedCluster is one branch of a traffic split.
type WeightedCluster struct {
	Name   string `yaml:"name" json:"name"`
	Weight int    `yaml:"weight" json:"weight"`
}

// Redirect answers with a redirect built from the request. Unset parts keep
// the request's.
type Redirect struct {
	Scheme string `yaml:"scheme,omitempty" json:"scheme,omitempty"`
	Host   string `yaml:"host,omitempty" json:"host,omitempty"`
	Port   int    `yaml:"port,omitempty" json:"port,omitempty"`
	// Path replaces the whole path; PrefixRewrite replaces the matched prefix.
	Path          string `yaml:"path,omitempty" json:"path,omitempty"`
	PrefixRewrite string `yaml:"prefix_rewrite,omitempty" json:"prefix_rewrite,omitempty"`
	StripQuery    bool   `yaml:"strip_query,omitempty" json:"strip_query,omitempty"`
	// Status is 301, 302, 303, 307 or 308. Zero means 301.
	Status int `yaml:"status,omitempty" json:"status,omitempty"`
}

// DirectResponse answers without an upstream.
type DirectResponse struct {
	Status  int      `yaml:"status" json:"status"`
	Body    string   `yaml:"body,omitempty" json:"body,omitempty"`
	Headers []Header `yaml:"headers,omitempty" json:"headers,omitempty"`
}

// RegexRewrite replaces every match of Pattern in the path with
// Substitution ($1 style group references).
type RegexRewrite struct {
	Pattern      string `yaml:"pattern" json:"pattern"`
	Substitution string `yaml:"substitution" json:"substitution"`
}

// Header is a name and a value.
type Header struct {
	Name  string `yaml:"name" json:"name"`
	Value string `yaml:"value" json:"value"`
}

// HeaderMutation changes headers: Remove first, then Set (replacing), then
// Add (appending).
type HeaderMutation struct {
	Add    []Header `yaml:"add,omitempty" json:"add,omitempty"`
	Set    []Header `yaml:"set,omitempty" json:"set,omitempty"`
	Remove []string `yaml:"remove,omitempty" json:"remove,omitempty"`
}

// IsZero reports whether the mutation changes nothing.
func (m HeaderMutation) IsZero() bool {
	return len(m.Add) == 0 && len(m.Set) == 0 && len(m.Remove) == 0
}

// Cluster is a set of upstream endpoints and how to reach them.
type Cluster struct {
	Name string `yaml:"name" json:"name"`
	// Metadata is data for filters (cluster_metadata).
	Metadata *Metadata `yaml:"metadata,omitempty" json:"metadata,omitempty"`
	// Discovery is "static" (the default: Endpoints as written) or
	// "registry" (endpoints registered with the control plane under leases;
	// the proxy receives them filled into Endpoints).
	Discovery string     `yaml:"discovery,omitempty" json:"discovery,omitempty"`
	Endpoints []Endpoint `yaml:"endpoints" json:"endpoints"`
	// LBPolicy is round_robin (weights honoured by smooth weighted round
	// robin), least_request (power of two choices), random, ring_hash or
	// maglev. Empty means round_robin.
	LBPolicy string `yaml:"lb_policy,omitempty" json:"lb_policy,omitempty"`
	// HashPolicy says what ring_hash and maglev hash on.
	HashPolicy *HashPolicy `yaml:"hash_policy,omitempty" json:"hash_policy,omitempty"`
	// RingSize is the number of points on a ring_hash ring. Zero means 1024
	// per endpoint, at most 8M.
	RingSize int `yaml:"ring_size,omitempty" json:"ring_size,omitempty"`

	// ConnectTimeout bounds dialing an endpoint. Zero means 5s.
	ConnectTimeout Duration `yaml:"connect_timeout,omitempty" json:"connect_timeout,omitempty"`
	// MaxConnectionsPerEndpoint bounds the pool of each endpoint. Zero means 1024.
	MaxConnectionsPerEndpoint int `yaml:"max_connections_per_endpoint,omitempty" json:"max_connections_per_endpoint,omitempty"`
	// IdleTimeout closes a pooled connection unused for this long. Zero means 60s.
	IdleTimeout Duration `yaml:"idle_timeout,omitempty" json:"idle_timeout,omitempty"`
	// HealthCheck probes the endpoints; nil means no active health checks.
	HealthCheck *HealthCheck `yaml:"health_check,omitempty" json:"health_check,omitempty"`
	// OutlierDetection ejects failing endpoints; nil means none.
	OutlierDetection *OutlierDetection `yaml:"outlier_detection,omitempty" json:"outlier_detection,omitempty"`
	// CircuitBreakers bound connections, pending requests, requests and
	// retries; nil means no bound but 3 retries in flight.
	CircuitBreakers *CircuitBreakers `yaml:"circuit_breakers,omitempty" json:"circuit_breakers,omitempty"`
	// PanicThreshold is a percentage: when fewer of the endpoints are
	// healthy, requests are balanced over all of them. Nil means 50; 0
	// never panics (no healthy endpoint means 503).
	PanicThreshold *int `yaml:"panic_threshold,omitempty" json:"panic_threshold,omitempty"`
	// Protocol is http1 (the default), http2 (h2 over TLS, h2c without),
	// which gRPC needs, or downstream: each request in the protocol it
	// came in on (HTTP/2 and HTTP/3 over HTTP/2, HTTP/1.1 over HTTP/1.1).
	Protocol string `yaml:"protocol,omitempty" json:"protocol,omitempty"`
	// TLS is TLS to the endpoints; nil means cleartext.
	TLS *ClusterTLS `yaml:"tls,omitempty" json:"tls,omitempty"`
}

// Endpoint is one upstream host:port.
type Endpoint struct {
	Address string `yaml:"address" json:"address"`
	// Weight is 1 to 10000. Zero means 1.
	Weight int `yaml:"weight,omitempty" json:"weight,omitempty"`
}

// Fault is a route's fault injection: a delay, an abort, or both (the
// delay first).
type Fault struct {
	Delay *FaultDelay `yaml:"delay,omitempty" json:"delay,omitempty"`
	Abort *FaultAbort `yaml:"abort,omitempty" json:"abort,omitempty"`
}

// FaultDelay holds Percent of the requests back for Fixed before they are
// forwarded (response flag DI).
type FaultDelay struct {
	Fixed   Duration `yaml:"fixed" json:"fixed"`
	Percent float64  `yaml:"percent" json:"percent"`
}

// FaultAbort answers Percent of the requests with Status instead of
// forwarding them (response flag FI).
type FaultAbort struct {
	Status  int     `yaml:"status" json:"status"`
	Percent float64 `yaml:"percent" json:"percent"`
}

// Mirror is one cluster a route copies requests to. The copy goes with
// "-shadow" added to its Host (before the port), after the route's
// rewrites; nothing waits for it and its answer is dropped.
type Mirror struct {
	Cluster string `yaml:"cluster" json:"cluster"`
	// Percent of the route's requests copied, 0 to 100; nil copies every
	// one.
	Percent *float64 `yaml:"percent,omitempty" json:"percent,omitempty"`
}

// HashPolicy names the request attribute a consistent hash uses. Exactly one
// of Header, Cookie and SourceIP is set.
type HashPolicy struct {
	Header   string `yaml:"header,omitempty" json:"header,omitempty"`
	Cookie   string `yaml:"cookie,omitempty" json:"cookie,omitempty"`
	SourceIP bool   `yaml:"source_ip,omitempty" json:"source_ip,omitempty"`
}

// Discovery modes.
const (
	DiscoveryStatic   = "static"
	DiscoveryRegistry = "registry"
)

// Load-balancing policies.
const (
	LBRoundRobin   = "round_robin"
	LBLeastRequest = "least_request"
	LBRandom       = "random"
	LBRingHash     = "ring_hash"
	LBMaglev       = "maglev"
)

// DefaultAccessLogFields are the access log fields when none are configured.
var DefaultAccessLogFields = []string{
	"start_time", "request_id", "downstream_remote_address", "method", "authority", "path",
	"protocol", "status", "response_flags", "bytes_received", "bytes_sent", "duration_ms",
	"upstream_cluster", "upstream_host", "route_name", "user_agent",
}

// AccessLogFields lists every field the access log knows.
var AccessLogFields = map[string]bool{
	"start_time": true, "request_id": true, "downstream_remote_address": true, "method": true,
	"authority": true, "path": true, "protocol": true, "status": true, "response_flags": true,
	"bytes_received": true, "bytes_sent": true, "duration_ms": true, "upstream_cluster": true,
	"upstream_host": true, "route_name": true, "user_agent": true, "x_forwarded_for": true,
	"listener": true, "virtual_host": true, "details": true,
}
