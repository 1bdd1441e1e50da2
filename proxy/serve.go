package proxy

// The request path starts here: serve takes a request from the listener
// and walks it through the stages, each in a file of its own:
// request.go (made fit to pass on), filters.go (the route's chain),
// forward.go (the upstream exchange, with retries), response.go (the
// answer, streamed or whole) and finish.go (metrics and access log).

import (
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/wasmgate/wasmgate/proxy/accesslog"
	"github.com/wasmgate/wasmgate/proxy/cluster"
	"github.com/wasmgate/wasmgate/proxy/filter"
	"github.com/wasmgate/wasmgate/proxy/internal/h1"
	"github.com/wasmgate/wasmgate/proxy/listener"
	"github.com/wasmgate/wasmgate/proxy/metrics"
	"github.com/wasmgate/wasmgate/proxy/route"
	"github.com/wasmgate/wasmgate/proxy/telemetry"
	"github.com/wasmgate/wasmgate/proxy/telemetry/tracing"
)

// handler serves the requests of one listener.
type handler struct {
	srv      *Server
	listener string
}

// exchange is the proxy's state for one request. It is pooled; nothing in
// it may be retained after release.
type exchange struct {
	filter.Exchange
	conn filter.ConnInfo

	h      *handler
	snap   *Snapshot
	route  *route.Route
	stats  *metrics.RouteStats
	status int

	// upReq is what goes upstream when request body filters stream: the
	// request's headers with the filters' output as its body.
	upReq     fasthttp.Request
	reqFilter *filterReader
	limit     limitedBody       // a chunked body under the listener's limit
	down      downstreamBody    // the body upReq streams from the client
	up        fasthttp.Response // the upstream's response
	upBody    cluster.Body      // its body, when it streams
	guard     cluster.Guard     // the cluster's admission of the request
	body      responseBody
	fixedBody filter.Body // a whole response body, as the filters see it
	streams   []filter.Stream
	// bodyFilters reports whether a stream sees bodies (one that is not
	// filter.HeadersOnly).
	bodyFilters bool
	// serverSet reports whether the response got its Server header
	// before the response filters.
	serverSet bool
	// grpcFrom is the HTTP status of a local reply given gRPC's shape
	// (grpcLocalReply), or 0.
	grpcFrom int
	entry    *accesslog.Entry
	span     tracing.Span // the request's server span
	scratch  []byte
	idBuf    [36]byte
}

var exchangePool = sync.Pool{New: func() any {
	x := &exchange{Exchange: *filter.NewExchange()}
	x.body.x = x
	return x
}}

func (h *handler) acquire(ctx *fasthttp.RequestCtx, snap *Snapshot) *exchange {
	x := exchangePool.Get().(*exchange)
	x.Exchange.Reset()
	x.Ctx = ctx
	x.Conn = &x.conn
	x.Start = ctx.Time()
	x.Listener = h.listener
	x.Protocol = "HTTP/1.1"
	x.Upstreams = snap.Clusters
	x.Node = snap.node
	x.h, x.snap = h, snap
	if h.srv.tel.Enabled(telemetry.KindDecision) {
		x.Decisions = x
	}
	x.conn = filter.ConnInfo{ID: ctx.ConnID(), Remote: addrPort(ctx.RemoteAddr()), Local: addrPort(ctx.LocalAddr())}
	x.adaptConn(ctx)
	return x
}

func (x *exchange) release() {
	for i := range x.streams {
		x.streams[i] = nil
	}
	x.streams = x.streams[:0]
	x.bodyFilters, x.serverSet, x.grpcFrom = false, false, 0
	x.snap.release()
	x.h, x.snap, x.route, x.stats, x.entry, x.status = nil, nil, nil, nil, nil, 0
	x.body.r, x.body.f, x.body.active = nil, nil, false
	if x.reqFilter != nil || x.limit.active || x.down.r != nil {
		x.reqFilter = nil
		x.limit = limitedBody{}
		x.down.r = nil
		x.upReq.Reset()
	}
	x.Ctx = nil
	x.guard.Release()
	x.up.Reset()
	exchangePool.Put(x)
}

func addrPort(a net.Addr) netip.AddrPort {
	if t, ok := a.(*net.TCPAddr); ok {
		return t.AddrPort()
	}
	if u, ok := a.(*net.UDPAddr); ok {
		return u.AddrPort()
	}
	return netip.AddrPort{}
}

// serve is the request path.
func (h *handler) serve(ctx *fasthttp.RequestCtx) {
	snap := h.srv.acquire()
	if snap == nil {
		// The server has shut down; a last request got through.
		ctx.Error("shutting down\n", fasthttp.StatusServiceUnavailable)
		ctx.SetConnectionClose()
		return
	}
	ls := snap.listeners[h.listener]
	x := h.acquire(ctx, snap)
	if h.srv.draining.Load() {
		defer ctx.SetConnectionClose()
	} else if ls != nil && ls.maxConnAge > 0 && time.Since(ctx.ConnTime()) >= ls.maxConnAge {
		// Close an old connection after this response, so that clients
		// spread again over proxies added since they connected.
		defer ctx.SetConnectionClose()
	}
	if ls == nil || ls.table == nil {
		// The listener is being removed, or now carries TCP; its last
		// requests get 503.
		defer ctx.SetConnectionClose()
		x.localError(fasthttp.StatusServiceUnavailable, filter.FlagNoRoute, "listener_removed")
		x.finish()
		return
	}
	req := &ctx.Request
	// A body that does not go upstream is left unread, and what follows
	// it on the connection cannot be told from a request: the connection
	// closes after the response.
	sent := false
	if cl := req.Header.ContentLength(); (cl > 0 || cl == -1) && x.Protocol == "HTTP/1.1" {
		defer func() {
			if !sent {
				ctx.SetConnectionClose()
			}
		}()
	}
	if !req.Header.IsHTTP11() {
		if status := checkProtocol(req.Header.Protocol()); status != 0 {
			x.localError(status, 0, "unsupported_protocol")
			ctx.SetConnectionClose()
			x.finish()
			return
		}
	}
	upgrade := isWebSocketUpgrade(req)
	x.prepareRequest(ls)
	x.span = snap.tracer.StartServer(req, x.Listener, x.Start)
	if x.span.Recording() {
		x.span.SetPeer(x.peerIdentity())
	}
	if snap.log != nil {
		x.entry = snap.log.Acquire()
		x.fillEntry()
	}
	// The server streams request bodies, so it does not enforce the
	// listener's body limit itself.
	if ls.maxBodySize > 0 && int64(req.Header.ContentLength()) > ls.maxBodySize {
		x.localError(fasthttp.StatusRequestEntityTooLarge, 0, "request_body_too_large")
		ctx.SetConnectionClose()
		x.finish()
		return
	}
	if ls.maxBodySize > 0 && req.Header.ContentLength() < 0 && req.IsBodyStream() {
		// A chunked body has no length to check up front: count it.
		x.limit = limitedBody{src: req.BodyStream(), left: ls.maxBodySize, active: true}
	}

	vh := ls.table.Find(req.Header.Host())
	if ls.byDestination && vh == ls.table.CatchAll() {
		vh = byDestination(ls.table, vh, x.conn.Local)
	}
	var rt *route.Route
	if vh != nil {
		if rt = vh.Match(req); rt == nil {
			rt = vh.NoRoute // the virtual host's filters may still reroute it
		}
	}
	if rt == nil {
		x.localError(fasthttp.StatusNotFound, filter.FlagNoRoute, "route_not_found")
		x.finish()
		return
	}
	x.route = rt
	x.VirtualHost, x.Route = vh.Name, rt.Name
	if !rt.Fallback {
		x.stats = rt.NoTarget()
	}

	if len(rt.Filters) > 0 {
		if !x.requestFilters(rt, ls) {
			x.answered()
			return
		}
		if x.routeCacheCleared() {
			// A filter cleared the route cache in a body callback.
			x.chooseRouteAgain(ls)
		}
		rt = x.route
	}

	switch rt.Action {
	case route.Respond:
		if rt.Fallback {
			// Still no route after the virtual host's filters.
			x.localError(fasthttp.StatusNotFound, filter.FlagNoRoute, "route_not_found")
			break
		}
		rt.Respond(&ctx.Response)
	case route.Redirect:
		x.scratch = rt.WriteRedirect(req, &ctx.Response, ctx.IsTLS(), x.scratch)
	case route.Forward:
		if rt.Fault != nil && x.injectFault(rt.Fault) {
			x.answered()
			return
		}
		if upgrade {
			x.websocket(rt)
			x.finish()
			return
		}
		if !x.forward(rt) {
			x.answered()
			return
		}
		sent = true
	}
	if len(x.streams) > 0 && !x.responseHeaderFilters() {
		x.finish()
		return
	}
	if rt.Action == route.Forward {
		if !x.sendBody() {
			x.finish()
			return
		}
	} else if x.bodyFilters && !x.filterFixedBody(&ctx.Response) {
		x.finish()
		return
	}
	if x.body.active {
		// The body streams after serve returns; finish runs when the
		// server closes the stream.
		x.status = ctx.Response.StatusCode()
		x.stats.Observe(x.status, time.Since(x.Start))
		return
	}
	listener.GatherResponse(ctx)
	x.finish()
}

// injectFault applies a route's fault injection to the request: it holds
// it back for the delay, and answers it with the abort's status instead of
// forwarding it, each for its share of requests, as Envoy's fault filter
// (response flags DI and FI). It reports whether the request was
// answered.
func (x *exchange) injectFault(f *route.Fault) bool {
	delay, abort := f.Roll()
	if delay {
		x.Flags |= filter.FlagDelayInjected
		t := time.NewTimer(f.Delay)
		select {
		case <-t.C:
		case <-x.Ctx.Done():
			t.Stop()
		}
	}
	if !abort {
		return false
	}
	x.localError(f.Status, filter.FlagFaultInjected, "fault_filter_abort")
	return true
}

// checkProtocol answers the status for a request whose protocol is not
// HTTP/1.1: 0 for HTTP/1.0 and the protocols of the HTTP/2 and HTTP/3
// front ends, 505 for a later HTTP version in an HTTP/1 request line, 400
// for anything else.
func checkProtocol(p []byte) int {
	switch string(p) {
	case "HTTP/1.0", "HTTP/2", "HTTP/3":
		return 0
	}
	if len(p) == 8 && string(p[:5]) == "HTTP/" && p[6] == '.' && p[5] >= '0' && p[5] <= '9' && p[7] >= '0' && p[7] <= '9' {
		if p[5] >= '2' {
			return fasthttp.StatusHTTPVersionNotSupported
		}
		if p[5] == '1' {
			return 0 // HTTP/1.x: served as HTTP/1.1 is (RFC 9112, section 2.3)
		}
	}
	return fasthttp.StatusBadRequest
}

// connIdentity is what a TLS connection (tlsconf.Conn, h3.Conn) tells the
// request path about itself; it is computed once per connection.
type connIdentity interface {
	TLSInfo() *filter.TLSInfo
}

// adaptConn completes what acquire knows of the request's connection: its
// TLS identity, and the protocol when an HTTP/2 or HTTP/3 front end made
// the request.
func (x *exchange) adaptConn(ctx *fasthttp.RequestCtx) {
	if x.Start.IsZero() {
		x.Start = time.Now() // HTTP/2 and HTTP/3 requests carry no server time
	}
	switch string(ctx.Request.Header.Protocol()) {
	case "HTTP/2":
		x.Protocol = "HTTP/2"
	case "HTTP/3":
		x.Protocol = "HTTP/3"
	}
	if ci, ok := h1.Unwrap(ctx.Conn()).(connIdentity); ok {
		x.conn.TLS = ci.TLSInfo()
	}
}
