package proxy

import (
	"errors"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/wasmgate/wasmgate/proxy/cluster"
	"github.com/wasmgate/wasmgate/proxy/filter"
	"github.com/wasmgate/wasmgate/proxy/metrics"
	"github.com/wasmgate/wasmgate/proxy/route"
)

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
		return ep.Do(req, &x.up, rt.Timeout, &x.upBody)
	}
	deadline := time.Now().Add(rt.Timeout)
	methodOK := p.AllowsMethod(req.Header.Method())
	if methodOK && req.IsBodyStream() {
		if n := req.Header.ContentLength(); n >= 0 && n <= cluster.SmallBody {
			if body := req.Body(); len(body) != n {
				x.localError(fasthttp.StatusBadRequest, filter.FlagDownstreamProtocolError, "downstream_body_incomplete")
				return errAnswered
			}
		}
	}
	stats := c.Stats()
	for n := 0; ; n++ {
		try := time.Until(deadline)
		if p.PerTry > 0 && p.PerTry < try {
			try = p.PerTry
		}
		streamed := req.IsBodyStream()
		err := ep.Do(req, &x.up, try, &x.upBody)
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
