package proxy

// The upstream stage: the exchange with the route's cluster, with its
// retries.

import (
	"bytes"
	"errors"
	"io"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/wasmgate/wasmgate/proxy/cluster"
	"github.com/wasmgate/wasmgate/proxy/filter"
	"github.com/wasmgate/wasmgate/proxy/internal/h1"
	"github.com/wasmgate/wasmgate/proxy/metrics"
	"github.com/wasmgate/wasmgate/proxy/route"
)

var http11 = []byte("HTTP/1.1")

// forward sends the request to the route's cluster and puts the upstream's
// response headers into the downstream response. It reports false when it
// answered with an error instead.
func (x *exchange) forward(rt *route.Route) bool {
	ctx := x.Ctx
	req := &ctx.Request
	t := rt.PickTarget()
	x.stats = t.Stats
	x.Cluster = t.Cluster.Name
	if err := t.Cluster.Admit(&x.guard); err != nil {
		x.upstreamError(err)
		return false
	}
	ep := t.Cluster.Pick(ctx)
	if ep == nil {
		x.localError(fasthttp.StatusServiceUnavailable, filter.FlagNoHealthyUpstream, "no_healthy_upstream")
		return false
	}
	x.UpstreamAddr = ep.Addr

	// OPTIONS * goes upstream as it came: fasthttp's URI would send /%2A.
	asterisk := string(req.Header.RequestURI()) == "*"
	x.scratch = rt.RewriteRequest(req, x.scratch)
	// The downstream connection's fate is not the upstream's: keep the
	// pooled connection open, and close the downstream one afterwards.
	closeDown := req.Header.ConnectionClose()
	if closeDown {
		req.Header.ResetConnectionClose()
	}
	if !req.Header.IsHTTP11() {
		req.Header.SetProtocol("HTTP/1.1")
	}
	setUpstreamScheme(ctx, ep)
	if asterisk {
		req.SetRequestURI("*")
	}
	if len(rt.Mirrors) > 0 && !x.mirror(rt) {
		return false
	}

	// A streamed body may be partly read when the exchange fails; what is
	// left of it cannot be told from the next request on the connection.
	streamed := req.IsBodyStream() || x.reqFilter != nil
	err := x.send(t.Cluster, ep, rt)
	if err != nil && x.limit.exceeded {
		x.localError(fasthttp.StatusRequestEntityTooLarge, 0, "request_body_too_large")
		ctx.SetConnectionClose() // the rest of the body is unread
		return false
	}
	if fe := h1.Refused(ctx.Conn()); err != nil && fe != nil {
		// The body broke its framing: the client's fault, not the
		// upstream's.
		x.localError(fe.Status, 0, "malformed_request")
		ctx.SetConnectionClose()
		return false
	}
	if err != nil {
		x.upstreamError(err)
		if closeDown || streamed {
			ctx.SetConnectionClose()
		}
		return false
	}
	resp := &ctx.Response
	x.up.Header.CopyTo(&resp.Header)
	// The downstream connection speaks its own protocol and keeps its own
	// fate, whatever the upstream's.
	resp.Header.SetProtocol(http11)
	resp.Header.ResetConnectionClose()
	if hasHopHeaders(&x.up.Header) {
		resp.Header.Del("Keep-Alive")
		resp.Header.Del("Proxy-Connection")
	}
	if closeDown {
		ctx.SetConnectionClose()
	}
	return true
}

// hasHopHeaders reports whether a response has Keep-Alive or
// Proxy-Connection, headers of the upstream connection only: one pass over
// the few headers a response has costs less than a Del for each name.
func hasHopHeaders(h *fasthttp.ResponseHeader) bool {
	for k := range h.All() {
		if len(k) > 0 && (k[0]|0x20 == 'k' || k[0]|0x20 == 'p') &&
			(bytes.EqualFold(k, []byte("Keep-Alive")) || bytes.EqualFold(k, []byte("Proxy-Connection"))) {
			return true
		}
	}
	return false
}

// outbound is the request to send upstream: the downstream request itself,
// or, when request body filters stream, a copy whose body is their output.
// The downstream request keeps its own body stream, which only it may
// release.
//
// A body that streams from the client is read through downstreamBody, so
// that its failures are told from the endpoint's (cluster.DownstreamError).
func (x *exchange) outbound() *fasthttp.Request {
	req := &x.Ctx.Request
	n := -1
	switch {
	case x.reqFilter != nil:
		x.down.r = x.reqFilter
	case x.limit.active:
		x.down.r = &x.limit
	case req.IsBodyStream():
		x.down.r = req.BodyStream()
		n = req.Header.ContentLength()
	default:
		return req
	}
	x.down.left = int64(n)
	req.CopyTo(&x.upReq)
	x.upReq.SetBodyStream(&x.down, n)
	return &x.upReq
}

// downstreamBody reads the client's request body for the upstream
// request, marking its errors as the client's: a failed read, or an end
// before the declared length.
type downstreamBody struct {
	r    io.Reader
	left int64 // bytes the client declared and has not sent; -1 unknown
}

func (b *downstreamBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if b.left >= 0 {
		b.left -= int64(n)
	}
	switch {
	case err == io.EOF && b.left > 0:
		err = &cluster.DownstreamError{Err: io.ErrUnexpectedEOF}
	case err != nil && err != io.EOF:
		err = &cluster.DownstreamError{Err: err}
	}
	return n, err
}

// setUpstreamScheme makes the request's scheme the endpoint's.
func setUpstreamScheme(ctx *fasthttp.RequestCtx, ep *cluster.Endpoint) {
	if ep.TLS() {
		ctx.Request.URI().SetScheme("https")
	} else if ctx.IsTLS() {
		ctx.Request.URI().SetScheme("http")
	}
}

// do makes one attempt of the upstream exchange with ep: a request that
// came in multiplexed (HTTP/2, HTTP/3) goes out over HTTP/2 when the
// cluster's protocol is downstream.
func (x *exchange) do(ep *cluster.Endpoint, req *fasthttp.Request, timeout time.Duration) error {
	if x.Protocol == "HTTP/2" || x.Protocol == "HTTP/3" {
		return ep.DoMultiplexed(req, &x.up, timeout, &x.upBody)
	}
	return ep.Do(req, &x.up, timeout, &x.upBody)
}

// errAnswered says the exchange has been answered already: nothing is
// left for upstreamError to do.
var errAnswered = errors.New("answered")

// send makes the upstream exchange of a request, with the route's retries
// when it has a policy. It leaves the last attempt's response in x.up (and
// x.upBody) and x.UpstreamAddr on the endpoint that gave it.
//
// Attempts share the route's timeout; each is bounded by per_try_timeout.
// A retry goes to another endpoint when there is one, after a jittered
// back-off, and only when the cluster's max_retries breaker or retry
// budget lets it. A request body of known length up to cluster.SmallBody
// is read whole first so that it can be sent again; a body that streamed
// upstream is not sent again (flag NRB), except after a connect failure,
// which sent nothing. When the retries run out the last outcome stands,
// with flag URX.
func (x *exchange) send(c *cluster.Cluster, ep *cluster.Endpoint, rt *route.Route) error {
	req := x.outbound()
	p := rt.Retry
	if p == nil {
		a := x.span.StartAttempt(req, 0, ep.Addr)
		err := x.do(ep, req, rt.Timeout)
		a.End(x.up.StatusCode(), err)
		return err
	}
	deadline := time.Now().Add(rt.Timeout)
	methodOK := p.AllowsMethod(req.Header.Method())
	if methodOK && !x.bufferSmallBody(req) {
		return errAnswered
	}
	stats := c.Stats()
	for n := 0; ; n++ {
		try := time.Until(deadline)
		if p.PerTry > 0 && p.PerTry < try {
			try = p.PerTry
		}
		streamed := req.IsBodyStream()
		a := x.span.StartAttempt(req, n, ep.Addr)
		err := x.do(ep, req, try)
		a.End(x.up.StatusCode(), err)
		x.UpstreamAddr = ep.Addr
		again := p.Retriable(x.up.StatusCode(), err)
		if n > 0 {
			c.ReleaseRetry()
			if again {
				stats.Retry(metrics.RetryFailure)
			} else {
				stats.Retry(metrics.RetrySuccess)
			}
		}
		if !again {
			return err
		}
		connectFailed := err != nil && cluster.Classify(err) == cluster.FailureConnect
		switch {
		case !methodOK && !connectFailed:
			return err
		case streamed && !connectFailed:
			x.Flags |= filter.FlagBodyNotRetried
			return err
		case n >= p.NumRetries:
			x.Flags |= filter.FlagUpstreamRetryLimit
			stats.Retry(metrics.RetryExhausted)
			return err
		}
		wait := p.Backoff(n + 1)
		if time.Until(deadline) <= wait {
			x.Flags |= filter.FlagUpstreamRetryLimit
			stats.Retry(metrics.RetryExhausted)
			return err
		}
		if c.AcquireRetry() != nil {
			return err // the breaker counted it
		}
		// The failed attempt's body, if it streams, is discarded with its
		// connection.
		_ = x.upBody.Close()
		if wait > 0 {
			time.Sleep(wait)
		}
		next := c.PickOther(x.Ctx, ep)
		if next == nil {
			c.ReleaseRetry()
			return err
		}
		ep = next
	}
}
