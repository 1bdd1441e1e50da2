package proxy

// The response stage: the upstream's answer, or the proxy's own, on its
// way downstream.

import (
	"errors"
	"io"
	"net"

	"github.com/valyala/fasthttp"
	"go.uber.org/zap"

	"github.com/wasmgate/wasmgate/proxy/cluster"
	"github.com/wasmgate/wasmgate/proxy/filter"
	"github.com/wasmgate/wasmgate/proxy/internal/h1"
)

// sendBody hands the upstream's body to the server: streamed as it comes,
// or through the response body filters.
func (x *exchange) sendBody() bool {
	resp := &x.Ctx.Response
	if !x.upBody.Active() {
		if body := x.up.Body(); len(body) > 0 {
			resp.SetBody(body)
		}
		return x.filterFixedBody(resp)
	}
	n := x.up.Header.ContentLength()
	if x.bodyFilters {
		x.body.f = x.responseFilterReader(&x.upBody)
		n = -1 // filters may change the length
	}
	if n < 0 {
		n = -1 // chunked, or read to close: chunk it downstream
	}
	x.body.start(&x.upBody)
	resp.SetBodyStream(&x.body, n)
	return true
}

func (x *exchange) upstreamError(err error) {
	if err == errAnswered {
		return
	}
	if x.Local() {
		// A filter answered from its request body callback while the
		// body streamed upstream: its reply wins, as in Envoy.
		return
	}
	kind := cluster.Classify(err)
	if kind == cluster.FailureDownstream {
		// The client's body failed: not the endpoint's doing, and what is
		// left of the body cannot be told from the next request.
		x.Ctx.SetConnectionClose()
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			x.localError(fasthttp.StatusRequestTimeout, filter.FlagDownstreamProtocolError, "downstream_body_timeout")
		} else {
			x.localError(fasthttp.StatusBadRequest, filter.FlagDownstreamProtocolError, "downstream_body_incomplete")
		}
		return
	}
	x.h.srv.metrics.UpstreamErrors.WithLabelValues(x.Cluster, kind.String()).Inc()
	switch kind {
	case cluster.FailureTimeout:
		x.localError(fasthttp.StatusGatewayTimeout, filter.FlagUpstreamTimeout, "upstream_timeout")
	case cluster.FailureConnect:
		x.localError(fasthttp.StatusBadGateway, filter.FlagUpstreamConnectFailure, "upstream_connect_failure")
	case cluster.FailureOverflow:
		x.localError(fasthttp.StatusServiceUnavailable, filter.FlagUpstreamOverflow, "upstream_overflow")
	default:
		x.localError(fasthttp.StatusBadGateway, filter.FlagUpstreamReset, "upstream_reset")
	}
	if ce := x.h.srv.log.Check(zap.DebugLevel, "upstream request failed"); ce != nil {
		ce.Write(zap.String("cluster", x.Cluster), zap.String("endpoint", x.UpstreamAddr), zap.Error(err))
	}
}

// localError answers with a short plain-text reason.
func (x *exchange) localError(status int, flag filter.Flags, details string) {
	resp := &x.Ctx.Response
	resp.Reset()
	resp.SetStatusCode(status)
	resp.Header.SetContentType("text/plain; charset=utf-8")
	resp.SetBodyString(details + "\n")
	x.Flags |= flag
	x.Details = details
	x.grpcLocalReply()
}

// answered finishes an exchange that a filter or the proxy answered
// itself. The answer still passes the response callbacks of the filters
// that saw the request, as Envoy encodes its local replies, so that they
// can add to it (HSTS, a trace id) and count it.
func (x *exchange) answered() {
	if x.Local() {
		x.grpcLocalReply()
	}
	if len(x.streams) > 0 && x.responseHeaderFilters() && x.bodyFilters {
		x.filterFixedBody(&x.Ctx.Response)
	}
	x.finish()
}

// serverName is the Server header of the proxy's responses when the
// upstream's response has none. The proxy sets it itself, not through
// fasthttp's Server.Name, which would set it again after the handler and
// undo a response_headers mutation that removes it.
var serverName = []byte("wasmgate")

// setServer gives the response the proxy's Server header unless the
// upstream's response had one. It runs before the response filters, so
// that they may change or remove it.
func (x *exchange) setServer() {
	x.serverSet = true
	if h := &x.Ctx.Response.Header; len(h.Server()) == 0 {
		h.SetServerBytes(serverName)
	}
}

// serveError answers requests the server could not parse.
func (h *handler) serveError(ctx *fasthttp.RequestCtx, err error) {
	var small *fasthttp.ErrSmallBuffer
	var ne net.Error
	switch fe := h1.ErrorOf(err); {
	case fe != nil:
		h.refused(ctx, fe)
	case errors.As(err, &small):
		ctx.Error("request header too large\n", fasthttp.StatusRequestHeaderFieldsTooLarge)
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		ctx.Error("request body too large\n", fasthttp.StatusRequestEntityTooLarge)
	case errors.As(err, &ne) && ne.Timeout():
		ctx.Error("request timeout\n", fasthttp.StatusRequestTimeout)
	default:
		ctx.Error("malformed request\n", fasthttp.StatusBadRequest)
	}
	ctx.Response.Header.SetServerBytes(serverName)
}

// refused answers a request that h1 refused for its framing (400, or 501
// for CONNECT and codings other than chunked), logged at debug level with
// the reason, and closes the connection.
func (h *handler) refused(ctx *fasthttp.RequestCtx, fe *h1.Error) {
	if ce := h.srv.log.Check(zap.DebugLevel, "request refused"); ce != nil {
		ce.Write(zap.String("listener", h.listener), zap.Stringer("remote", ctx.RemoteAddr()), zap.String("reason", fe.Reason))
	}
	if fe.Status == fasthttp.StatusNotImplemented {
		ctx.Error("not implemented\n", fe.Status)
	} else {
		ctx.Error("malformed request\n", fe.Status)
	}
	ctx.SetConnectionClose()
}

// responseBody streams the upstream's body downstream and finishes the
// exchange when the server closes it.
type responseBody struct {
	x      *exchange
	r      io.Reader
	f      *filterReader // non-nil when filters see the body
	n      int64
	active bool
}

func (b *responseBody) start(r io.Reader) {
	b.r, b.n, b.active = r, 0, true
}

func (b *responseBody) Read(p []byte) (int, error) {
	var n int
	var err error
	if b.f != nil {
		n, err = b.f.Read(p)
	} else {
		n, err = b.r.Read(p)
	}
	if err == io.EOF {
		b.x.copyTrailers()
	}
	b.n += int64(n)
	return n, err
}

// Close releases the upstream connection and finishes the exchange.
func (b *responseBody) Close() error {
	x := b.x
	if err := x.upBody.Close(); err != nil {
		x.Flags |= filter.FlagUpstreamReset
	}
	x.finish()
	return nil
}

// copyTrailers passes the upstream's trailers on once its body has ended.
func (x *exchange) copyTrailers() {
	resp := &x.Ctx.Response
	for k := range x.up.Header.Trailers() {
		if resp.Header.AddTrailerBytes(k) == nil {
			resp.Header.SetBytesKV(k, x.up.Header.PeekBytes(k))
		}
	}
}
