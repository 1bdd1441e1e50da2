package proxy

import (
	"reflect"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/proxy/filter"
	"github.com/wasmgate/wasmgate/proxy/internal/deadline"
	"github.com/wasmgate/wasmgate/proxy/ratelimit"
	"github.com/wasmgate/wasmgate/proxy/route"
)

// routePolicy is what a route adds to the request path besides routing:
// its retry policy and its rate limits (the virtual host's, then its own).
type routePolicy struct {
	retry  *retryPolicy
	limits []*rateLimit
}

// rateLimit is one configured rate limit and its buckets.
type rateLimit struct {
	cfg     config.RateLimit
	l       *ratelimit.Limiter
	limited prometheus.Counter
}

// limiters keeps the buckets of rate limits across reloads: a limit whose
// configuration did not change keeps its buckets. Apply holds Server.mu.
type limiters map[string]*rateLimit

func (ls limiters) get(s *Server, key, vhost, routeName string, cfg *config.RateLimit) *rateLimit {
	if rl, ok := ls[key]; ok && reflect.DeepEqual(rl.cfg, *cfg) {
		return rl
	}
	rl := &rateLimit{cfg: *cfg, limited: s.metrics.RateLimited(vhost, routeName), l: ratelimit.New(ratelimit.Config{
		MaxTokens: cfg.MaxTokens, TokensPerFill: cfg.TokensPerFill, FillInterval: cfg.FillInterval.D(), MaxKeys: cfg.MaxKeys,
	})}
	ls[key] = rl
	return rl
}

// routePolicies resolves the retry policies and rate limits of the routes
// of one listener's table. It returns nil when no route has either, so
// that the request path skips the lookup.
func (s *Server) routePolicies(cfg *config.Config, table *route.Table) map[*route.Route]*routePolicy {
	if s.limiters == nil {
		s.limiters = limiters{}
	}
	var out map[*route.Route]*routePolicy
	for _, vh := range table.VirtualHosts {
		vc := findVirtualHost(cfg, vh.Name)
		if vc == nil {
			continue
		}
		for i, rt := range vh.Routes {
			if i >= len(vc.Routes) {
				break
			}
			rc := &vc.Routes[i]
			if rc.Retry == nil && vc.Retry == nil && rc.RateLimit == nil && vc.RateLimit == nil {
				continue // most routes: nothing to build
			}
			p := &routePolicy{retry: newRetryPolicy(rc.Retry)}
			if p.retry == nil {
				p.retry = newRetryPolicy(vc.Retry)
			}
			if vc.RateLimit != nil {
				p.limits = append(p.limits, s.limiters.get(s, vc.Name, vc.Name, "", vc.RateLimit))
			}
			if rc.RateLimit != nil {
				p.limits = append(p.limits, s.limiters.get(s, vc.Name+"\x00"+rc.Name, vc.Name, rc.Name, rc.RateLimit))
			}
			if p.retry == nil && p.limits == nil {
				continue
			}
			if out == nil {
				out = map[*route.Route]*routePolicy{}
			}
			out[rt] = p
		}
	}
	return out
}

func findVirtualHost(cfg *config.Config, name string) *config.VirtualHost {
	for i := range cfg.VirtualHosts {
		if cfg.VirtualHosts[i].Name == name {
			return &cfg.VirtualHosts[i]
		}
	}
	return nil
}

// applyPolicy takes the route's retry policy and checks its rate limits.
// It reports false when a limit answered the request with 429.
func (x *exchange) applyPolicy(p *routePolicy) bool {
	if p == nil {
		return true
	}
	x.retry = p.retry
	for _, rl := range p.limits {
		var d ratelimit.Decision
		switch rl.cfg.Key {
		case config.RateLimitKeyClientIP:
			ip := x.conn.Remote.Addr().As16()
			d = rl.l.AllowKey(ip[:])
		case config.RateLimitKeyHeader:
			d = rl.l.AllowKey(x.Ctx.Request.Header.Peek(rl.cfg.Header))
		default:
			d = rl.l.Allow()
		}
		if !d.Allowed {
			rl.limited.Inc()
			x.rateLimited(d)
			return false
		}
	}
	return true
}

// rateLimited answers 429 with the rate limit headers.
func (x *exchange) rateLimited(d ratelimit.Decision) {
	x.localError(fasthttp.StatusTooManyRequests, filter.FlagRateLimited, "rate_limited")
	h := &x.Ctx.Response.Header
	b := x.scratch[:0]
	b = strconv.AppendInt(b, int64(ceilSeconds(d.RetryAfter)), 10)
	h.SetBytesV("Retry-After", b)
	b = strconv.AppendInt(b[:0], int64(d.Limit), 10)
	h.SetBytesV("X-Ratelimit-Limit", b)
	b = strconv.AppendInt(b[:0], int64(d.Remaining), 10)
	h.SetBytesV("X-Ratelimit-Remaining", b)
	b = strconv.AppendInt(b[:0], int64(ceilSeconds(d.Reset)), 10)
	h.SetBytesV("X-Ratelimit-Reset", b)
	x.scratch = b
}

// ceilSeconds rounds up to whole seconds, at least 1.
func ceilSeconds(d time.Duration) int {
	s := int((d + time.Second - 1) / time.Second)
	if s < 1 {
		s = 1
	}
	return s
}

// DefaultHeaderReadTimeout bounds reading a request's line and headers
// when the listener sets no header_read_timeout, as nginx's
// client_header_timeout does: a slowloris client is cut off by default. It
// also bounds the TLS handshake.
const DefaultHeaderReadTimeout = 60 * time.Second

// DefaultBodyReadTimeout bounds reading a request's body, from the end of
// its header, when the listener sets no body_read_timeout: a client that
// trickles a body is cut off (408) as one that trickles a header is. It
// bounds the bytes fasthttp reads before the handler runs (up to 8 KiB of
// a body with a Content-Length) as well as the rest.
const DefaultBodyReadTimeout = 60 * time.Second

// headerReceived sets the deadline of a request's body once its headers
// are in: body_read_timeout, or DefaultBodyReadTimeout (the header read
// timeout would otherwise go on bounding the body). A request without a
// body leaves the header's deadline in force: nothing more is read until
// the next request's idle wait sets its own, and a hijacked connection
// (WebSocket) sets its own before each read.
func headerReceived(c config.Listener) func(*fasthttp.RequestHeader) fasthttp.RequestConfig {
	body := c.BodyReadTimeout.Or(DefaultBodyReadTimeout)
	return func(h *fasthttp.RequestHeader) fasthttp.RequestConfig {
		// -2: neither Content-Length nor chunked, which fasthttp reads
		// as no body on a request.
		if cl := h.ContentLength(); cl == 0 || cl == -2 {
			return fasthttp.RequestConfig{}
		}
		return fasthttp.RequestConfig{ReadTimeout: body}
	}
}

// readSlack is how late a listener's read deadlines (idle, header, body)
// may pass: deadline.SlackFor the shortest of them.
func readSlack(c config.Listener) time.Duration {
	shortest := c.IdleTimeout.Or(60 * time.Second)
	shortest = min(shortest, c.HeaderReadTimeout.Or(DefaultHeaderReadTimeout))
	shortest = min(shortest, c.BodyReadTimeout.Or(DefaultBodyReadTimeout))
	return deadline.SlackFor(shortest)
}
