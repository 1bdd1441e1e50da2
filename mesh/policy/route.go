package policy

import (
	"strings"

	"github.com/wasmgate/wasmgate/config"
)

// ServiceRoute routes the calls to one service of the mesh between the
// versions of its endpoints (the sidecars' version setting), as Istio's
// VirtualService with a DestinationRule's subsets, or Gateway API's
// HTTPRoute with weighted backends: a canary release, a header that pins
// a tester to the new version, a timeout or retries of the calls. Every
// sidecar that calls the service follows it; the first rule whose match
// takes a call routes it, and a call no rule takes goes to any endpoint,
// as without a route. Its traffic policy says how the callers reach the
// service's endpoints, as a DestinationRule's. One route per service.
type ServiceRoute struct {
	Name      string `json:"name" yaml:"name"`
	Namespace string `json:"namespace" yaml:"namespace"`
	// Service is the destination whose calls it routes (in Namespace).
	Service string      `json:"service" yaml:"service"`
	Rules   []RouteRule `json:"rules,omitempty" yaml:"rules,omitempty"`
	// TrafficPolicy, when set, replaces the mesh's defaults for the
	// calls to the service.
	TrafficPolicy *TrafficPolicy `json:"traffic_policy,omitempty" yaml:"traffic_policy,omitempty"`
	// Subsets give versions a traffic policy of their own, over the
	// route's (a DestinationRule's subsets[].trafficPolicy).
	Subsets []RouteSubset `json:"subsets,omitempty" yaml:"subsets,omitempty"`
}

// RouteSubset is one version's traffic policy: each field it sets
// replaces the route's, for the calls a backend of that version takes.
type RouteSubset struct {
	Version       string         `json:"version" yaml:"version"`
	TrafficPolicy *TrafficPolicy `json:"traffic_policy" yaml:"traffic_policy"`
}

// TrafficPolicy is how the callers of a service reach its endpoints, as
// Istio's DestinationRule trafficPolicy: each field set replaces the
// mesh's default, for every version.
type TrafficPolicy struct {
	// LoadBalancer is round_robin, least_request (the mesh's), random,
	// ring_hash or maglev; the last two hash on HashPolicy.
	LoadBalancer string             `json:"load_balancer,omitempty" yaml:"load_balancer,omitempty"`
	HashPolicy   *config.HashPolicy `json:"hash_policy,omitempty" yaml:"hash_policy,omitempty"`
	// OutlierDetection ejects failing endpoints (the mesh's: 5 gateway
	// failures in a row, 10 s, at most half of them).
	OutlierDetection *config.OutlierDetection `json:"outlier_detection,omitempty" yaml:"outlier_detection,omitempty"`
	// ConnectionPool bounds the connections and requests to the service
	// from each caller (the mesh's: 4096 of each, 64 retries).
	ConnectionPool *config.CircuitBreakers `json:"connection_pool,omitempty" yaml:"connection_pool,omitempty"`
	// ConnectTimeout bounds a connection to an endpoint; zero keeps 5 s.
	ConnectTimeout config.Duration `json:"connect_timeout,omitempty" yaml:"connect_timeout,omitempty"`
}

// RouteRule is one rule of a ServiceRoute.
type RouteRule struct {
	// Match takes the calls of the rule; nil takes every call.
	Match *RouteMatch `json:"match,omitempty" yaml:"match,omitempty"`
	// Backends share the calls by weight; a backend's version is a set
	// of the service's endpoints ("" is every one of them).
	Backends []RouteBackend `json:"backends" yaml:"backends"`
	// Timeout bounds a call, retries included; zero keeps the mesh's.
	Timeout config.Duration `json:"timeout,omitempty" yaml:"timeout,omitempty"`
	// Retries, when set, replaces the mesh's retries of the calls.
	Retries *RouteRetries `json:"retries,omitempty" yaml:"retries,omitempty"`
	// Fault injects delays and errors into a share of the calls, at the
	// caller's sidecar (Istio's fault injection).
	Fault *config.Fault `json:"fault,omitempty" yaml:"fault,omitempty"`
	// Rewrite changes a call before it goes to the service (Istio's
	// rewrite).
	Rewrite *RouteRewrite `json:"rewrite,omitempty" yaml:"rewrite,omitempty"`
	// Mirror copies a share of the rule's calls to a version of the
	// service, their answers dropped (Istio's mirror and
	// mirrorPercentage): to try a release on real calls.
	Mirror *RouteMirror `json:"mirror,omitempty" yaml:"mirror,omitempty"`
	// Headers change the call's request headers on the way to the service
	// and its response's on the way back (Istio's headers).
	Headers *RouteHeaders `json:"headers,omitempty" yaml:"headers,omitempty"`
	// Redirect answers the rule's calls with a redirect at the caller's
	// sidecar instead of sending them (Istio's redirect); a rule has
	// backends or a redirect.
	Redirect *config.Redirect `json:"redirect,omitempty" yaml:"redirect,omitempty"`
}

// RouteHeaders are a rule's header changes, applied as a proxy route's
// request_headers and response_headers: remove, then set, then add.
type RouteHeaders struct {
	Request  config.HeaderMutation `json:"request,omitempty" yaml:"request,omitempty"`
	Response config.HeaderMutation `json:"response,omitempty" yaml:"response,omitempty"`
}

// RouteRewrite changes a call on its way to the service.
type RouteRewrite struct {
	// URI replaces the part of the path the rule matched: its prefix, the
	// whole path for a path match, or "/" when the rule matches no path.
	URI string `json:"uri,omitempty" yaml:"uri,omitempty"`
	// Authority replaces the Host the service's app sees.
	Authority string `json:"authority,omitempty" yaml:"authority,omitempty"`
}

// RouteMirror sends copies of a rule's calls to one version of the
// service, with "-shadow" added to their Host.
type RouteMirror struct {
	Version string `json:"version" yaml:"version"`
	// Percent of the rule's calls copied, 0 to 100; nil copies every one.
	Percent *float64 `json:"percent,omitempty" yaml:"percent,omitempty"`
}

// RouteMatch is what a call must have for a rule to take it: all the
// conditions given.
type RouteMatch struct {
	// Prefix, Path (exact) or PathRegex (RE2, the whole path), at most
	// one.
	Prefix    string `json:"prefix,omitempty" yaml:"prefix,omitempty"`
	Path      string `json:"path,omitempty" yaml:"path,omitempty"`
	PathRegex string `json:"path_regex,omitempty" yaml:"path_regex,omitempty"`
	// Headers are matched as a proxy route's (exact, prefix, regex,
	// present or absent; invert).
	Headers []config.HeaderMatcher `json:"headers,omitempty" yaml:"headers,omitempty"`
	// Methods, when set, must hold the call's method (upper case).
	Methods []string `json:"methods,omitempty" yaml:"methods,omitempty"`
	// QueryParams are matched as a proxy route's query (exact, prefix,
	// regex or present), each by name.
	QueryParams []config.QueryMatcher `json:"query_params,omitempty" yaml:"query_params,omitempty"`
}

// Config is the proxy's match of m: every call when m sets no path.
func (m *RouteMatch) Config() config.RouteMatch {
	cm := config.RouteMatch{Prefix: m.Prefix, Path: m.Path, PathRegex: m.PathRegex, Headers: m.Headers, Query: m.QueryParams, Methods: m.Methods}
	if m.Prefix == "" && m.Path == "" && m.PathRegex == "" {
		cm.Prefix = "/"
	}
	return cm
}

// RouteBackend is a share of a rule's calls.
type RouteBackend struct {
	// Version is the version of the endpoints that take the share; empty
	// means every endpoint of the service.
	Version string `json:"version,omitempty" yaml:"version,omitempty"`
	// Weight is the share, relative to the rule's other backends, 0 to
	// 10000; zero in a rule of one backend means all of it.
	Weight int `json:"weight,omitempty" yaml:"weight,omitempty"`
}

// RouteRetries retry the calls of a rule that fail.
type RouteRetries struct {
	// Attempts is how many times a call is sent again, 1 to 10.
	Attempts int `json:"attempts" yaml:"attempts"`
	// On lists the conditions, as a proxy route's retry_on; empty keeps
	// the mesh's (connect-failure, reset, gateway-error).
	On []string `json:"on,omitempty" yaml:"on,omitempty"`
	// PerTryTimeout bounds one attempt; zero means the rule's timeout.
	PerTryTimeout config.Duration `json:"per_try_timeout,omitempty" yaml:"per_try_timeout,omitempty"`
	// StatusCodes are answers retried as well, whatever On says (Envoy's
	// retriable-status-codes; App Mesh's client-error is 409).
	StatusCodes []int `json:"status_codes,omitempty" yaml:"status_codes,omitempty"`
}

// Scope implements the scope of a mesh resource: the route's service.
func (r *ServiceRoute) Scope() (namespace, service, name string) {
	return r.Namespace, r.Service, r.Name
}

// Target is the registry name of the service it routes,
// "SERVICE.NAMESPACE".
func (r *ServiceRoute) Target() string { return r.Service + "." + r.Namespace }

// Normalize gives a rule of one backend the whole share, a redirect
// without a status 301, and methods in upper case, in place.
func (r *ServiceRoute) Normalize() {
	for i := range r.Rules {
		if b := r.Rules[i].Backends; len(b) == 1 && b[0].Weight == 0 {
			b[0].Weight = 1
		}
		if rd := r.Rules[i].Redirect; rd != nil && rd.Status == 0 {
			rd.Status = 301
		}
		if m := r.Rules[i].Match; m != nil {
			for k := range m.Methods {
				m.Methods[k] = strings.ToUpper(m.Methods[k])
			}
		}
	}
}

// maxRouteRules bounds a route's rules.
const maxRouteRules = 64

// Validate checks one route on its own; its errors are a config.Errors
// whose paths start inside it ("rules[0].backends").
func (r *ServiceRoute) Validate() error {
	c := &checker{}
	checkScope(c, "", r.Name, r.Namespace, r.Service)
	switch {
	case r.Service == "":
		c.add("service", "is required: the service whose calls the route takes")
	case r.Namespace == RootNamespace:
		c.add("namespace", "must be the service's namespace, not %s", RootNamespace)
	}
	switch {
	case len(r.Rules) == 0 && r.TrafficPolicy == nil && len(r.Subsets) == 0:
		c.add("rules", "is empty; give at least one rule, or a traffic_policy")
	case len(r.Rules) > maxRouteRules:
		c.add("rules", "has %d rules; at most %d", len(r.Rules), maxRouteRules)
	}
	for i := range r.Rules {
		r.Rules[i].check(c, at("rules", i))
	}
	if tp := r.TrafficPolicy; tp != nil {
		tp.check(c, "traffic_policy")
	}
	versions := map[string]int{}
	for i, s := range r.Subsets {
		sp := at("subsets", i)
		if !config.IsVersion(s.Version) {
			c.add(sp+".version", "%q is not a version (lowercase letters, digits, '-' and '.'; at most 63)", s.Version)
		} else if j, dup := versions[s.Version]; dup {
			c.add(sp+".version", "%q is also subsets[%d]'s", s.Version, j)
		} else {
			versions[s.Version] = i
		}
		if s.TrafficPolicy == nil {
			c.add(sp+".traffic_policy", "is required: what the version's calls do differently")
		} else {
			s.TrafficPolicy.check(c, sp+".traffic_policy")
		}
	}
	return c.err()
}

func (tp *TrafficPolicy) check(c *checker, path string) {
	switch tp.LoadBalancer {
	case "", config.LBRoundRobin, config.LBLeastRequest, config.LBRandom:
		if tp.HashPolicy != nil {
			c.add(path+".hash_policy", "is for ring_hash and maglev only")
		}
	case config.LBRingHash, config.LBMaglev:
		if h := tp.HashPolicy; h == nil {
			c.add(path+".hash_policy", "is required with %s: a header, a cookie or source_ip", tp.LoadBalancer)
		} else if n := btoi(h.Header != "") + btoi(h.Cookie != "") + btoi(h.SourceIP); n != 1 {
			c.add(path+".hash_policy", "sets %d of header, cookie and source_ip; give one", n)
		}
	default:
		c.add(path+".load_balancer", "%q is not a load balancer (round_robin, least_request, random, ring_hash, maglev)", tp.LoadBalancer)
	}
	if o := tp.OutlierDetection; o != nil {
		op := path + ".outlier_detection"
		for _, f := range []struct {
			name string
			v    int
		}{{"consecutive_5xx", o.Consecutive5xx}, {"consecutive_gateway_failure", o.ConsecutiveGatewayFailure}} {
			if f.v < 0 {
				c.add(op+"."+f.name, "must not be negative")
			}
		}
		if o.Consecutive5xx == 0 && o.ConsecutiveGatewayFailure == 0 {
			c.add(op, "sets neither consecutive_5xx nor consecutive_gateway_failure; leave it out to keep the mesh's")
		}
		if o.MaxEjectionPercent < 0 || o.MaxEjectionPercent > 100 {
			c.add(op+".max_ejection_percent", "must be between 0 and 100, not %d", o.MaxEjectionPercent)
		}
		if o.BaseEjectionTime < 0 || o.MaxEjectionTime < 0 {
			c.add(op, "ejection times must not be negative")
		}
	}
	if p := tp.ConnectionPool; p != nil {
		for _, f := range []struct {
			name string
			v    int
		}{{"max_connections", p.MaxConnections}, {"max_pending_requests", p.MaxPendingRequests}, {"max_requests", p.MaxRequests}, {"max_retries", p.MaxRetries}} {
			if f.v < 0 {
				c.add(path+".connection_pool."+f.name, "must not be negative")
			}
		}
	}
	if tp.ConnectTimeout < 0 {
		c.add(path+".connect_timeout", "must not be negative")
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

func (rr *RouteRule) check(c *checker, path string) {
	if m := rr.Match; m != nil {
		mp := path + ".match"
		for _, p := range [][2]string{{"prefix", m.Prefix}, {"path", m.Path}} {
			if p[1] != "" && !strings.HasPrefix(p[1], "/") {
				c.add(mp+"."+p[0], "%q must start with /", p[1])
			}
		}
		if btoi(m.Prefix != "")+btoi(m.Path != "")+btoi(m.PathRegex != "") > 1 {
			c.add(mp, "sets more than one of prefix, path and path_regex; give one")
		}
		for i := range m.Headers {
			c.addAll(at(mp+".headers", i), m.Headers[i].Validate())
		}
		for i := range m.QueryParams {
			c.addAll(at(mp+".query_params", i), m.QueryParams[i].Validate())
		}
		// The pattern and methods as a proxy route's match checks them.
		rest := config.RouteMatch{PathRegex: m.PathRegex, Methods: m.Methods}
		c.addAll(mp, rest.Validate())
	}
	if rd := rr.Redirect; rd != nil {
		if len(rr.Backends) > 0 {
			c.add(path, "sets both backends and redirect; give one")
		}
		if rr.Rewrite != nil || rr.Mirror != nil || rr.Retries != nil || rr.Fault != nil || rr.Timeout != 0 {
			c.add(path+".redirect", "answers the call at the caller's sidecar: rewrite, mirror, retries, fault and timeout are for calls sent on")
		}
		c.addAll(path+".redirect", rd.Validate())
		if rd.PrefixRewrite != "" && (rr.Match == nil || rr.Match.Prefix == "") {
			c.add(path+".redirect.prefix_rewrite", "needs match.prefix")
		}
	} else if len(rr.Backends) == 0 {
		c.add(path+".backends", "is empty; give at least one backend, or a redirect")
	}
	if h := rr.Headers; h != nil {
		c.addAll(path+".headers.request", h.Request.Validate())
		c.addAll(path+".headers.response", h.Response.Validate())
	}
	total, versions := 0, map[string]int{}
	for i, b := range rr.Backends {
		bp := at(path+".backends", i)
		if b.Version != "" && !config.IsVersion(b.Version) {
			c.add(bp+".version", "%q is not a version (lowercase letters, digits, '-' and '.'; at most 63)", b.Version)
		}
		if j, dup := versions[b.Version]; dup {
			c.add(bp+".version", "%q is also backends[%d]'s", b.Version, j)
		}
		versions[b.Version] = i
		if b.Weight < 0 || b.Weight > 10000 {
			c.add(bp+".weight", "must be between 0 and 10000, not %d", b.Weight)
		}
		total += b.Weight
	}
	if len(rr.Backends) > 0 && total == 0 {
		c.add(path+".backends", "every weight is 0; give one a share")
	}
	if rr.Timeout < 0 {
		c.add(path+".timeout", "must not be negative")
	}
	if rr.Fault != nil {
		c.addAll(path+".fault", rr.Fault.Validate())
	}
	if rw := rr.Rewrite; rw != nil {
		switch {
		case rw.URI == "" && rw.Authority == "":
			c.add(path+".rewrite", "sets neither uri nor authority")
		case rw.URI != "" && (!strings.HasPrefix(rw.URI, "/") || strings.ContainsAny(rw.URI, "\r\n\x00 ")):
			c.add(path+".rewrite.uri", "%q is not a path: it must start with / and hold no space or control character", rw.URI)
		}
		if rw.Authority != "" && strings.ContainsAny(rw.Authority, "/ \t\r\n\x00") {
			c.add(path+".rewrite.authority", "%q is not a host name", rw.Authority)
		}
	}
	if m := rr.Mirror; m != nil {
		if !config.IsVersion(m.Version) {
			c.add(path+".mirror.version", "%q is not a version (lowercase letters, digits, '-' and '.'; at most 63): a mirror copies calls to one version of the service", m.Version)
		}
		if m.Percent != nil && (*m.Percent < 0 || *m.Percent > 100) {
			c.add(path+".mirror.percent", "must be between 0 and 100, not %v", *m.Percent)
		}
	}
	if rt := rr.Retries; rt != nil {
		if rt.Attempts < 1 || rt.Attempts > 10 {
			c.add(path+".retries.attempts", "must be between 1 and 10, not %d", rt.Attempts)
		}
		for i, on := range rt.On {
			switch on {
			case config.RetryOn5xx, config.RetryOnGatewayError, config.RetryOnReset, config.RetryOnConnectFailure:
			default:
				c.add(at(path+".retries.on", i), "%q is not a retry condition (5xx, gateway-error, reset, connect-failure)", on)
			}
		}
		if rt.PerTryTimeout < 0 {
			c.add(path+".retries.per_try_timeout", "must not be negative")
		}
		for i, code := range rt.StatusCodes {
			if code < 400 || code > 599 {
				c.add(at(path+".retries.status_codes", i), "%d is not a status of a failed call (400 to 599)", code)
			}
		}
	}
}
