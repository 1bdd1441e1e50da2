package route

import (
	"fmt"
	"reflect"
	"regexp"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/proxy/cluster"
	"github.com/wasmgate/wasmgate/proxy/filter"
	"github.com/wasmgate/wasmgate/proxy/filter/native"
	"github.com/wasmgate/wasmgate/proxy/metrics"
)

// Deps are what Compile resolves names against.
type Deps struct {
	Clusters map[string]*cluster.Cluster
	Metrics  *metrics.Metrics
	// Filter returns the factory for one filter attachment; nil when the
	// configuration has no filters.
	Filter func(ref config.FilterRef, vhost, route string) (filter.Factory, error)
	// FilterSet identifies what Filter resolves against (the plugin set);
	// virtual hosts with filters are reused only under the same set.
	FilterSet any
	// Limits keeps rate limit buckets across reloads; nil keeps none.
	Limits *native.Limits
	// MeshPolicy is the filter that routes place with
	// `native: mesh_policy`; nil makes such a route an error.
	MeshPolicy filter.Factory
	// Prev is the listener's previous table. A virtual host whose
	// configuration is unchanged, whose clusters are the same objects and
	// whose filters resolve against the same set is reused from it as it is.
	Prev *Table
}

// Compile builds the route table of one listener from a validated
// configuration.
func Compile(cfg *config.Config, listener string, d Deps) (*Table, error) {
	t := newTable()
	if d.Limits == nil {
		d.Limits = &native.Limits{}
	}
	for i := range cfg.Listeners {
		lc := &cfg.Listeners[i]
		if lc.Name != listener {
			continue
		}
		if d.Prev != nil && d.Prev.forwarded != nil && d.Prev.forwarded.Same(lc) {
			t.forwarded = d.Prev.forwarded
			break
		}
		fwd, err := native.NewForwarded(lc, fmt.Sprintf("listeners[%d]", i))
		if err != nil {
			return nil, err
		}
		t.forwarded = fwd
	}
	if t.forwarded == nil {
		return nil, fmt.Errorf("unknown listener %q", listener)
	}
	for i := range cfg.VirtualHosts {
		vc := &cfg.VirtualHosts[i]
		if !servesListener(vc, listener) {
			continue
		}
		vh := reusable(vc, listener, t.forwarded, d)
		if vh == nil {
			var err error
			if vh, err = compileVirtualHost(vc, listener, t.forwarded, d); err != nil {
				return nil, err
			}
		}
		t.VirtualHosts = append(t.VirtualHosts, vh)
		for _, dom := range vc.Domains {
			t.add(dom, vh)
		}
	}
	return t, nil
}

func servesListener(vc *config.VirtualHost, listener string) bool {
	if len(vc.Listeners) == 0 {
		return true
	}
	for _, l := range vc.Listeners {
		if l == listener {
			return true
		}
	}
	return false
}

// reusable returns the previous table's compiled virtual host for vc when
// nothing it depends on changed, or nil.
func reusable(vc *config.VirtualHost, listener string, fwd *native.Forwarded, d Deps) *VirtualHost {
	if d.Prev == nil {
		return nil
	}
	var prev *VirtualHost
	for _, vh := range d.Prev.VirtualHosts {
		if vh.Name == vc.Name {
			prev = vh
			break
		}
	}
	if prev == nil || prev.listener != listener || prev.forwarded != fwd || !sameVirtualHost(prev.cfg, vc) {
		return nil
	}
	for _, r := range prev.Routes {
		if r.plugins && prev.filters != d.FilterSet {
			return nil
		}
		for _, t := range r.Targets {
			if d.Clusters[t.Cluster.Name] != t.Cluster {
				return nil
			}
		}
	}
	return prev
}

// sameVirtualHost reports whether two virtual host configurations are
// equal. Configurations are never changed once built, so routes held in the
// same array are the same routes: a source that keeps the decoded value of
// an unchanged resource (the control plane's watcher does) makes this cheap
// for every virtual host but the changed ones.
func sameVirtualHost(a, b *config.VirtualHost) bool {
	ra, rb := a.Routes, b.Routes
	if len(ra) != len(rb) {
		return false
	}
	x, y := *a, *b
	x.Routes, y.Routes = nil, nil
	if !reflect.DeepEqual(x, y) {
		return false
	}
	if len(ra) > 0 && &ra[0] == &rb[0] {
		return true
	}
	return reflect.DeepEqual(ra, rb)
}

func compileVirtualHost(vc *config.VirtualHost, listener string, fwd *native.Forwarded, d Deps) (*VirtualHost, error) {
	cfg := *vc
	vh := &VirtualHost{Name: vc.Name, cfg: &cfg, listener: listener, filters: d.FilterSet, forwarded: fwd}
	for j := range vc.Routes {
		r, err := compileRoute(vc, &vc.Routes[j], listener, fwd, d)
		if err != nil {
			return nil, fmt.Errorf("virtual host %q, route %q: %w", vc.Name, vc.Routes[j].Name, err)
		}
		vh.Routes = append(vh.Routes, r)
	}
	if len(vc.Filters) > 0 {
		nr := &config.Route{Match: config.RouteMatch{Prefix: "/"},
			DirectResponse: &config.DirectResponse{Status: 404, Body: "route_not_found\n"}}
		r, err := compileRoute(vc, nr, listener, fwd, d)
		if err != nil {
			return nil, fmt.Errorf("virtual host %q, its filters: %w", vc.Name, err)
		}
		r.Fallback = true
		vh.NoRoute = r
	}
	return vh, nil
}

func compileRoute(vc *config.VirtualHost, rc *config.Route, listener string, fwd *native.Forwarded, d Deps) (*Route, error) {
	r := &Route{Name: rc.Name, VirtualHost: vc.Name, Timeout: rc.Timeout.Or(DefaultTimeout), Fault: compileFault(rc.Fault)}
	m := rc.Match
	r.foldCase = m.CaseInsensitive
	switch {
	case m.Path != "":
		r.pathKind, r.path = pathExact, []byte(m.Path)
	case m.PathRegex != "":
		re, err := regexp.Compile(`^(?:` + m.PathRegex + `)$`)
		if err != nil {
			return nil, err
		}
		r.pathKind, r.pathRe = pathRegex, re
	default:
		r.pathKind, r.path = pathPrefix, []byte(m.Prefix)
		r.prefixLen = len(m.Prefix)
	}
	for _, h := range m.Headers {
		hm := headerMatcher{name: h.Name, invert: h.Invert}
		switch {
		case h.Exact != "":
			hm.kind, hm.value = matchExact, []byte(h.Exact)
		case h.Prefix != "":
			hm.kind, hm.value = matchPrefix, []byte(h.Prefix)
		case h.Regex != "":
			re, err := regexp.Compile(`^(?:` + h.Regex + `)$`)
			if err != nil {
				return nil, err
			}
			hm.kind, hm.re = matchRegex, re
		case h.Absent:
			hm.kind = matchAbsent
		default:
			hm.kind = matchPresent
		}
		r.headerMs = append(r.headerMs, hm)
	}
	for _, q := range m.Query {
		qm := queryMatcher{name: q.Name}
		switch {
		case q.Exact != "":
			qm.kind, qm.value = matchExact, []byte(q.Exact)
		case q.Prefix != "":
			qm.kind, qm.value = matchPrefix, []byte(q.Prefix)
		case q.Regex != "":
			re, err := regexp.Compile(`^(?:` + q.Regex + `)$`)
			if err != nil {
				return nil, err
			}
			qm.kind, qm.re = matchRegex, re
		default:
			qm.kind = matchPresent
		}
		r.queryMs = append(r.queryMs, qm)
	}
	for _, meth := range m.Methods {
		r.methods = append(r.methods, []byte(meth))
	}

	switch {
	case rc.Cluster != "":
		r.Action = Forward
		c, ok := d.Clusters[rc.Cluster]
		if !ok {
			return nil, fmt.Errorf("unknown cluster %q", rc.Cluster)
		}
		r.Targets = []Target{{Cluster: c, Stats: d.Metrics.Route(listener, rc.Name, c.Name), cum: 1}}
		r.totalWeight = 1
	case len(rc.WeightedClusters) > 0:
		r.Action = Forward
		for _, wc := range rc.WeightedClusters {
			if wc.Weight == 0 {
				continue
			}
			c, ok := d.Clusters[wc.Name]
			if !ok {
				return nil, fmt.Errorf("unknown cluster %q", wc.Name)
			}
			r.totalWeight += wc.Weight
			r.Targets = append(r.Targets, Target{Cluster: c, Stats: d.Metrics.Route(listener, rc.Name, c.Name), cum: r.totalWeight})
		}
	case rc.Redirect != nil:
		r.Action = Redirect
		rd := *rc.Redirect
		r.redirect = &rd
	case rc.DirectResponse != nil:
		r.Action = Respond
		r.status = rc.DirectResponse.Status
		r.body = []byte(rc.DirectResponse.Body)
		for _, h := range rc.DirectResponse.Headers {
			r.headers = append(r.headers, [2][]byte{[]byte(h.Name), []byte(h.Value)})
		}
	}
	r.metrics, r.listener = d.Metrics, listener
	for _, mc := range rc.Mirrors {
		c, ok := d.Clusters[mc.Cluster]
		if !ok {
			return nil, fmt.Errorf("mirror: unknown cluster %q", mc.Cluster)
		}
		share := uint32(1_000_000)
		if mc.Percent != nil {
			share = ppm(*mc.Percent)
		}
		r.Mirrors = append(r.Mirrors, Mirror{Cluster: c, Stats: d.Metrics.Mirror(listener, rc.Name, c.Name), ppm: share})
	}

	if rc.PrefixRewrite != "" {
		r.prefixRewrite = []byte(rc.PrefixRewrite)
	}
	if rr := rc.RegexRewrite; rr != nil {
		re, err := regexp.Compile(rr.Pattern)
		if err != nil {
			return nil, err
		}
		r.regexRewrite, r.regexSubst = re, []byte(rr.Substitution)
	}
	if rc.HostRewrite != "" {
		r.hostRewrite = []byte(rc.HostRewrite)
	}
	if r.Retry = newRetryPolicy(rc.Retry); r.Retry == nil {
		r.Retry = newRetryPolicy(vc.Retry)
	}
	if err := r.compileChain(vc, rc, fwd, d); err != nil {
		return nil, err
	}
	return r, nil
}

// compileChain builds the route's filter chain: the virtual host's
// entries, then the route's, with the native filters they do not place
// at their default places (package native).
func (r *Route) compileChain(vc *config.VirtualHost, rc *config.Route, fwd *native.Forwarded, d Deps) error {
	natives := map[string]filter.Factory{config.NativeForwarded: fwd}
	if rl := d.Limits.NewRateLimit(vc, rc, d.Metrics.RateLimited); rl != nil {
		natives[config.NativeRateLimit] = rl
	}
	if h := native.NewHeaders(vc, rc); h != nil {
		natives[config.NativeHeaders] = h
	}
	if d.MeshPolicy != nil {
		natives[config.NativeMeshPolicy] = d.MeshPolicy
	}
	placed := map[string]bool{}
	for _, refs := range [][]config.FilterRef{vc.Filters, rc.Filters} {
		for _, ref := range refs {
			placed[ref.Native] = ref.Native != ""
		}
	}
	add := func(f filter.Factory) {
		r.Filters = append(r.Filters, f)
		if _, ok := f.(filter.HeadersOnly); !ok {
			r.BodyFilters = true
		}
	}
	for _, name := range []string{config.NativeForwarded, config.NativeRateLimit} {
		if f := natives[name]; f != nil && !placed[name] {
			add(f)
		}
	}
	for _, refs := range [][]config.FilterRef{vc.Filters, rc.Filters} {
		for _, ref := range refs {
			if ref.Native != "" {
				if ref.Native == config.NativeMeshPolicy && d.MeshPolicy == nil {
					return fmt.Errorf("filter %q: this proxy enforces no mesh policy (run it as a sidecar)", ref.Native)
				}
				if f := natives[ref.Native]; f != nil {
					add(f)
				}
				continue
			}
			if d.Filter == nil {
				return fmt.Errorf("filter %q: this proxy runs without a Wasm host", ref.Plugin)
			}
			f, err := d.Filter(ref, vc.Name, rc.Name)
			if err != nil {
				return fmt.Errorf("filter %q: %w", ref.Plugin, err)
			}
			add(f)
			r.plugins = true
		}
	}
	if f := natives[config.NativeHeaders]; f != nil && !placed[config.NativeHeaders] {
		add(f)
	}
	return nil
}
