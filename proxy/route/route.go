// Package route compiles virtual hosts and routes into an immutable table
// and matches requests against it: the virtual host by Host, then the first
// route of that virtual host whose conditions all hold.
//
// Matching reads the request and allocates nothing. A Table, and everything
// it points to, is never changed after Compile returns.
package route

import (
	"bytes"
	"math/rand/v2"
	"regexp"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/proxy/cluster"
	"github.com/wasmgate/wasmgate/proxy/filter"
	"github.com/wasmgate/wasmgate/proxy/filter/native"
	"github.com/wasmgate/wasmgate/proxy/metrics"
)

// DefaultTimeout bounds an upstream exchange when the route sets none.
const DefaultTimeout = 15 * time.Second

// VirtualHost is a compiled virtual host.
type VirtualHost struct {
	Name   string
	Routes []*Route
	// NoRoute answers a request that matches none of Routes when the
	// virtual host has filters of its own: 404 through those filters
	// (and its native ones), which may still rewrite the request into
	// one that matches, as Envoy's filters run before its router picks
	// a route. Nil without such filters.
	NoRoute *Route

	// What it was compiled from, so that a later Compile can reuse it.
	cfg       *config.VirtualHost
	listener  string
	filters   any
	forwarded *native.Forwarded
}

// Match returns the first route that matches req, or nil.
func (vh *VirtualHost) Match(req *fasthttp.Request) *Route {
	for _, r := range vh.Routes {
		if r.matches(req) {
			return r
		}
	}
	return nil
}

// Action is what a route does with a request it matched.
type Action uint8

const (
	// Forward sends the request to a cluster (one, or one of a split).
	Forward Action = iota
	// Redirect answers with a redirect.
	Redirect
	// Respond answers with a fixed response.
	Respond
)

// Route is a compiled route.
type Route struct {
	Name        string
	VirtualHost string
	Action      Action

	// Forward: the targets, with cumulative weights for a split.
	Targets     []Target
	totalWeight int

	// Redirect.
	redirect *config.Redirect
	// Respond.
	status  int
	body    []byte
	headers [][2][]byte
	// noTarget are the stats of the route's answers made without an
	// upstream, created on first use (NoTarget).
	noTarget atomic.Pointer[metrics.RouteStats]
	metrics  *metrics.Metrics
	listener string

	// Path matching.
	pathKind  pathKind
	path      []byte
	pathRe    *regexp.Regexp
	foldCase  bool
	headerMs  []headerMatcher
	queryMs   []queryMatcher
	methods   [][]byte
	prefixLen int

	// Rewrites.
	prefixRewrite []byte
	regexRewrite  *regexp.Regexp
	regexSubst    []byte
	hostRewrite   []byte

	Timeout time.Duration
	// Fault is the route's fault injection; nil: none.
	Fault *Fault
	// Mirrors are the clusters a share of the route's requests is copied
	// to.
	Mirrors []Mirror
	// Retry is the route's retry policy, or its virtual host's; nil when
	// neither has one.
	Retry *RetryPolicy
	// Filters are the route's filter chain, native filters and plugins in
	// the order a request passes them (see package native for the default
	// order). Responses pass them in reverse.
	Filters []filter.Factory
	// BodyFilters reports whether a filter of the chain sees bodies: when
	// none does, bodies go through unbuffered and unchunked.
	BodyFilters bool
	// plugins reports whether the chain holds plugins.
	plugins bool
	// Fallback marks a virtual host's NoRoute.
	Fallback bool
}

// Target is one cluster a route forwards to.
type Target struct {
	Cluster *cluster.Cluster
	Stats   *metrics.RouteStats
	// cum is the cumulative weight up to and including this target.
	cum int
}

// NoTarget returns the stats of the route's answers made without an
// upstream (direct responses, redirects, filters' answers). A forward route
// seldom has any, so its series are created on the first, not for every
// route of every snapshot.
func (r *Route) NoTarget() *metrics.RouteStats {
	if s := r.noTarget.Load(); s != nil {
		return s
	}
	r.noTarget.CompareAndSwap(nil, r.metrics.Route(r.listener, r.Name, ""))
	return r.noTarget.Load()
}

// PickTarget chooses the target for one request.
func (r *Route) PickTarget() *Target {
	if len(r.Targets) == 1 {
		return &r.Targets[0]
	}
	n := rand.IntN(r.totalWeight)
	for i := range r.Targets {
		if n < r.Targets[i].cum {
			return &r.Targets[i]
		}
	}
	return &r.Targets[len(r.Targets)-1]
}

type pathKind uint8

const (
	pathPrefix pathKind = iota
	pathExact
	pathRegex
)

func (r *Route) matches(req *fasthttp.Request) bool {
	p := req.URI().Path()
	switch r.pathKind {
	case pathPrefix:
		if len(p) < len(r.path) {
			return false
		}
		if r.foldCase {
			if !bytes.EqualFold(p[:len(r.path)], r.path) {
				return false
			}
		} else if !bytes.HasPrefix(p, r.path) {
			return false
		}
	case pathExact:
		if r.foldCase {
			if !bytes.EqualFold(p, r.path) {
				return false
			}
		} else if !bytes.Equal(p, r.path) {
			return false
		}
	case pathRegex:
		if !r.pathRe.Match(p) {
			return false
		}
	}
	if len(r.methods) > 0 {
		m := req.Header.Method()
		ok := false
		for _, want := range r.methods {
			if bytes.Equal(m, want) {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	for i := range r.headerMs {
		if !r.headerMs[i].matches(&req.Header) {
			return false
		}
	}
	if len(r.queryMs) > 0 {
		args := req.URI().QueryArgs()
		for i := range r.queryMs {
			if !r.queryMs[i].matches(args) {
				return false
			}
		}
	}
	return true
}

type matchKind uint8

const (
	matchExact matchKind = iota
	matchPrefix
	matchRegex
	matchPresent
	matchAbsent
)

type headerMatcher struct {
	name   string
	kind   matchKind
	value  []byte
	re     *regexp.Regexp
	invert bool
}

func (m *headerMatcher) matches(h *fasthttp.RequestHeader) bool {
	v := h.Peek(m.name)
	var ok bool
	switch m.kind {
	case matchExact:
		ok = v != nil && bytes.Equal(v, m.value)
	case matchPrefix:
		ok = v != nil && bytes.HasPrefix(v, m.value)
	case matchRegex:
		ok = v != nil && m.re.Match(v)
	case matchPresent:
		ok = v != nil
	case matchAbsent:
		ok = v == nil
	}
	return ok != m.invert
}

type queryMatcher struct {
	name  string
	kind  matchKind
	value []byte
	re    *regexp.Regexp
}

func (m *queryMatcher) matches(args *fasthttp.Args) bool {
	if !args.Has(m.name) {
		return false
	}
	v := args.Peek(m.name)
	switch m.kind {
	case matchExact:
		return bytes.Equal(v, m.value)
	case matchPrefix:
		return bytes.HasPrefix(v, m.value)
	case matchRegex:
		return m.re.Match(v)
	}
	return true // present
}

// RewriteRequest applies the route's path and host rewrites to req. scratch
// is a buffer the caller owns; the grown buffer is returned for reuse.
func (r *Route) RewriteRequest(req *fasthttp.Request, scratch []byte) []byte {
	if r.prefixRewrite != nil {
		uri := req.URI()
		p := uri.Path()
		scratch = append(scratch[:0], r.prefixRewrite...)
		rest := p[r.prefixLen:]
		if len(scratch) > 0 && scratch[len(scratch)-1] == '/' && len(rest) > 0 && rest[0] == '/' {
			rest = rest[1:]
		}
		scratch = append(scratch, rest...)
		if len(scratch) == 0 || scratch[0] != '/' {
			scratch = append(scratch, 0)
			copy(scratch[1:], scratch)
			scratch[0] = '/'
		}
		uri.SetPathBytes(scratch)
	} else if r.regexRewrite != nil {
		uri := req.URI()
		uri.SetPathBytes(r.regexRewrite.ReplaceAll(uri.Path(), r.regexSubst))
	}
	if r.hostRewrite != nil {
		// Once the URI is parsed, the request is written with the URI's
		// host, so both must change.
		req.URI().SetHostBytes(r.hostRewrite)
		req.Header.SetHostBytes(r.hostRewrite)
	}
	return scratch
}

// Respond writes the route's fixed response.
func (r *Route) Respond(resp *fasthttp.Response) {
	resp.SetStatusCode(r.status)
	for _, h := range r.headers {
		resp.Header.SetBytesKV(h[0], h[1])
	}
	if len(r.body) > 0 {
		resp.SetBodyRaw(r.body)
	}
}

// WriteRedirect answers req with the route's redirect. scratch is a buffer
// the caller owns; the grown buffer is returned for reuse.
func (r *Route) WriteRedirect(req *fasthttp.Request, resp *fasthttp.Response, tls bool, scratch []byte) []byte {
	rd := r.redirect
	b := scratch[:0]
	switch {
	case rd.Scheme != "":
		b = append(b, rd.Scheme...)
	case tls:
		b = append(b, "https"...)
	default:
		b = append(b, "http"...)
	}
	b = append(b, "://"...)
	host := req.Header.Host()
	if rd.Host != "" {
		b = append(b, rd.Host...)
	} else {
		b = append(b, stripPort(host)...)
	}
	switch {
	case rd.Port != 0:
		b = append(b, ':')
		b = appendInt(b, rd.Port)
	case rd.Host == "" && rd.Scheme == "":
		// Same scheme and host: keep the request's port.
		_, port := splitPort(host)
		b = append(b, port...)
	}
	uri := req.URI()
	switch {
	case rd.Path != "":
		b = append(b, rd.Path...)
	case rd.PrefixRewrite != "":
		b = append(b, rd.PrefixRewrite...)
		b = append(b, uri.Path()[r.prefixLen:]...)
	default:
		b = append(b, uri.Path()...)
	}
	if q := uri.QueryString(); len(q) > 0 && !rd.StripQuery {
		b = append(b, '?')
		b = append(b, q...)
	}
	resp.SetStatusCode(rd.Status)
	resp.Header.SetBytesV("Location", b)
	return b
}

// stripPort returns host without its port.
func stripPort(host []byte) []byte {
	h, _ := splitPort(host)
	return h
}

// splitPort splits a Host value into the host and its port with the
// colon (":8080"). Only a port of one to five digits is split off, after
// a name, an IPv4 address or a bracketed IPv6 address, as Envoy strips a
// port: a filter may set :authority to "example.com:80-canary", which has
// no port, and "::1" is an address, not "::" and port 1.
func splitPort(host []byte) (h, port []byte) {
	i := bytes.LastIndexByte(host, ':')
	if i < 0 || len(host)-i-1 < 1 || len(host)-i-1 > 5 {
		return host, nil
	}
	for _, c := range host[i+1:] {
		if c < '0' || c > '9' {
			return host, nil
		}
	}
	if bytes.IndexByte(host[:i], ':') >= 0 && host[i-1] != ']' {
		return host, nil
	}
	return host[:i], host[i:]
}

func appendInt(b []byte, n int) []byte {
	var tmp [20]byte
	i := len(tmp)
	for {
		i--
		tmp[i] = byte('0' + n%10)
		n /= 10
		if n == 0 {
			break
		}
	}
	return append(b, tmp[i:]...)
}
