package config

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Validate checks every field and every reference between resources. It
// returns nil or an Errors listing every problem, each naming its field
// path. It does not change c; call Normalize first for defaults.
func (c *Config) Validate() error {
	v := &errs{}
	if c.Admin.Address != "off" {
		checkHostPort(v, "admin.address", c.Admin.Address)
	}
	c.validateAccessLog(v)
	c.validateTelemetry(v)
	if c.ShutdownDelay < 0 {
		v.add("shutdown_delay", "must not be negative")
	}
	if c.DrainTimeout < 0 {
		v.add("drain_timeout", "must not be negative")
	}

	listeners := c.validateListeners(v)
	clusters := c.validateClusters(v)
	c.validateProtocols(v)
	c.validateResilience(v)
	plugins := c.validatePlugins(v, clusters)
	c.validateTCPProxies(v, clusters, plugins)
	c.validateVirtualHosts(v, listeners, clusters, plugins)
	return v.err()
}

var namePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$`)

// checkName checks the name of the i-th resource of a kind and records it
// in seen, keeping the index of the first resource with each name.
func checkName(v *errs, path, name string, i int, seen map[string]int, kind string) {
	switch {
	case name == "":
		v.add(path, "is required")
		return
	case !namePattern.MatchString(name):
		v.add(path, "%q is not a valid name (letters, digits, '_', '.', '-'; at most 128; starting with a letter or digit)", name)
	default:
		if first, dup := seen[name]; dup {
			v.add(path, "duplicate %s name %q (first at index %d)", kind, name, first)
		}
	}
	if _, dup := seen[name]; !dup {
		seen[name] = i
	}
}

func checkHostPort(v *errs, path, addr string) {
	if addr == "" {
		v.add(path, "is required")
		return
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		v.add(path, "%q is not host:port", addr)
		return
	}
	if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		v.add(path, "%q has an invalid port", addr)
	}
	if strings.ContainsAny(host, " /\\") {
		v.add(path, "%q has an invalid host", addr)
	}
}

func (c *Config) validateAccessLog(v *errs) {
	dynamic := 0
	for i, f := range c.AccessLog.Fields {
		if name, ok := dynamicField(f); ok {
			dynamic++
			if name == "" {
				v.add(idx("access_log.fields", i), "%q names no header or key", f)
			}
			continue
		}
		if !AccessLogFields[f] {
			v.add(idx("access_log.fields", i), "unknown access log field %q (or request_header.NAME, response_header.NAME, filter_state.KEY)", f)
		}
	}
	if dynamic > 64 {
		v.add("access_log.fields", "at most 64 header and filter state fields, not %d", dynamic)
	}
	if c.AccessLog.BufferEntries < 0 {
		v.add("access_log.buffer_entries", "must not be negative")
	}
}

// dynamicField reads an access log field of the form SOURCE.NAME, where
// SOURCE is request_header, response_header or filter_state.
func dynamicField(f string) (name string, ok bool) {
	for _, src := range []string{"request_header.", "response_header.", "filter_state."} {
		if rest, found := strings.CutPrefix(f, src); found {
			return rest, true
		}
	}
	return "", false
}

func (c *Config) validateListeners(v *errs) map[string]int {
	seen := map[string]int{}
	addrs := map[string]int{}
	if len(c.Listeners) == 0 {
		v.add("listeners", "at least one listener is required")
	}
	for i, l := range c.Listeners {
		p := idx("listeners", i)
		checkName(v, dot(p, "name"), l.Name, i, seen, "listener")
		checkHostPort(v, dot(p, "address"), l.Address)
		if first, dup := addrs[l.Address]; dup && l.Address != "" && !strings.HasSuffix(l.Address, ":0") {
			v.add(dot(p, "address"), "address %q is already used by listeners[%d]", l.Address, first)
		}
		addrs[l.Address] = i
		switch l.TrafficDirection {
		case "", DirectionInbound, DirectionOutbound:
		default:
			v.add(dot(p, "traffic_direction"), "unknown direction %q (want inbound or outbound)", l.TrafficDirection)
		}
		for j, cidr := range l.TrustedProxies {
			if _, err := parsePrefix(cidr); err != nil {
				v.add(idx(dot(p, "trusted_proxies"), j), "%q is not an IP address or CIDR", cidr)
			}
		}
		if l.MaxRequestHeaderBytes < 0 || l.MaxRequestHeaderBytes > 1<<20 {
			v.add(dot(p, "max_request_header_bytes"), "must be between 1 and 1048576")
		}
		if l.MaxRequestBodyBytes < 0 {
			v.add(dot(p, "max_request_body_bytes"), "must not be negative")
		}
		if l.IdleTimeout < 0 {
			v.add(dot(p, "idle_timeout"), "must not be negative")
		}
		if l.WriteTimeout < 0 {
			v.add(dot(p, "write_timeout"), "must not be negative")
		}
		if l.RequestIDHeader != "" && !validHeaderName(l.RequestIDHeader) {
			v.add(dot(p, "request_id_header"), "%q is not a valid header name", l.RequestIDHeader)
		}
	}
	return seen
}

// validateTCPProxies checks the listeners that carry opaque TCP.
func (c *Config) validateTCPProxies(v *errs, clusters, plugins map[string]int) {
	for i, l := range c.Listeners {
		t := l.TCPProxy
		if t == nil {
			continue
		}
		p := dot(idx("listeners", i), "tcp_proxy")
		if t.Cluster == "" {
			v.add(dot(p, "cluster"), "is required")
		} else if _, ok := clusters[t.Cluster]; !ok {
			v.add(dot(p, "cluster"), "unknown cluster %q", t.Cluster)
		}
		for j, f := range t.Filters {
			if f.Native != "" {
				v.add(dot(idx(dot(p, "filters"), j), "native"), "native filters are HTTP filters; a TCP listener takes Wasm plugins only")
			}
		}
		validateFilterRefs(v, dot(p, "filters"), t.Filters, plugins)
		if t.IdleTimeout < 0 {
			v.add(dot(p, "idle_timeout"), "must not be negative")
		}
		if l.HTTP2 != nil {
			v.add(dot(idx("listeners", i), "http2"), "a TCP listener (tcp_proxy) serves no HTTP/2")
		}
		if l.HTTP3 != nil {
			v.add(dot(idx("listeners", i), "http3"), "a TCP listener (tcp_proxy) serves no HTTP/3")
		}
	}
}

// ParsePrefix parses an IP address or a CIDR.
func parsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		return netip.ParsePrefix(s)
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// ParsePrefix parses an IP address or a CIDR, as trusted_proxies takes them.
func ParsePrefix(s string) (netip.Prefix, error) { return parsePrefix(s) }

var lbPolicies = map[string]bool{LBRoundRobin: true, LBLeastRequest: true, LBRandom: true, LBRingHash: true, LBMaglev: true}

func (c *Config) validateClusters(v *errs) map[string]int {
	seen := map[string]int{}
	for i, cl := range c.Clusters {
		p := idx("clusters", i)
		checkName(v, dot(p, "name"), cl.Name, i, seen, "cluster")
		switch cl.Discovery {
		case "", DiscoveryStatic:
			if len(cl.Endpoints) == 0 {
				v.add(dot(p, "endpoints"), "at least one endpoint is required")
			}
		case DiscoveryRegistry:
		default:
			v.add(dot(p, "discovery"), "unknown discovery %q (want static or registry)", cl.Discovery)
		}
		eps := map[string]int{}
		for j, ep := range cl.Endpoints {
			ep := ep
			ePath := idx(dot(p, "endpoints"), j)
			checkHostPort(v, dot(ePath, "address"), ep.Address)
			if first, dup := eps[ep.Address]; dup {
				v.add(dot(ePath, "address"), "duplicate endpoint %q (first at index %d)", ep.Address, first)
			} else {
				eps[ep.Address] = j
			}
			if ep.Weight < 1 || ep.Weight > 10000 {
				v.add(dot(ePath, "weight"), "must be between 1 and 10000, not %d", ep.Weight)
			}
		}
		if !lbPolicies[cl.LBPolicy] {
			v.add(dot(p, "lb_policy"), "unknown policy %q (want round_robin, least_request, random, ring_hash or maglev)", cl.LBPolicy)
		}
		if hp := cl.HashPolicy; hp != nil {
			n := 0
			if hp.Header != "" {
				n++
				if !validHeaderName(hp.Header) {
					v.add(dot(p, "hash_policy.header"), "%q is not a valid header name", hp.Header)
				}
			}
			if hp.Cookie != "" {
				n++
			}
			if hp.SourceIP {
				n++
			}
			if n != 1 {
				v.add(dot(p, "hash_policy"), "exactly one of header, cookie and source_ip is required")
			}
			if cl.LBPolicy != LBRingHash && cl.LBPolicy != LBMaglev {
				v.add(dot(p, "hash_policy"), "is only used by ring_hash and maglev, not %s", cl.LBPolicy)
			}
		}
		if cl.RingSize < 0 || cl.RingSize > 1<<23 {
			v.add(dot(p, "ring_size"), "must be between 1 and 8388608")
		}
		if cl.ConnectTimeout < 0 {
			v.add(dot(p, "connect_timeout"), "must not be negative")
		}
		if cl.IdleTimeout < 0 {
			v.add(dot(p, "idle_timeout"), "must not be negative")
		}
		if cl.MaxConnectionsPerEndpoint < 0 {
			v.add(dot(p, "max_connections_per_endpoint"), "must not be negative")
		}
	}
	return seen
}

var sha256Pattern = regexp.MustCompile(`^[0-9a-f]{64}$`)

// IsSHA256 tells whether s is a module's digest as plugins name one: 64
// lowercase hex digits.
func IsSHA256(s string) bool { return sha256Pattern.MatchString(s) }

// IsVersion reports whether v may label an endpoint's version: 1 to 63
// lowercase letters, digits, '-' and '.', starting and ending with a
// letter or digit, as a Kubernetes label value.
func IsVersion(v string) bool {
	if v == "" || len(v) > 63 {
		return false
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		alnum := c >= 'a' && c <= 'z' || c >= '0' && c <= '9'
		if !alnum && (i == 0 || i == len(v)-1 || c != '-' && c != '.') {
			return false
		}
	}
	return true
}

func (c *Config) validatePlugins(v *errs, clusters map[string]int) map[string]int {
	seen := map[string]int{}
	vms := map[string]int{} // vm_id: the first plugin that names it
	for i, pl := range c.Plugins {
		p := idx("plugins", i)
		checkName(v, dot(p, "name"), pl.Name, i, seen, "plugin")
		if pl.File == "" && pl.SHA256 == "" {
			v.add(p, "one of file and sha256 is required")
		}
		if pl.SHA256 != "" && !sha256Pattern.MatchString(pl.SHA256) {
			v.add(dot(p, "sha256"), "must be 64 lowercase hex digits")
		}
		switch pl.FailurePolicy {
		case FailClosed, FailOpen, FailReload:
		default:
			v.add(dot(p, "failure_policy"), "unknown policy %q (want fail_closed, fail_open or reload)", pl.FailurePolicy)
		}
		if pl.MemoryLimitMB < 0 || pl.MemoryLimitMB > 4096 {
			v.add(dot(p, "memory_limit_mb"), "must be between 1 and 4096")
		}
		if pl.CallTimeout < 0 {
			v.add(dot(p, "call_timeout"), "must not be negative")
		}
		if pl.PoolSize < 0 || pl.PoolSize > 1024 {
			v.add(dot(p, "pool_size"), "must be between 1 and 1024")
		}
		if pl.MaxBodyBytes < 0 {
			v.add(dot(p, "max_body_bytes"), "must not be negative")
		}
		for j, name := range pl.AllowedClusters {
			if _, ok := clusters[name]; !ok {
				v.add(idx(dot(p, "allowed_clusters"), j), "unknown cluster %q", name)
			}
		}
		validateStatsTags(v, dot(p, "stats_tags"), pl.StatsTags)
		if pl.VMID == "" {
			continue
		}
		first, ok := vms[pl.VMID]
		if !ok {
			vms[pl.VMID] = i
			continue
		}
		f := &c.Plugins[first]
		for _, d := range []struct {
			field string
			same  bool
		}{
			{"file", pl.File == f.File},
			{"sha256", pl.SHA256 == f.SHA256},
			{"vm_config", bytes.Equal(pl.VMConfig, f.VMConfig)},
			{"memory_limit_mb", pl.MemoryLimitMB == f.MemoryLimitMB},
			{"pool_size", pl.PoolSize == f.PoolSize},
			{"call_timeout", pl.CallTimeout == f.CallTimeout},
		} {
			if !d.same {
				v.add(dot(p, d.field), "differs from plugins[%d] (%s), which shares vm_id %q: plugins in one VM must agree on it", first, f.Name, pl.VMID)
			}
		}
	}
	return seen
}

// validateStatsTags checks a plugin's stats_tags: a label name each, used
// once, that Prometheus accepts once dots and dashes become '_' (and not
// "plugin", which the proxy sets), and exactly one of a regular expression
// with a capture group and a fixed value.
func validateStatsTags(v *errs, p string, tags []StatsTag) {
	seen := map[string]int{}
	for i, t := range tags {
		tp := idx(p, i)
		label := PromLabel(t.TagName)
		switch {
		case t.TagName == "":
			v.add(dot(tp, "tag_name"), "is required")
		case label == "" || label == "plugin":
			v.add(dot(tp, "tag_name"), "%q is not a label name this proxy can export (letters, digits, '_', '.', '-', not starting with a digit or \"__\", and not \"plugin\")", t.TagName)
		default:
			if first, dup := seen[label]; dup {
				v.add(dot(tp, "tag_name"), "%q names the same label as stats_tags[%d]", t.TagName, first)
			} else {
				seen[label] = i
			}
		}
		switch {
		case (t.Regex == "") == (t.FixedValue == ""):
			v.add(tp, "exactly one of regex and fixed_value is required")
		case t.Regex != "":
			re, err := regexp.Compile(t.Regex)
			if err != nil {
				v.add(dot(tp, "regex"), "%s", strings.TrimPrefix(err.Error(), "error parsing regexp: "))
			} else if re.NumSubexp() == 0 {
				v.add(dot(tp, "regex"), "needs a capture group: the first is cut from the metric's name, the second (or the first) is the value")
			}
		}
	}
}

// PromLabel turns a tag or label key into a Prometheus label name: other
// characters than letters, digits and '_' become '_'. It returns "" for a
// key Prometheus would refuse however written: empty, starting with a
// digit, or with "__" (reserved).
func PromLabel(k string) string {
	if k == "" || (k[0] >= '0' && k[0] <= '9') || strings.HasPrefix(k, "__") {
		return ""
	}
	b := []byte(k)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_') {
			b[i] = '_'
		}
	}
	return string(b)
}

func (c *Config) validateVirtualHosts(v *errs, listeners, clusters, plugins map[string]int) {
	seen := map[string]int{}
	// owners maps a domain to the virtual hosts that serve it so far.
	owners := map[string][]domainOwner{}
	for i, vh := range c.VirtualHosts {
		p := idx("virtual_hosts", i)
		checkName(v, dot(p, "name"), vh.Name, i, seen, "virtual host")
		for j, l := range vh.Listeners {
			if _, ok := listeners[l]; !ok {
				v.add(idx(dot(p, "listeners"), j), "unknown listener %q", l)
			} else if lc := c.Listeners[listeners[l]]; lc.TCPProxy != nil {
				v.add(idx(dot(p, "listeners"), j), "listener %q carries TCP (tcp_proxy), not HTTP", l)
			}
		}
		if len(vh.Domains) == 0 {
			v.add(dot(p, "domains"), "at least one domain is required (\"*\" for any)")
		}
		for j, d := range vh.Domains {
			dPath := idx(dot(p, "domains"), j)
			if err := checkDomain(d); err != "" {
				v.add(dPath, "%s", err)
				continue
			}
			dup := false
			for _, o := range owners[d] {
				if o.vh == i {
					dup = true // listed twice by one virtual host
					break
				}
				if l, ok := c.sharedListener(o.listeners, vh.Listeners); ok {
					v.add(dPath, "domain %q is already served by virtual_hosts[%d] on listener %q", d, o.vh, l)
					dup = true
					break
				}
			}
			if !dup {
				owners[d] = append(owners[d], domainOwner{vh: i, listeners: vh.Listeners})
			}
		}
		validateMutation(v, dot(p, "request_headers"), vh.RequestHeaders)
		validateMutation(v, dot(p, "response_headers"), vh.ResponseHeaders)
		validateFilterRefs(v, dot(p, "filters"), vh.Filters, plugins)
		if len(vh.Routes) == 0 {
			v.add(dot(p, "routes"), "at least one route is required")
		}
		routes := map[string]int{}
		for j := range vh.Routes {
			rPath := idx(dot(p, "routes"), j)
			r := &vh.Routes[j]
			if r.Name == fmt.Sprintf("%s-%d", vh.Name, j) && !namePattern.MatchString(r.Name) {
				// The default name is invalid only because the virtual
				// host's is, which is reported already.
				routes[r.Name] = j
			} else {
				checkName(v, dot(rPath, "name"), r.Name, j, routes, "route")
			}
			validateRoute(v, rPath, r, clusters, plugins)
		}
	}
}

// domainOwner is a virtual host serving a domain on some listeners (nil:
// on all of them).
type domainOwner struct {
	vh        int
	listeners []string
}

// sharedListener names a listener that both lists serve, where an empty
// list means every listener.
func (c *Config) sharedListener(a, b []string) (string, bool) {
	switch {
	case len(a) == 0 && len(b) == 0:
		if len(c.Listeners) == 0 {
			return "", false
		}
		return c.Listeners[0].Name, true
	case len(a) == 0:
		return b[0], true
	case len(b) == 0:
		return a[0], true
	}
	for _, x := range a {
		for _, y := range b {
			if x == y {
				return x, true
			}
		}
	}
	return "", false
}

func checkDomain(d string) string {
	switch {
	case d == "":
		return "must not be empty"
	case d == "*":
		return ""
	case strings.Count(d, "*") > 1:
		return fmt.Sprintf("%q has more than one wildcard", d)
	case strings.Contains(d, "*") && !strings.HasPrefix(d, "*") && !strings.HasSuffix(d, "*"):
		return fmt.Sprintf("%q: a wildcard must be the first or the last character", d)
	case strings.ContainsAny(d, " /\\@?#"):
		return fmt.Sprintf("%q is not a domain name", d)
	case strings.Contains(d, ":") && !strings.HasPrefix(d, "["):
		return fmt.Sprintf("%q has a port: domains match the Host header without its port", d)
	}
	return ""
}

var validMethods = regexp.MustCompile(`^[A-Z][A-Z0-9_\-]{0,31}$`)

// Validate checks a header matcher on its own; its errors are an Errors
// whose paths start inside it ("regex").
func (h *HeaderMatcher) Validate() error {
	v := &errs{}
	h.check(v, "")
	return v.err()
}

func (h *HeaderMatcher) check(v *errs, p string) {
	if !validHeaderName(h.Name) {
		v.add(dot(p, "name"), "%q is not a valid header name", h.Name)
	}
	if count(h.Exact != "", h.Prefix != "", h.Regex != "", h.Present, h.Absent) != 1 {
		v.add(p, "exactly one of exact, prefix, regex, present and absent is required")
	}
	if h.Regex != "" {
		checkRegex(v, dot(p, "regex"), h.Regex)
	}
}

// Validate checks a fault injection on its own; its errors are an Errors
// whose paths start inside it ("abort.status").
func (f *Fault) Validate() error {
	v := &errs{}
	f.check(v, "")
	return v.err()
}

func (f *Fault) check(v *errs, p string) {
	if f.Delay == nil && f.Abort == nil {
		v.add(p, "sets neither delay nor abort")
	}
	percent := func(path string, x float64) {
		if x < 0 || x > 100 {
			v.add(path, "must be between 0 and 100, not %v", x)
		}
	}
	if d := f.Delay; d != nil {
		dp := dot(p, "delay")
		if d.Fixed <= 0 || d.Fixed.D() > time.Hour {
			v.add(dot(dp, "fixed"), "must be more than 0 and at most 1h")
		}
		percent(dot(dp, "percent"), d.Percent)
	}
	if a := f.Abort; a != nil {
		ap := dot(p, "abort")
		if a.Status < 200 || a.Status > 599 {
			v.add(dot(ap, "status"), "must be between 200 and 599, not %d", a.Status)
		}
		percent(dot(ap, "percent"), a.Percent)
	}
}

// Validate checks a query matcher on its own; its errors are an Errors
// whose paths start inside it ("regex").
func (q *QueryMatcher) Validate() error {
	v := &errs{}
	q.check(v, "")
	return v.err()
}

func (q *QueryMatcher) check(v *errs, qp string) {
	if q.Name == "" {
		v.add(dot(qp, "name"), "is required")
	}
	if count(q.Exact != "", q.Prefix != "", q.Regex != "", q.Present) != 1 {
		v.add(qp, "exactly one of exact, prefix, regex and present is required")
	}
	if q.Regex != "" {
		checkRegex(v, dot(qp, "regex"), q.Regex)
	}
}

// Validate checks a route's match on its own; its errors are an Errors
// whose paths start inside it ("headers[0].regex").
func (m *RouteMatch) Validate() error {
	v := &errs{}
	m.check(v, "")
	return v.err()
}

func (m *RouteMatch) check(v *errs, mp string) {
	paths := 0
	if m.Path != "" {
		paths++
		if !strings.HasPrefix(m.Path, "/") {
			v.add(dot(mp, "path"), "must start with '/'")
		}
	}
	if m.Prefix != "" {
		paths++
		if !strings.HasPrefix(m.Prefix, "/") {
			v.add(dot(mp, "prefix"), "must start with '/'")
		}
	}
	if m.PathRegex != "" {
		paths++
		checkRegex(v, dot(mp, "path_regex"), m.PathRegex)
	}
	if paths > 1 {
		v.add(mp, "at most one of path, prefix and path_regex")
	}
	for i := range m.Headers {
		m.Headers[i].check(v, idx(dot(mp, "headers"), i))
	}
	for i := range m.Query {
		m.Query[i].check(v, idx(dot(mp, "query"), i))
	}
	for i, meth := range m.Methods {
		if !validMethods.MatchString(meth) {
			v.add(idx(dot(mp, "methods"), i), "%q is not a method", meth)
		}
	}
}

func validateRoute(v *errs, p string, r *Route, clusters, plugins map[string]int) {
	m := r.Match
	m.check(v, dot(p, "match"))

	actions := count(r.Cluster != "", len(r.WeightedClusters) > 0, r.Redirect != nil, r.DirectResponse != nil)
	if actions != 1 {
		v.add(p, "exactly one of cluster, weighted_clusters, redirect and direct_response is required")
	}
	if r.Cluster != "" {
		if _, ok := clusters[r.Cluster]; !ok {
			v.add(dot(p, "cluster"), "unknown cluster %q", r.Cluster)
		}
	}
	total := 0
	for i, wc := range r.WeightedClusters {
		wp := idx(dot(p, "weighted_clusters"), i)
		if _, ok := clusters[wc.Name]; !ok {
			v.add(dot(wp, "name"), "unknown cluster %q", wc.Name)
		}
		if wc.Weight < 0 || wc.Weight > 1000000 {
			v.add(dot(wp, "weight"), "must be between 0 and 1000000")
		}
		total += wc.Weight
	}
	if len(r.WeightedClusters) > 0 && total == 0 {
		v.add(dot(p, "weighted_clusters"), "the weights add up to 0")
	}
	if rd := r.Redirect; rd != nil {
		rp := dot(p, "redirect")
		rd.check(v, rp)
		if rd.PrefixRewrite != "" && m.Prefix == "" {
			v.add(dot(rp, "prefix_rewrite"), "needs match.prefix")
		}
	}
	if dr := r.DirectResponse; dr != nil {
		dp := dot(p, "direct_response")
		if dr.Status < 100 || dr.Status > 599 {
			v.add(dot(dp, "status"), "must be between 100 and 599")
		}
		for i, h := range dr.Headers {
			if !validHeaderName(h.Name) {
				v.add(dot(idx(dot(dp, "headers"), i), "name"), "%q is not a valid header name", h.Name)
			}
			checkHeaderValue(v, dot(idx(dot(dp, "headers"), i), "value"), h.Value)
		}
	}
	forwards := r.Cluster != "" || len(r.WeightedClusters) > 0
	if f := r.Fault; f != nil {
		if !forwards {
			v.add(dot(p, "fault"), "needs a route that forwards (cluster or weighted_clusters)")
		}
		f.check(v, dot(p, "fault"))
	}
	for i, mr := range r.Mirrors {
		mp := idx(dot(p, "mirrors"), i)
		if !forwards {
			v.add(mp, "needs a route that forwards (cluster or weighted_clusters)")
		}
		if _, ok := clusters[mr.Cluster]; !ok {
			v.add(dot(mp, "cluster"), "unknown cluster %q", mr.Cluster)
		}
		if mr.Percent != nil && (*mr.Percent < 0 || *mr.Percent > 100) {
			v.add(dot(mp, "percent"), "must be between 0 and 100, not %v", *mr.Percent)
		}
	}
	checkNoCRLF(v, dot(p, "prefix_rewrite"), r.PrefixRewrite)
	checkNoCRLF(v, dot(p, "host_rewrite"), r.HostRewrite)
	if r.RegexRewrite != nil {
		checkNoCRLF(v, dot(p, "regex_rewrite.substitution"), r.RegexRewrite.Substitution)
	}
	if r.PrefixRewrite != "" {
		if m.Prefix == "" {
			v.add(dot(p, "prefix_rewrite"), "needs match.prefix")
		}
		if r.RegexRewrite != nil {
			v.add(p, "at most one of prefix_rewrite and regex_rewrite")
		}
	}
	if rr := r.RegexRewrite; rr != nil {
		if rr.Pattern == "" {
			v.add(dot(p, "regex_rewrite.pattern"), "is required")
		} else {
			checkRegex(v, dot(p, "regex_rewrite.pattern"), rr.Pattern)
		}
	}
	if !forwards && (r.PrefixRewrite != "" || r.RegexRewrite != nil || r.HostRewrite != "") {
		v.add(p, "prefix_rewrite, regex_rewrite and host_rewrite need a cluster or weighted_clusters action")
	}
	if r.Timeout < 0 {
		v.add(dot(p, "timeout"), "must not be negative")
	}
	validateMutation(v, dot(p, "request_headers"), r.RequestHeaders)
	validateMutation(v, dot(p, "response_headers"), r.ResponseHeaders)
	validateFilterRefs(v, dot(p, "filters"), r.Filters, plugins)
}

func validateFilterRefs(v *errs, p string, refs []FilterRef, plugins map[string]int) {
	for i, f := range refs {
		if f.Native != "" {
			switch {
			case f.Plugin != "":
				v.add(idx(p, i), "plugin and native are exclusive")
			case f.Native != NativeForwarded && f.Native != NativeRateLimit && f.Native != NativeHeaders && f.Native != NativeMeshPolicy:
				v.add(dot(idx(p, i), "native"), "unknown native filter %q (one of %s, %s, %s, %s)",
					f.Native, NativeForwarded, NativeRateLimit, NativeHeaders, NativeMeshPolicy)
			case len(f.Config) > 0:
				v.add(dot(idx(p, i), "config"), "a native filter takes its configuration from the route")
			}
			continue
		}
		if f.Plugin == "" {
			v.add(dot(idx(p, i), "plugin"), "is required")
		} else if _, ok := plugins[f.Plugin]; !ok {
			v.add(dot(idx(p, i), "plugin"), "unknown plugin %q", f.Plugin)
		}
	}
}

// hopByHop are the headers a mutation may not touch: they describe one
// connection, not the message.
var hopByHop = map[string]bool{
	"connection": true, "keep-alive": true, "proxy-connection": true, "te": true,
	"trailer": true, "transfer-encoding": true, "upgrade": true, "content-length": true,
}

// Validate checks a header mutation on its own; its errors are an Errors
// whose paths start inside it ("set[0].name").
func (m *HeaderMutation) Validate() error {
	v := &errs{}
	validateMutation(v, "", *m)
	return v.err()
}

// Validate checks a redirect on its own, prefix_rewrite aside (it needs
// a route's match); its errors are an Errors whose paths start inside it
// ("status").
func (rd *Redirect) Validate() error {
	v := &errs{}
	rd.check(v, "")
	return v.err()
}

func (rd *Redirect) check(v *errs, rp string) {
	switch rd.Status {
	case 301, 302, 303, 307, 308:
	default:
		v.add(dot(rp, "status"), "must be 301, 302, 303, 307 or 308, not %d", rd.Status)
	}
	if rd.Scheme != "" && rd.Scheme != "http" && rd.Scheme != "https" {
		v.add(dot(rp, "scheme"), "must be http or https")
	}
	if rd.Path != "" && rd.PrefixRewrite != "" {
		v.add(rp, "at most one of path and prefix_rewrite")
	}
	if rd.Path != "" && !strings.HasPrefix(rd.Path, "/") {
		v.add(dot(rp, "path"), "must start with '/'")
	}
	checkNoCRLF(v, dot(rp, "path"), rd.Path)
	checkNoCRLF(v, dot(rp, "prefix_rewrite"), rd.PrefixRewrite)
	if rd.Port < 0 || rd.Port > 65535 {
		v.add(dot(rp, "port"), "must be between 1 and 65535")
	}
	if strings.ContainsAny(rd.Host, "/ \t\r\n\x00") {
		v.add(dot(rp, "host"), "%q is not a host name", rd.Host)
	}
}

func validateMutation(v *errs, p string, m HeaderMutation) {
	check := func(path, name string) {
		switch {
		case !validHeaderName(name):
			v.add(path, "%q is not a valid header name", name)
		case hopByHop[name]:
			v.add(path, "%q describes the connection and cannot be changed", name)
		}
	}
	for i, h := range m.Add {
		check(dot(idx(dot(p, "add"), i), "name"), h.Name)
		checkHeaderValue(v, dot(idx(dot(p, "add"), i), "value"), h.Value)
	}
	for i, h := range m.Set {
		check(dot(idx(dot(p, "set"), i), "name"), h.Name)
		checkHeaderValue(v, dot(idx(dot(p, "set"), i), "value"), h.Value)
	}
	for i, name := range m.Remove {
		check(idx(dot(p, "remove"), i), name)
	}
}

func checkHeaderValue(v *errs, p, val string) {
	if strings.ContainsAny(val, "\r\n\x00") {
		v.add(p, "a header value must not contain CR, LF or NUL")
	}
}

// checkNoCRLF rejects a value that is written into a request line or a
// header as it is.
func checkNoCRLF(v *errs, p, val string) {
	if strings.ContainsAny(val, "\r\n\x00") {
		v.add(p, "must not contain CR, LF or NUL")
	}
}

func checkRegex(v *errs, p, re string) {
	if _, err := regexp.Compile(re); err != nil {
		msg := strings.TrimPrefix(err.Error(), "error parsing regexp: ")
		v.add(p, "%s", msg)
	}
}

// validHeaderName reports whether s is an HTTP token.
func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte("()<>@,;:\\\"/[]?={}", c) >= 0 {
			return false
		}
	}
	return true
}

func count(bs ...bool) int {
	n := 0
	for _, b := range bs {
		if b {
			n++
		}
	}
	return n
}
