package proxy

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/valyala/fasthttp"
	"go.uber.org/zap"

	"github.com/wasmgate/wasmgate/proxy/accesslog"
	"github.com/wasmgate/wasmgate/proxy/cluster"
	"github.com/wasmgate/wasmgate/proxy/filter"
	"github.com/wasmgate/wasmgate/proxy/metrics"
	"github.com/wasmgate/wasmgate/proxy/route"
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
	up        fasthttp.Response // the upstream's response
	upBody    cluster.Stream    // its body, when it streams
	guard     cluster.Guard     // the cluster's admission of the request
	retry     *retryPolicy      // the route's, or nil
	body      responseBody
	streams   []filter.Stream
	entry     *accesslog.Entry
	scratch   []byte
	idBuf     [36]byte
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
	x.conn = filter.ConnInfo{ID: ctx.ConnID(), Remote: addrPort(ctx.RemoteAddr()), Local: addrPort(ctx.LocalAddr())}
	x.adaptConn(ctx)
	return x
}

func (x *exchange) release() {
	for i := range x.streams {
		x.streams[i] = nil
	}
	x.streams = x.streams[:0]
	x.h, x.snap, x.route, x.stats, x.entry, x.status = nil, nil, nil, nil, nil, 0
	x.body.r, x.body.f, x.body.active = nil, nil, false
	if x.reqFilter != nil || x.limit.active {
		x.reqFilter = nil
		x.limit = limitedBody{}
		x.upReq.Reset()
	}
	x.Ctx = nil
	x.guard.Release()
	x.retry = nil
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
	snap := h.srv.snap.Load()
	ls := snap.listeners[h.listener]
	x := h.acquire(ctx, snap)
	if h.srv.draining.Load() {
		defer ctx.SetConnectionClose()
	} else if ls != nil && ls.maxConnAge > 0 && time.Since(ctx.ConnTime()) >= ls.maxConnAge {
		// Close an old connection after this response, so that clients
		// spread again over proxies added since they connected.
		defer ctx.SetConnectionClose()
	}
	if ls == nil {
		// The listener is being removed; its last requests get 503.
		x.localError(fasthttp.StatusServiceUnavailable, filter.FlagNoRoute, "listener_removed")
		x.finish()
		return
	}
	req := &ctx.Request
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
	var rt *route.Route
	if vh != nil {
		rt = vh.Match(req)
	}
	if rt == nil {
		x.localError(fasthttp.StatusNotFound, filter.FlagNoRoute, "route_not_found")
		x.finish()
		return
	}
	x.route = rt
	x.VirtualHost, x.Route = vh.Name, rt.Name
	x.stats = rt.NoTarget()
	if ls.policies != nil && !x.applyPolicy(ls.policies[rt]) {
		x.finish()
		return
	}

	if len(rt.Filters) > 0 && !x.requestFilters(rt) {
		x.answered()
		return
	}
	if x.routeCacheCleared() {
		// A filter cleared the route cache or changed the request
		// headers: choose the route again, as Envoy does. The filters
		// that ran stay those of the first route.
		if vh2 := ls.table.Find(req.Header.Host()); vh2 != nil {
			if rt2 := vh2.Match(req); rt2 != nil && rt2 != rt {
				rt = rt2
				x.route = rt
				x.VirtualHost, x.Route = vh2.Name, rt.Name
				x.stats = rt.NoTarget()
			}
		}
	}

	switch rt.Action {
	case route.Respond:
		rt.Respond(&ctx.Response)
	case route.Redirect:
		x.scratch = rt.WriteRedirect(req, &ctx.Response, ctx.IsTLS(), x.scratch)
	case route.Forward:
		if upgrade {
			x.websocket(rt)
			x.finish()
			return
		}
		if !x.forward(rt) {
			x.answered()
			return
		}
	}
	rt.ResponseHeaders.ApplyResponse(&ctx.Response.Header)
	if len(x.streams) > 0 && !x.responseHeaderFilters() {
		x.finish()
		return
	}
	if rt.Action == route.Forward {
		if !x.sendBody() {
			x.finish()
			return
		}
	} else if len(x.streams) > 0 && !x.filterFixedBody(&ctx.Response) {
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
	gatherResponse(ctx)
	x.finish()
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

// prepareRequest sets the forwarding headers and the request id, as the
// first filter will see them.
func (x *exchange) prepareRequest(ls *listenerSnap) {
	req := &x.Ctx.Request
	h := &req.Header
	trusted := false
	remote := x.conn.Remote.Addr().Unmap()
	for _, p := range ls.trusted {
		if p.Contains(remote) {
			trusted = true
			break
		}
	}
	seen := scanRequest(h, ls.requestIDKey)
	if len(seen.conn) > 0 {
		dropConnectionTokens(h, seen.conn, &x.scratch)
		seen = scanRequest(h, ls.requestIDKey)
	}
	has := seen.has
	// Copied before the headers change under the value.
	x.RequestID = append(x.RequestID[:0], seen.id...)
	b := x.scratch[:0]
	if trusted {
		if has&hasXFF != 0 {
			b = append(b, seen.xff...)
			b = append(b, ", "...)
		}
	} else {
		// All of them: SetCanonical replaces only the first.
		del(h, has, hasXFF, "X-Forwarded-For")
		del(h, has, hasXFProto, "X-Forwarded-Proto")
		del(h, has, hasXFHost, "X-Forwarded-Host")
		del(h, has, hasXFPort, "X-Forwarded-Port")
		del(h, has, hasForwarded, "Forwarded")
	}
	// SetCanonical, with names already in fasthttp's canonical form,
	// spares each header the copy and normalisation of its name.
	b = remote.AppendTo(b)
	h.SetCanonical(keyXFF, b)
	x.scratch = b
	if !trusted || has&hasXFProto == 0 {
		if x.Ctx.IsTLS() {
			h.SetCanonical(keyXFProto, valHTTPS)
		} else {
			h.SetCanonical(keyXFProto, valHTTP)
		}
	}
	if !trusted || has&hasXFHost == 0 {
		h.SetCanonical(keyXFHost, h.Host())
	}
	if len(x.RequestID) == 0 {
		id := newRequestID(&x.idBuf)
		h.SetCanonical(ls.requestIDKey, id)
		x.RequestID = append(x.RequestID, id...)
	}

	// Hop-by-hop headers describe the downstream connection only.
	del(h, has, hasKeepAlive, "Keep-Alive")
	del(h, has, hasProxyConnection, "Proxy-Connection")
	del(h, has, hasTE, "TE")
	del(h, has, hasTrailer, "Trailer")
	del(h, has, hasUpgrade, "Upgrade")
	x.forwardClientCert(ls, has)
}

// Headers that forwarding rewrites or removes, as bits.
const (
	hasXFF = 1 << iota
	hasXFProto
	hasXFHost
	hasXFPort
	hasForwarded
	hasKeepAlive
	hasProxyConnection
	hasTE
	hasTrailer
	hasUpgrade
	hasXFCC
)

// Names of the headers forwarding sets, in fasthttp's canonical form.
var (
	keyXFF     = []byte("X-Forwarded-For")
	keyXFProto = []byte("X-Forwarded-Proto")
	keyXFHost  = []byte("X-Forwarded-Host")
	keyXFCC    = []byte("X-Forwarded-Client-Cert")
	valHTTP    = []byte("http")
	valHTTPS   = []byte("https")
)

// requestScan is what one pass over a request's headers finds: which of
// the headers that forwarding rewrites or removes it has (most have none,
// and a Del or Peek per name would scan every header each time), and the
// values forwarding reads. The values are the header's own: valid until
// the header changes.
type requestScan struct {
	has  uint16
	conn []byte // Connection
	xff  []byte // the first X-Forwarded-For
	id   []byte // the first request ID header
}

func scanRequest(h *fasthttp.RequestHeader, idKey []byte) requestScan {
	var s requestScan
	for k, v := range h.All() {
		if len(k) == len(idKey) && bytes.EqualFold(k, idKey) {
			if s.id == nil {
				s.id = v
			}
			continue
		}
		if len(k) < 2 {
			continue
		}
		switch k[0] | 0x20 {
		case 'c':
			if bytes.EqualFold(k, []byte("Connection")) {
				s.conn = v
			}
			continue
		case 'x', 'f', 'k', 'p', 't', 'u':
		default:
			continue
		}
		switch {
		case bytes.EqualFold(k, keyXFF):
			if s.has&hasXFF == 0 {
				s.xff = v
			}
			s.has |= hasXFF
		case bytes.EqualFold(k, keyXFProto):
			s.has |= hasXFProto
		case bytes.EqualFold(k, keyXFHost):
			s.has |= hasXFHost
		case bytes.EqualFold(k, []byte("X-Forwarded-Port")):
			s.has |= hasXFPort
		case bytes.EqualFold(k, []byte("Forwarded")):
			s.has |= hasForwarded
		case bytes.EqualFold(k, []byte("Keep-Alive")):
			s.has |= hasKeepAlive
		case bytes.EqualFold(k, []byte("Proxy-Connection")):
			s.has |= hasProxyConnection
		case bytes.EqualFold(k, []byte("TE")):
			s.has |= hasTE
		case bytes.EqualFold(k, []byte("Trailer")):
			s.has |= hasTrailer
		case bytes.EqualFold(k, []byte("Upgrade")):
			s.has |= hasUpgrade
		case bytes.EqualFold(k, keyXFCC):
			s.has |= hasXFCC
		}
	}
	return s
}

// del removes a header the request was found to have.
func del(h *fasthttp.RequestHeader, has, bit uint16, name string) {
	if has&bit != 0 {
		h.Del(name)
	}
}

// dropConnectionTokens removes the headers that conn, the Connection
// header's value, names, and the Connection header itself: they describe
// the downstream connection only. Whether the client asked to close is
// kept. scratch is a buffer the caller owns.
func dropConnectionTokens(h *fasthttp.RequestHeader, conn []byte, scratch *[]byte) {
	closeConn := h.ConnectionClose()
	toks := append((*scratch)[:0], conn...)
	*scratch = toks
	for len(toks) > 0 {
		var tok []byte
		if i := bytes.IndexByte(toks, ','); i >= 0 {
			tok, toks = toks[:i], toks[i+1:]
		} else {
			tok, toks = toks, nil
		}
		if tok = bytes.TrimSpace(tok); len(tok) > 0 {
			h.DelBytes(tok)
		}
	}
	h.Del("Connection")
	if closeConn {
		h.SetConnectionClose()
	}
}

// newRequestID writes a random UUID (version 4) into buf.
func newRequestID(buf *[36]byte) []byte {
	const hex = "0123456789abcdef"
	a, b := rand.Uint64(), rand.Uint64()
	var raw [16]byte
	for i := 0; i < 8; i++ {
		raw[i] = byte(a >> (8 * i))
		raw[8+i] = byte(b >> (8 * i))
	}
	raw[6] = raw[6]&0x0f | 0x40
	raw[8] = raw[8]&0x3f | 0x80
	j := 0
	for i, c := range raw {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			buf[j] = '-'
			j++
		}
		buf[j], buf[j+1] = hex[c>>4], hex[c&0xf]
		j += 2
	}
	return buf[:]
}

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

	rt.RequestHeaders.ApplyRequest(&req.Header)
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

	// A streamed body may be partly read when the exchange fails; what is
	// left of it cannot be told from the next request on the connection.
	streamed := req.IsBodyStream() || x.reqFilter != nil
	err := x.send(t.Cluster, ep, rt)
	if err != nil && x.limit.exceeded {
		x.localError(fasthttp.StatusRequestEntityTooLarge, 0, "request_body_too_large")
		ctx.SetConnectionClose() // the rest of the body is unread
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
func (x *exchange) outbound() *fasthttp.Request {
	var body io.Reader
	switch {
	case x.reqFilter != nil:
		body = x.reqFilter
	case x.limit.active:
		body = &x.limit
	default:
		return &x.Ctx.Request
	}
	x.Ctx.Request.CopyTo(&x.upReq)
	x.upReq.SetBodyStream(body, -1)
	return &x.upReq
}

// requestBody is the downstream request's body stream, counted against the
// listener's limit when it has no declared length.
func (x *exchange) requestBody() io.Reader {
	if x.limit.active {
		return &x.limit
	}
	return x.Ctx.Request.BodyStream()
}

// limitedBody reads a body and fails once it is longer than allowed.
type limitedBody struct {
	src      io.Reader
	left     int64
	active   bool
	exceeded bool
}

var errBodyLimit = errors.New("request body over the listener's limit")

func (l *limitedBody) Read(p []byte) (int, error) {
	if l.left < 0 {
		l.exceeded = true
		return 0, errBodyLimit
	}
	if int64(len(p)) > l.left+1 {
		p = p[:l.left+1] // one byte past the limit tells it is over
	}
	n, err := l.src.Read(p)
	l.left -= int64(n)
	if l.left < 0 {
		l.exceeded = true
		return 0, errBodyLimit
	}
	return n, err
}

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
	if len(x.streams) > 0 {
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
}

// answered finishes an exchange that a filter or the proxy answered
// itself. The answer still passes the response callbacks of the filters
// that saw the request, as Envoy encodes its local replies, so that they
// can add to it (HSTS, a trace id) and count it.
func (x *exchange) answered() {
	if len(x.streams) > 0 && x.responseHeaderFilters() {
		x.filterFixedBody(&x.Ctx.Response)
	}
	x.finish()
}

// finish records the request: metrics, access log, filter log and done
// callbacks. It runs once, when the response has been handed to the
// server (or, for a streamed body, when the body is done).
func (x *exchange) finish() {
	ctx := x.Ctx
	if x.status == 0 {
		x.status = ctx.Response.StatusCode()
		if x.stats != nil {
			x.stats.Observe(x.status, time.Since(x.Start))
		}
	}
	for i := len(x.streams) - 1; i >= 0; i-- {
		x.streams[i].OnLog(&x.Exchange)
	}
	for _, s := range x.streams {
		s.Done(&x.Exchange)
	}
	if e := x.entry; e != nil {
		e.Duration = time.Since(x.Start)
		e.Status = x.status
		e.Flags = x.Flags
		e.Details = x.Details
		e.Route, e.VirtualHost = x.Route, x.VirtualHost
		e.UpstreamClust, e.UpstreamHost = x.Cluster, x.UpstreamAddr
		if x.body.active {
			e.BytesSent = x.body.n
		} else {
			e.BytesSent = int64(len(ctx.Response.Body()))
		}
		x.fillDynamic(e, false)
		x.snap.log.Log(e)
	}
	x.release()
}

// fillEntry copies the request's fields into the access log entry before
// filters and rewrites change them.
func (x *exchange) fillEntry() {
	e, req := x.entry, &x.Ctx.Request
	e.Start = x.Start
	e.Listener = x.Listener
	e.Protocol = x.Protocol
	e.RequestID = append(e.RequestID, x.RequestID...)
	e.RemoteAddr = x.conn.Remote.AppendTo(e.RemoteAddr)
	e.Method = append(e.Method, req.Header.Method()...)
	e.Authority = append(e.Authority, req.Header.Host()...)
	e.Path = append(e.Path, req.RequestURI()...)
	e.UserAgent = append(e.UserAgent, req.Header.UserAgent()...)
	e.XForwardedFor = append(e.XForwardedFor, req.Header.Peek("X-Forwarded-For")...)
	if n := req.Header.ContentLength(); n > 0 {
		e.BytesReceived = int64(n)
	}
	x.fillDynamic(e, true)
}

var redacted = []byte("[redacted]")

// fillDynamic sets the access log's header and filter state fields: at
// the start the request headers, at the end the response headers and the
// filter state. At the end, header fields that a filter lists under a
// filter state key ending in ".redact" (comma-separated names) are
// replaced by "[redacted]".
func (x *exchange) fillDynamic(e *accesslog.Entry, start bool) {
	dyn := x.snap.log.Dynamic()
	for i, d := range dyn {
		var v []byte
		switch {
		case start && d.Source == accesslog.RequestHeader:
			v = x.Ctx.Request.Header.Peek(d.Name)
		case !start && d.Source == accesslog.ResponseHeader:
			v = x.Ctx.Response.Header.Peek(d.Name)
		case !start && d.Source == accesslog.FilterState:
			v = x.FilterState[d.Name]
		default:
			continue
		}
		if v != nil {
			e.SetDynamic(i, v)
		}
	}
	if start || len(x.FilterState) == 0 {
		return
	}
	for key, names := range x.FilterState {
		if !strings.HasSuffix(key, ".redact") {
			continue
		}
		for i, d := range dyn {
			if d.Source != accesslog.FilterState && listed(names, d.Name) {
				e.SetDynamic(i, redacted)
			}
		}
	}
}

// listed reports whether the comma-separated list holds name, ignoring
// case and spaces.
func listed(list []byte, name string) bool {
	for len(list) > 0 {
		item := list
		if i := bytes.IndexByte(list, ','); i >= 0 {
			item, list = list[:i], list[i+1:]
		} else {
			list = nil
		}
		if bytes.EqualFold(bytes.TrimSpace(item), []byte(name)) {
			return true
		}
	}
	return false
}

// serveError answers requests the server could not parse.
func (h *handler) serveError(ctx *fasthttp.RequestCtx, err error) {
	var small *fasthttp.ErrSmallBuffer
	var ne net.Error
	switch {
	case errors.As(err, &small):
		ctx.Error("request header too large\n", fasthttp.StatusRequestHeaderFieldsTooLarge)
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		ctx.Error("request body too large\n", fasthttp.StatusRequestEntityTooLarge)
	case errors.As(err, &ne) && ne.Timeout():
		ctx.Error("request timeout\n", fasthttp.StatusRequestTimeout)
	default:
		ctx.Error("malformed request\n", fasthttp.StatusBadRequest)
	}
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

// routeCacheCleared reports whether a filter asked for the route to be
// chosen again (a Wasm filter's proxy_clear_route_cache, or its change of
// the request headers).
func (x *exchange) routeCacheCleared() bool {
	for _, s := range x.streams {
		if c, ok := s.(interface{ RouteCacheCleared() bool }); ok && c.RouteCacheCleared() {
			return true
		}
	}
	return false
}
