package proxy

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/proxy/cluster"
	"github.com/wasmgate/wasmgate/proxy/filter"
	"github.com/wasmgate/wasmgate/proxy/metrics"
	"github.com/wasmgate/wasmgate/proxy/route"
)

// retryPolicy is a route's retry policy, resolved from config.
type retryPolicy struct {
	on         retryOn
	statuses   []int
	methods    [][]byte
	numRetries int
	perTry     time.Duration
	base, max  time.Duration
}

type retryOn uint8

const (
	retry5xx retryOn = 1 << iota
	retryGateway
	retryReset
	retryConnect
	retryStatus
)

var retryOnNames = map[string]retryOn{
	config.RetryOn5xx: retry5xx, config.RetryOnGatewayError: retryGateway, config.RetryOnReset: retryReset,
	config.RetryOnConnectFailure: retryConnect, config.RetryOnRetriableStatusCodes: retryStatus,
}

func newRetryPolicy(c *config.RetryPolicy) *retryPolicy {
	if c == nil {
		return nil
	}
	p := &retryPolicy{
		statuses: c.RetriableStatusCodes, numRetries: c.NumRetries, perTry: c.PerTryTimeout.D(),
		base: c.BackOff.BaseInterval.D(), max: c.BackOff.MaxInterval.D(),
	}
	for _, on := range c.RetryOn {
		p.on |= retryOnNames[on]
	}
	for _, m := range c.RetriableMethods {
		p.methods = append(p.methods, []byte(m))
	}
	return p
}

// retriable reports whether an attempt that ended with status or err is
// sent again under the policy. A 5xx policy takes every failure to get an
// answer, as Envoy's does; gateway-error takes those and 502, 503, 504.
func (p *retryPolicy) retriable(status int, err error) bool {
	if err != nil {
		switch cluster.Classify(err) {
		case cluster.FailureConnect:
			return p.on&(retryConnect|retry5xx|retryGateway) != 0
		case cluster.FailureReset, cluster.FailureTimeout:
			return p.on&(retryReset|retry5xx|retryGateway) != 0
		}
		return false // an overflow: the proxy refused it
	}
	switch {
	case status >= 500 && p.on&retry5xx != 0:
		return true
	case (status == 502 || status == 503 || status == 504) && p.on&retryGateway != 0:
		return true
	case p.on&retryStatus != 0:
		for _, s := range p.statuses {
			if s == status {
				return true
			}
		}
	}
	return false
}

func (p *retryPolicy) allowsMethod(m []byte) bool {
	for _, allowed := range p.methods {
		if bytes.Equal(m, allowed) {
			return true
		}
	}
	return false
}

// backoff is the wait before retry n (from 1): a random time up to
// min(base × 2^(n-1), max), Envoy's fully jittered exponential back-off.
func (p *retryPolicy) backoff(n int) time.Duration {
	d := p.base << min(n-1, 30)
	if d > p.max || d <= 0 {
		d = p.max
	}
	return rand.N(d + 1)
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
	p := x.retry
	if p == nil {
		a := x.span.StartAttempt(req, 0, ep.Addr)
		err := ep.Do(req, &x.up, rt.Timeout, &x.upBody)
		a.End(x.up.StatusCode(), err)
		return err
	}
	deadline := time.Now().Add(rt.Timeout)
	methodOK := p.allowsMethod(req.Header.Method())
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
		if p.perTry > 0 && p.perTry < try {
			try = p.perTry
		}
		streamed := req.IsBodyStream()
		a := x.span.StartAttempt(req, n, ep.Addr)
		err := ep.Do(req, &x.up, try, &x.upBody)
		a.End(x.up.StatusCode(), err)
		x.UpstreamAddr = ep.Addr
		again := p.retriable(x.up.StatusCode(), err)
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
		case n >= p.numRetries:
			x.Flags |= filter.FlagUpstreamRetryLimit
			stats.Retry(metrics.RetryExhausted)
			return err
		}
		wait := p.backoff(n + 1)
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
