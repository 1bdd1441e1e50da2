package native

import (
	"reflect"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/proxy/filter"
	"github.com/wasmgate/wasmgate/proxy/ratelimit"
)

// RateLimit is the rate limit filter of one route: the virtual host's
// limit, then the route's. A request that a limit refuses is answered 429
// with Retry-After and the X-Ratelimit-* headers, and goes no further.
type RateLimit struct {
	headersOnly
	limits []*Limit
}

var _ filter.HeadersOnly = (*RateLimit)(nil)

// Limit is one configured rate limit and its buckets.
type Limit struct {
	cfg     config.RateLimit
	l       *ratelimit.Limiter
	limited prometheus.Counter
}

// Limits keeps the buckets of rate limits across reloads: a limit whose
// configuration did not change keeps its buckets. It is not safe for
// concurrent use; the proxy builds one snapshot at a time.
type Limits struct {
	m map[string]*Limit
}

// get returns the limit kept under key when its configuration is cfg, or
// a new one with fresh buckets.
func (ls *Limits) get(key string, cfg *config.RateLimit, limited prometheus.Counter) *Limit {
	if l, ok := ls.m[key]; ok && reflect.DeepEqual(l.cfg, *cfg) {
		return l
	}
	l := &Limit{cfg: *cfg, limited: limited, l: ratelimit.New(ratelimit.Config{
		MaxTokens: cfg.MaxTokens, TokensPerFill: cfg.TokensPerFill, FillInterval: cfg.FillInterval.D(), MaxKeys: cfg.MaxKeys,
	})}
	if ls.m == nil {
		ls.m = map[string]*Limit{}
	}
	ls.m[key] = l
	return l
}

// NewRateLimit returns the rate limit filter of a route, or nil when
// neither the route nor its virtual host sets a limit. limited returns
// the counter of refusals for a virtual host and route ("" for the
// virtual host's own limit).
func (ls *Limits) NewRateLimit(vc *config.VirtualHost, rc *config.Route, limited func(vhost, route string) prometheus.Counter) *RateLimit {
	if vc.RateLimit == nil && rc.RateLimit == nil {
		return nil
	}
	f := &RateLimit{}
	if vc.RateLimit != nil {
		f.limits = append(f.limits, ls.get(vc.Name, vc.RateLimit, limited(vc.Name, "")))
	}
	if rc.RateLimit != nil {
		f.limits = append(f.limits, ls.get(vc.Name+"\x00"+rc.Name, rc.RateLimit, limited(vc.Name, rc.Name)))
	}
	return f
}

func (f *RateLimit) Name() string { return config.NativeRateLimit }

// NewStream returns the filter itself: it keeps no state per request.
func (f *RateLimit) NewStream(*filter.Exchange) (filter.Stream, error) { return f, nil }

var rateLimitedBody = []byte("rate_limited\n")

func (f *RateLimit) OnRequestHeaders(x *filter.Exchange, _ bool) filter.Status {
	for _, rl := range f.limits {
		var d ratelimit.Decision
		switch rl.cfg.Key {
		case config.RateLimitKeyClientIP:
			ip := x.Conn.Remote.Addr().As16()
			d = rl.l.AllowKey(ip[:])
		case config.RateLimitKeyHeader:
			d = rl.l.AllowKey(x.Ctx.Request.Header.Peek(rl.cfg.Header))
		default:
			d = rl.l.Allow()
		}
		if !d.Allowed {
			rl.limited.Inc()
			refuse(x, d)
			return filter.Stop
		}
	}
	return filter.Continue
}

// refuse answers 429 with the rate limit headers.
func refuse(x *filter.Exchange, d ratelimit.Decision) {
	x.SendLocalResponse(fasthttp.StatusTooManyRequests, rateLimitedBody, nil, "rate_limited")
	// As Envoy's, a refusal is flagged RL alone.
	x.Flags = x.Flags&^filter.FlagLocalResponse | filter.FlagRateLimited
	h := &x.Ctx.Response.Header
	h.SetContentType("text/plain; charset=utf-8")
	var buf [20]byte
	h.SetBytesV("Retry-After", strconv.AppendInt(buf[:0], int64(ceilSeconds(d.RetryAfter)), 10))
	h.SetBytesV("X-Ratelimit-Limit", strconv.AppendInt(buf[:0], int64(d.Limit), 10))
	h.SetBytesV("X-Ratelimit-Remaining", strconv.AppendInt(buf[:0], int64(d.Remaining), 10))
	h.SetBytesV("X-Ratelimit-Reset", strconv.AppendInt(buf[:0], int64(ceilSeconds(d.Reset)), 10))
}

// ceilSeconds rounds up to whole seconds, at least 1.
func ceilSeconds(d time.Duration) int {
	return max(int((d+time.Second-1)/time.Second), 1)
}
